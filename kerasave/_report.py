"""Results: ``Check``, ``Report``, ``Variable`` and ``Inspection``.

All are frozen dataclasses that read well in a terminal (``str``) and in a
notebook (``_repr_html_``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kerasave._runtime.public import public

__all__ = ["Check", "Report", "Variable", "Inspection"]


@dataclass(frozen=True)
class Check:
    """One comparison made while verifying an artifact."""

    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.name}" + (f": {self.detail}" if self.detail else "")


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Report:
    """What a save, load or verify did, and every check it ran.

    ``ok`` is true when every check passed. ``bytes`` is the artifact's size on
    disk and ``seconds`` the wall time of the whole operation.
    """

    path: str
    format: str
    ok: bool
    checks: tuple[Check, ...]
    bytes: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that did not pass."""
        return tuple(c for c in self.checks if not c.ok)

    def __str__(self) -> str:
        status = "verified" if self.ok else "FAILED"
        n_ok = sum(c.ok for c in self.checks)
        lines = [
            f"{self.format} {status}: {self.path}",
            f"  {self.bytes:,} bytes, {self.seconds:.3f} s, "
            f"{n_ok}/{len(self.checks)} checks passed",
        ]
        lines += [f"  {c}" for c in self.checks]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        status = "verified" if self.ok else "FAILED"
        caption = (
            f"<p><b>{html.escape(self.format)}</b> {status}: <code>{html.escape(self.path)}</code>"
            f" &mdash; {self.bytes:,} bytes, {self.seconds:.3f} s</p>"
        )
        rows = [("✔" if c.ok else "✘", c.name, c.detail) for c in self.checks]
        return caption + _table(rows, ("", "check", "detail"))


@dataclass(frozen=True)
class Variable:
    """A saved variable: its name in the artifact, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Inspection:
    """What an artifact holds, read without building a model."""

    path: str
    format: str
    files: tuple[str, ...]
    bytes: int
    variables: tuple[Variable, ...]
    has_optimizer: bool
    versions: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        vers = ", ".join(f"{k} {v}" for k, v in self.versions.items()) or "unknown"
        lines = [
            f"{self.format}: {self.path}",
            f"  {len(self.files)} file(s), {self.bytes:,} bytes; written by {vers}",
            f"  optimizer state: {'yes' if self.has_optimizer else 'no'}",
            f"  {len(self.variables)} variable(s):",
        ]
        lines += [f"    {v.name}  {v.shape}  {v.dtype}" for v in self.variables]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        vers = ", ".join(f"{k} {v}" for k, v in self.versions.items()) or "unknown"
        caption = (
            f"<p><b>{html.escape(self.format)}</b>: <code>{html.escape(self.path)}</code>"
            f" &mdash; {len(self.files)} file(s), {self.bytes:,} bytes, written by "
            f"{html.escape(vers)}, optimizer state: {'yes' if self.has_optimizer else 'no'}</p>"
        )
        rows = [(v.name, str(v.shape), v.dtype) for v in self.variables]
        return caption + _table(rows, ("variable", "shape", "dtype"))


public(Check, Inspection, Report, Variable)
