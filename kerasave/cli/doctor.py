"""``kerasave doctor``: the versions kerasave runs on, and each fast path."""

from __future__ import annotations

import json
import warnings
from typing import Any

import click
from rich.text import Text

from kerasave.cli._ui import NO, OK, console, print_table, table

__all__ = ["doctor"]

_NIGHTLY_NAMES = ("tf-nightly", "tf-nightly-cpu", "keras-nightly")


def _version_data() -> dict[str, Any]:
    """The versions part of the report: read from the packages' metadata, so it is
    printed before TensorFlow is imported."""
    from kerasave._runtime import support as _support

    found = _support.versions()
    dists = _support.distributions()
    return {
        "versions": found,
        "distributions": dists,
        "tested": {name: {"oldest": low, "newest": high}
                   for name, (low, high) in _support.TESTED.items()},
        "in_range": {name: _support.in_range(name, found.get(name)) for name in _support.TESTED},
        "supported": _support.supported(found),
        # The pinned pre-releases CI runs the core tests on (make test-next), and
        # whether each is what is installed here.
        "next": {name: {"distribution": dist, "version": version,
                        "installed": _support.prerelease(name, dists.get(name),
                                                         found.get(name))}
                 for name, (dist, version) in _support.NEXT.items()},
        "nightlies": sorted(d for d in dists.values() if d in _support.NIGHTLIES),
    }


def _fast_path_data() -> dict[str, Any]:
    """Each fast path, probed (this imports Keras and TensorFlow)."""
    from kerasave import _fastpaths as _fastpaths

    with warnings.catch_warnings():  # (a fast path that is off is in the report)
        warnings.simplefilter("ignore", _fastpaths.FastPathWarning)
        paths = _fastpaths.status()
    return {
        "fast_paths_enabled": _fastpaths.enabled(),
        "fast_paths": {name: entry["on"] for name, entry in paths.items()},
        # What each falls back to: the public API that gives the same results.
        "fast_path_twins": {name: entry["public"] for name, entry in paths.items()},
        "fast_path_notes": {name: entry["reason"] for name, entry in paths.items()
                            if not entry["on"]},
        # Off because their probe (or a use) failed on this stack: the operations
        # they speed up run on the public API instead, with the same results.
        "fell_back": sorted(name for name, entry in paths.items()
                            if not entry["on"] and _fastpaths.enabled()),
    }


def _doctor_data() -> dict[str, Any]:
    return {**_version_data(), **_fast_path_data()}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for bug reports and scripts.")
def doctor(as_json: bool) -> int:
    """The versions kerasave runs on, whether they are tested, and each fast path.

    Exit code 0 when every version is in the tested range, 1 when one is not.
    KERASAVE_FAST_PATHS=0 turns every fast path off. The versions come first, at
    once; the fast paths follow once their probes ran (they import TensorFlow).
    """
    from kerasave import _fastpaths as _fastpaths

    if as_json:
        data = _doctor_data()
        click.echo(json.dumps(data, indent=2))
        return OK if data["supported"] else NO
    data = _version_data()
    out = console()
    versions = table("package", "version", "tested", "in range")
    for name, version in data["versions"].items():
        tested = data["tested"].get(name)
        span = f"{tested['oldest']} - {tested['newest']}" if tested else ""
        dist = data["distributions"].get(name)
        shown = version or "missing"
        if dist in _NIGHTLY_NAMES:
            shown += f" ({dist})"
        mark = "" if tested is None else ("ok" if data["in_range"][name] else "NOT TESTED")
        if name in data["next"] and data["next"][name]["installed"]:
            mark = "pre-release: core tests in CI"
        versions.add_row(Text(name), Text(shown), Text(span), Text(mark))
    print_table(out, versions)
    out.print(Text("supported: " + ("yes, every version is in the tested range"
                                    if data["supported"] else
                                    "no: kerasave is not tested on this combination")))
    if data["nightlies"]:
        pinned = ", ".join(f"{n['distribution']} {n['version']}" for n in data["next"].values())
        out.print(Text(f"nightly builds: {', '.join(data['nightlies'])}; CI runs kerasave's core "
                       f"tests on {pinned} (make test-next): a fast path whose probe fails "
                       "there falls back to the public API"))
    out.print()
    out.file.flush()
    data.update(_fast_path_data())
    summaries = _fastpaths.fast_paths()
    paths = table("fast path", "state", "what it does", names=list(data["fast_paths"]))
    for name, state in data["fast_paths"].items():
        note = data["fast_path_notes"].get(name, "")
        paths.add_row(Text(name), Text("on" if state else "off"),
                      Text(summaries[name] + (f" (off: {note})" if note else "")))
    print_table(out, paths)
    if data["fell_back"]:
        out.print(Text(f"fell back to Keras' and TensorFlow's public API on this stack: "
                       f"{', '.join(data['fell_back'])} (same results, slower)"))
    if not data["fast_paths_enabled"]:
        out.print(Text(f"{_fastpaths.ENV}=0: every operation uses Keras' and "
                       "TensorFlow's public API only"))
    return OK if data["supported"] else NO
