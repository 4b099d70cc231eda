"""``kerasave diff``: the variables of two artifacts compared, bit for bit."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np
from rich.text import Text

from kerasave.cli._artifacts import Arrays, DoesNotFit, NeedsArchitecture, read_pair
from kerasave.cli._compare import Comparison, Entry, compare
from kerasave.cli._ui import (
    NO,
    OK,
    console,
    number,
    one_line,
    print_table,
    shape,
    shown,
    status,
    table,
)

__all__ = ["diff_command", "compare_arrays", "STATUS"]

STATUS = {"same": "same", "changed": "changed", "shape": "shape", "dtype": "dtype",
          "missing": "only in A", "extra": "only in B"}


def compare_arrays(left: Arrays, right: Arrays) -> Comparison:
    """Every model variable of two artifacts; optimizer variables when both hold them."""
    return compare(left.model, left.optimizer, right.model, right.optimizer,
                   (*left.notes, *right.notes))


def _layout(entry: Entry) -> str:
    """``(64, 10) float32``, or ``A -> B`` when the sides differ in shape or dtype."""
    a = None if entry.a_shape is None else f"{shape(entry.a_shape)} {entry.a_dtype}"
    b = None if entry.b_shape is None else f"{shape(entry.b_shape)} {entry.b_dtype}"
    if a is None or b is None or a == b:
        return a or b or "-"
    return f"{a} -> {b}"


def _json_number(value: float | None) -> float | str | None:
    """A difference as JSON holds it: infinities and NaN (no JSON numbers) as strings."""
    if value is None or np.isfinite(value):
        return value
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _diff_data(left: Arrays, right: Arrays, result: Comparison) -> dict[str, Any]:
    """What ``diff --json`` prints."""
    def side(arrays: Arrays) -> dict[str, Any]:
        return {"path": str(arrays.path), "format": arrays.format, "kind": arrays.kind,
                "naming": arrays.naming, "names": arrays.names,
                "optimizer_state": arrays.optimizer is not None}

    def entry(e: Entry) -> dict[str, Any]:
        return {"name": e.name, "status": e.status,
                "a": None if e.a_shape is None else {"shape": list(e.a_shape),
                                                     "dtype": e.a_dtype},
                "b": None if e.b_shape is None else {"shape": list(e.b_shape),
                                                     "dtype": e.b_dtype},
                "max_abs": _json_number(e.max_abs), "max_rel": _json_number(e.max_rel)}

    counts = {s: result.count(s) for s in STATUS}
    return {"identical": result.identical, "fits": True, "a": side(left), "b": side(right),
            "counts": counts, "entries": [entry(e) for e in result.entries],
            "notes": list(result.notes)}


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--config", metavar="CONFIG",
              help="An architecture (.json/.yaml config, .keras or .h5 model) to read "
                   "weights-only artifacts into, so their names line up.")
@click.option("--all", "show_all", is_flag=True, help="List identical variables too.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: both sides, every variable (identical ones too), notes.")
def diff_command(a: str, b: str, config: str | None, show_all: bool, as_json: bool) -> int:
    """Compare the variables of two artifacts, of any formats that hold weights.

    A deployment export (ONNX, LiteRT) is compared by what it computes: both
    sides' outputs on the same probe batches, with a note of the export
    tolerance. Exit 0 when every variable (or output) is identical bit for bit,
    1 when anything differs, 2 on an error.
    """
    out = console()
    try:
        with status(f"reading {a} and {b}"):
            left, right = read_pair(a, b, config=config)
    except DoesNotFit as exc:
        if as_json:
            click.echo(json.dumps({"identical": False, "fits": False,
                                   "reason": one_line(str(exc))}, indent=2))
        else:
            out.print(Text(f"different: {one_line(str(exc))}"))
        return NO
    except NeedsArchitecture as exc:
        raise NeedsArchitecture(
            f"{exc}; pass --config MODEL.json (or a .keras file) to read both into one "
            "architecture") from exc
    result = compare_arrays(left, right)
    if as_json:
        click.echo(json.dumps(_diff_data(left, right, result), indent=2, allow_nan=False))
        return OK if result.identical else NO
    out.print(Text(shown(f"A  {left.path}  ({left.format}, {left.names})")))
    out.print(Text(shown(f"B  {right.path}  ({right.format}, {right.names})")))
    listed = [e for e in result.entries if show_all or e.status != "same"]
    if listed:
        rows = table("variable", "status", "shape and dtype", "max abs diff", "max rel diff",
                     right=("max abs diff", "max rel diff"), names=[e.name for e in listed])
        for e in listed:
            rows.add_row(Text(shown(e.name)), STATUS[e.status], _layout(e), number(e.max_abs),
                         number(e.max_rel))
        out.print()
        print_table(out, rows)
        out.print()
    for note in result.notes:
        out.print(Text(shown(f"note: {note}")))
    n = len(result.entries)
    n_opt = sum(e.optimizer for e in result.entries)
    if result.identical and left.naming == "outputs":
        out.print(Text(f"identical: {n} outputs bit-exact"))
        return OK
    if result.identical:
        out.print(Text(f"identical: {n} variables bit-exact ({n - n_opt} model, "
                       f"{n_opt} optimizer)"))
        return OK
    parts = [f"{result.count(s)} {word}" for s, word in (
        ("changed", "changed"), ("shape", "with another shape"), ("dtype", "with another dtype"),
        ("missing", "only in A"), ("extra", "only in B")) if result.count(s)]
    out.print(Text(f"different: {', '.join(parts)}; {result.count('same')} of {n} identical"))
    return NO
