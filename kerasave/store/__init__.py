"""Where artifacts are kept: the transaction every writer goes through
(``transaction``), the local disk's steps (``local``), integrity manifests
(``manifest``) and CRC32C (``crc``)."""
