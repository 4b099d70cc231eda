"""``kerasave convert``: an artifact written in another format, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import kerasave as ks
from kerasave._api import open_once
from kerasave.cli._artifacts import (
    architecture,
    is_export,
    load_into,
    outputs_verdict,
    read_pair,
    same_place,
    whole,
)
from kerasave.cli._ui import OK, No, note, shown, status
from kerasave.cli.diff import STATUS, compare_arrays

__all__ = ["convert_command"]


def _destination_kind(dst: str, as_: str | None) -> str:
    if as_:
        return as_
    name = Path(dst).name.lower()
    if name.endswith((".weights.h5", ".weights.json")):
        return "weights"
    if name.endswith((".keras", ".h5", ".hdf5", ".onnx", ".tflite")):
        return "model"
    if name.endswith((".json", ".yaml", ".yml")):
        return "config"
    raise click.UsageError(
        f"cannot tell what to write at {dst!r} from its name: add --as weights (a TF "
        "checkpoint prefix) or --as model (a SavedModel directory)")


def _exists(path: str) -> bool:
    from kerasave import store

    return store.at(path).exists()


def _rewrite_layout(path: str) -> int:
    """``convert URL URL``: what an earlier kerasave wrote at URL (the versioned layout,
    ``.<name>.kerasave-v/``) rewritten in place, the object at the URL; for a manager's
    directory every checkpoint, then TensorFlow's ``checkpoint`` file."""
    from kerasave import store
    from kerasave.checkpoints import adopted as _adopted
    from kerasave.formats.checkpoint import CheckpointHandler

    with store.at(path) as where:
        with status(f"rewriting {path}"):
            done = where.migrate()
        if not done:
            raise click.UsageError("SRC and DST are the same path (and nothing there is in "
                                   "an earlier layout to rewrite)")
        series = where.list(r"ckpt-(\d+)", CheckpointHandler())
        if series and done != [where.shown]:
            _adopted.tell_tensorflow(where, [(e.name, float(e.manifest.get("time") or 0))
                                             for e in series], None)
    for url in done:
        click.echo(f"{url}: rewritten with the object at the URL")
    return OK


@click.command("convert")
@click.argument("src")
@click.argument("dst")
@click.option("--config", metavar="CONFIG",
              help="The architecture (.json/.yaml config, .keras or .h5 model) for a source "
                   "that holds weights only (checkpoint, .weights.h5, SavedModel).")
@click.option("--as", "as_", type=click.Choice(["weights", "model", "config"]),
              help="What to write at DST (default: from its suffix: .weights.h5 weights, "
                   ".weights.json sharded weights; .keras, .h5, .hdf5, .onnx, .tflite model; "
                   ".json, .yaml, .yml config).")
@click.option("--max-shard-size", type=click.FloatRange(min=0, min_open=True), metavar="GB",
              help="For sharded weights (DST ending in .weights.json): the largest shard, in "
                   "GB (default 5).")
@click.option("--force", is_flag=True, help="Replace an artifact already at DST.")
def convert_command(src: str, dst: str, config: str | None, as_: str | None,
                    max_shard_size: float | None, force: bool) -> int:
    """Convert the artifact SRC into another format at DST, verified.

    The result is written with kerasave's save functions (verified by a round
    trip), then compared with SRC variable by variable. Either may be a URL.

    SRC and DST the same URL rewrites what an earlier kerasave wrote there (the
    versioned layout, ``.NAME.kerasave-v/``) with the object at the URL, each
    file's CRC32C checked; a manager's directory, every checkpoint in it.
    """
    if same_place(src, dst):
        return _rewrite_layout(src)
    target = _destination_kind(dst, as_)
    if max_shard_size is not None and (target != "weights"
                                       or not dst.lower().endswith(".weights.json")):
        raise click.UsageError("--max-shard-size is for sharded weights: a DST ending in "
                               ".weights.json")
    with open_once(src) as source:  # (a URL's copy: its transfer draws its own bar)
        return _convert(src, source, dst, target, config, force, max_shard_size)


def _convert(src: str, source: ks.Artifact, dst: str, target: str, config: str | None,
             force: bool, max_shard_size: float | None = None) -> int:
    if is_export(source):
        description = source.metadata["description"]
        raise click.UsageError(
            f"{src} is {'an' if description[0] in 'AEIOU' else 'a'} "
            f"{description}: it holds what the model computes, not a "
            "Keras model or weights kerasave can read back; convert from the model it was "
            "exported from")
    if _exists(dst) and not force:
        raise click.UsageError(f"{dst} already exists; pass --force to replace it")
    if source.kind == "config" and target != "config":
        raise click.UsageError(
            f"{src} is a {source.format} config: it holds no weights, so it converts to a "
            ".json/.yaml config only")
    if not whole(source) and source.kind != "config" and not config:
        raise click.UsageError(
            f"{src} ({source.format}) holds weights only: pass --config MODEL.json (or a "
            ".keras or .h5 model) for its architecture")
    with status(f"reading {src}"):
        if source.kind == "config":
            model = ks.load_config(source)
        elif whole(source):
            if config:
                note(f"--config is not used: {src} holds its own architecture")
            model = ks.load_model(source)
        else:
            assert config is not None  # (refused above)
            model = load_into(architecture(config), source)
            if source.metadata["has_optimizer"] and \
                    getattr(model, "optimizer", None) is None:
                note(f"the optimizer state in {src} is not converted: the architecture "
                     f"from {config} has no optimizer (a .keras or .h5 model as --config "
                     "keeps it)")
    save = {"weights": ks.save_weights, "model": ks.save_model, "config": ks.save_config}[target]
    options: dict[str, Any] = \
        {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
    try:
        with status(f"writing and verifying {dst}"):
            report = save(model, dst, **options)
    except ks.RoundTripError as exc:
        click.echo(shown(exc.report))
        raise No(str(exc)) from exc
    click.echo(shown(report))
    if target == "config":
        return OK
    with status(f"comparing {dst} with {src}"):
        left, right = read_pair(source, dst, config=config)
        verdict = outputs_verdict(left, right)
        result = compare_arrays(left, right)
    if verdict is not None:  # an export: its outputs, under the export tolerance
        if not verdict.ok:
            raise No(f"{dst} does not compute what {src} does: {verdict.detail}")
        click.echo(f"{src} -> {dst}: {verdict.detail}")
        return OK
    if not result.identical:
        bad = [e for e in result.entries if e.status != "same"]
        raise No(f"{dst} differs from {src}: {len(bad)} variables, e.g. {bad[0].name} "
                 f"({STATUS[bad[0].status]})")
    click.echo(shown(f"{src} -> {dst}: {len(result.entries)} variables bit-exact"))
    return OK
