"""Where artifacts are kept: the transaction every writer goes through
(``transaction``), the local disk's steps (``local``), integrity manifests
(``manifest``), CRC32C (``crc``), and all the store knows of a format (``layout``)."""
