"""Where artifacts are kept: one ``Store`` protocol, chosen once per path (``at``).

``at(path)`` is the only place a local path and a URL are told apart:
``LocalStore`` (``localstore``: the transaction of ``transaction``, the disk
steps of ``local``) or ``ObjectStore`` (``objectstore``: one PUT per object, the
manifest last, through ``backends``). Beside them: integrity manifests
(``manifest``), CRC32C (``crc``), all the store knows of a format (``layout``),
paths and staging copies (``paths``), and the object-store layout of older
versions (``legacy``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kerasave.store.paths import is_url, local_path

if TYPE_CHECKING:
    from kerasave.store.base import Store

__all__ = ["at", "is_url"]


def at(path: str | os.PathLike[str] | Any) -> Store:
    """The store of ``path``: an ``ObjectStore`` for an fsspec URL, a ``LocalStore``
    for a local path or a ``file://`` URL."""
    if is_url(path):
        from kerasave.store.objectstore import ObjectStore

        return ObjectStore(os.fspath(path).rstrip("/"))
    from kerasave.store.localstore import LocalStore

    return LocalStore(local_path(path))
