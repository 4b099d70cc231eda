"""What every command prints with: exit codes, the console, tables, notes."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["OK", "NO", "ERROR", "No", "State", "console", "status", "one_line", "shown", "note",
           "table",
           "print_table", "shape", "number", "size_of"]

OK, NO, ERROR = 0, 1, 2


@dataclasses.dataclass
class State:
    debug: bool = False


class No(Exception):
    """A negative answer (exit 1) with a one-line reason for stderr."""


def tty() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    """Rich output on stdout: colours on a terminal, plain and unwrapped otherwise."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True,
                   width=None if tty() else 10_000)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr while a long step runs, on a terminal only."""
    global _spinner
    if tty() and sys.stderr.isatty():
        with Console(stderr=True).status(message) as spinner:
            _spinner = spinner
            try:
                yield
            finally:
                _spinner = None
    else:
        yield


_spinner: Any = None  # the spinner running, which a transfer's bar replaces meanwhile


@contextlib.contextmanager
def transfer_bar(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for an object-store transfer (``kerasave.store.objectstore``)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    spinner = _spinner
    if spinner is not None:
        spinner.stop()
    try:
        with Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.advance(task, n)
    finally:
        if spinner is not None:
            spinner.start()


def shown(text: object) -> str:
    """``text`` safe for a terminal: control and format characters a file put in a
    name (an escape sequence that retitles the window or writes the clipboard, a
    bidirectional override that reorders what is read) shown as ``\\x1b``, ``\\u202e``."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf")
                   else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in str(text))


def one_line(text: str) -> str:
    return shown(" ".join(str(text).split()))


def note(message: str) -> None:
    click.echo(f"kerasave: note: {one_line(message)}", err=True)


def table(*columns: str, right: Sequence[str] = (), names: Sequence[str] = ()) -> Table:
    """A plain table; on a narrow terminal the first column (``names``) folds last."""
    found = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
    for i, name in enumerate(columns):
        found.add_column(name, justify="right" if name in right else "left",
                         overflow="fold" if i == 0 else "ellipsis", no_wrap=i != 0,
                         min_width=min(40, max(map(len, names), default=0)) if i == 0 else None)
    return found


def print_table(out: Console, shown: Table) -> None:
    """A table; off a terminal, without the padding rich leaves at the ends of lines."""
    if tty():
        out.print(shown)
        return
    with out.capture() as captured:
        out.print(shown)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def shape(dims: Sequence[int] | None) -> str:
    return "-" if dims is None else str(tuple(dims))


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def size_of(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size if p.exists() else 0

