"""``kerasave inspect``: what an artifact holds, read without building a model
(``kerasave.open``: its format, variables and metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.text import Text

import kerasave as ks
from kerasave._api import open_once
from kerasave.cli._ui import OK, console, print_table, shape, shown, status, table

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
    with status(f"reading {path}"), open_once(path) as artifact:  # (a bad manifest raises)
        return _facts(artifact), artifact.metadata["description"]


def _facts(artifact: ks.Artifact) -> dict[str, Any]:
    found = ks.inspect(artifact)
    meta = artifact.metadata
    data: dict[str, Any] = {
        "path": found.path, "format": found.format, "files": list(found.files),
        "bytes": found.bytes,
        "variables": [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
                      for v in found.variables],
        "has_optimizer": found.has_optimizer, "versions": dict(found.versions),
        "kind": artifact.kind, "file_bytes": dict(meta["files"]),
    }
    for key in ("inputs", "outputs"):  # (an export: what it takes and gives)
        if key in meta:
            data[key] = [{"name": p["name"], "dtype": p["dtype"],
                          "shape": None if p["shape"] is None else list(p["shape"])}
                         for p in meta[key]]
    manifest = meta["manifest"]
    data["manifest"] = {"present": manifest["path"] is not None, "manifest": manifest["path"],
                        "ok": True, "detail": manifest["detail"]}
    return data


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
