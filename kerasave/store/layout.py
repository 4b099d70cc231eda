"""What the store needs to know of an artifact: its files, never what is in them.

Every format handler (``kerasave.formats``) is a ``Layout``; the store takes one
wherever it names, moves or checks an artifact's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["Layout"]


class Layout(Protocol):
    # (read-only members: a handler holds them as class variables)
    @property
    def name(self) -> str:
        """The format's name, recorded in the manifest."""
        ...

    @property
    def temp_suffix(self) -> str:
        """A temporary artifact's name must end in this for the format's writer to
        accept it."""
        ...

    @property
    def manifest_inside(self) -> bool:
        """Whether the integrity manifest lives inside the artifact (a directory) or
        beside it."""
        ...

    def members(self, path: Path) -> list[Path]:
        """The files (or directory) that make up the artifact at ``path``, if any;
        the manifest beside a file first (renamed into place before it)."""
        ...

    def exists(self, path: Path) -> bool:
        """Whether a complete artifact of this format is at ``path``."""
        ...

    def member_tail(self, path: Path, member: Path) -> str:
        """What names the file ``member`` of the artifact at ``path`` in its manifest:
        the same for the artifact, its temporary and its backup (``"."``: the file
        at ``path`` itself). Mostly what follows the artifact's name in the member's."""
        ...

    def member_at(self, path: Path, tail: str) -> Path:
        """The file ``member_tail`` names, in the artifact at ``path``."""
        ...
