"""``kerasave inspect``: what an artifact holds, read without building a model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.text import Text

from kerasave._facade import _reading
from kerasave.cli._artifacts import Opened, open_artifact
from kerasave.cli._ui import OK, console, print_table, shape, shown, size_of, status, table
from kerasave.formats._export import ExportFormat, Port

__all__ = ["inspect_command"]


def _dims(shape: list[int | None] | None) -> str:
    """``(?, 32)``: a dynamic dimension as ?."""
    if shape is None:
        return "(unknown rank)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


def _inspection(path: str) -> tuple[dict[str, Any], str]:
    """What ``inspect --json`` prints (``kerasave.inspect`` plus kind, sizes and
    manifest), and what the artifact is in words."""
    with status(f"reading {path}"):
        opened = open_artifact(path)  # (a manifest that does not match raises)
    try:
        return _facts(opened)
    finally:
        opened.close()  # (a URL's local copy)


def _facts(opened: Opened) -> tuple[dict[str, Any], str]:
    found = opened.inspection()
    data = dataclasses.asdict(found)
    data["variables"] = [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
                         for v in found.variables]
    data["files"] = list(found.files)
    data["versions"] = dict(found.versions)
    data["kind"] = opened.handler.kind
    data["file_bytes"] = {opened.named(m): size_of(str(m))
                          for m in opened.handler.members(opened.actual)}
    if isinstance(opened.handler, ExportFormat):  # what it takes and gives
        with _reading(opened.source):
            inputs, outputs = opened.handler.inspect_ports(opened.actual)
        data["inputs"] = [_port(p) for p in inputs]
        data["outputs"] = [_port(p) for p in outputs]
    data["manifest"] = {"present": opened.manifest is not None,
                        "manifest": None if opened.manifest is None else
                        opened.named(opened.manifest),
                        "ok": True, "detail": opened.detail}
    return data, opened.handler.description_at(opened.actual)


def _port(port: Port) -> dict[str, Any]:
    return {"name": port.name, "dtype": port.dtype,
            "shape": None if port.shape is None else list(port.shape)}


@click.command("inspect")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (the fields of kerasave.inspect, plus kind, file_bytes, "
                   "manifest).")
def inspect_command(path: str, as_json: bool) -> int:
    """What the artifact at PATH holds: files, variables, optimizer, versions, manifest."""
    data, description = _inspection(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return OK
    out = console()
    manifest = data["manifest"]
    if not manifest["present"]:
        integrity = "none (not written by kerasave): " + manifest["detail"]
    else:
        integrity = f"{Path(manifest['manifest']).name}: {manifest['detail']}"
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items()) or "unknown"
    facts = [
        ("format", f"{data['format']} ({description})"),
        ("size", f"{data['bytes']:,} bytes in {len(data['files'])} file(s)"),
        ("written by", versions),
        ("optimizer", "yes" if data["has_optimizer"] else "no"),
        ("manifest", integrity),
    ]
    for key in ("inputs", "outputs"):
        if key in data:
            facts.append((key, ", ".join(f"{p['name']} {p['dtype']} {_dims(p['shape'])}"
                                         for p in data[key]) or "none"))
    out.print(Text(shown(data["path"]), style="bold"))
    for key, value in facts:
        out.print(Text(shown(f"  {key:<11}{value}")))
    files = table("file", "bytes", right=("bytes",), names=list(data["file_bytes"]))
    for name, size in data["file_bytes"].items():
        files.add_row(Text(shown(name)), f"{size:,}")
    out.print()
    print_table(out, files)
    if data["variables"]:
        variables = table("variable", "shape", "dtype",
                          names=[v["name"] for v in data["variables"]])
        for v in data["variables"]:
            variables.add_row(Text(shown(v["name"])), shape(v["shape"]), v["dtype"])
        out.print()
        print_table(out, variables)
    values = sum(int(np.prod(v["shape"], dtype=np.int64)) for v in data["variables"])
    out.print(Text(f"{len(data['variables'])} variable(s), {values:,} values"))
    return OK
