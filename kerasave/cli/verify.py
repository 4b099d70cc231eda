"""``kerasave verify``: an artifact checked on its own, with no model to compare with.

The artifact is opened once (``kerasave.open``: its manifest, structure and
declared shapes checked); then every stored array is read (a checkpoint's
tensors each against their own CRC32C, so damage is found without a manifest
too) and the artifact is loaded the way ``load_model``, ``load_config`` and
``load_weights`` load it, from the open ``Artifact``.
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

import kerasave as ks
from kerasave._api import open_once
from kerasave._runtime.lazy import keras
from kerasave.cli._artifacts import architecture, is_export, load_into, whole
from kerasave.cli._compare import fingerprint
from kerasave.cli._ui import OK, No, note, shown, status
from kerasave.compare.verify import probe_inputs
from kerasave.formats._export import Served

__all__ = ["verify_command"]

_BAD = (No, ks.CorruptArtifactError, ks.UnsafeArtifactError, ks.NotSerializableError,
        ks.ArchitectureMismatchError)


def _loaded_fingerprints(loaded: Any) -> set[Any]:
    variables = list(getattr(loaded, "variables", []))
    optimizer = getattr(loaded, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    variables += list(getattr(loaded, "metrics_variables", []) or [])
    return {fingerprint(np.asarray(v.numpy())) for v in variables}


def _probe_model(model: keras.Model) -> str:
    try:
        probe = probe_inputs(model)
        if probe is None:
            return "no input shapes known: not run"
        model(probe, training=False)
    except Exception as exc:  # loads, but cannot run: the artifact is not usable
        raise No(f"the loaded model does not run on a probe batch: {exc}") from exc
    return "runs on a probe batch"


def _probe_served(served: Any) -> str:
    signature = getattr(served, "signatures", {}).get("serving_default")
    if signature is None:
        return "no serving_default signature: not run"
    _, specs = signature.structured_input_signature
    if any(spec.shape.rank is None for spec in specs.values()):
        return "inputs of unknown rank: not run"
    feed = {name: np.zeros([1 if d is None else d for d in spec.shape],
                           dtype=spec.dtype.as_numpy_dtype) for name, spec in specs.items()}
    try:
        signature(**feed)
    except Exception as exc:
        raise No(f"the restored object does not serve a probe batch: {exc}") from exc
    return "serves a probe batch"


def _probe_export(served: Served) -> str:
    """The export serves zero batches of two sizes with the output shapes it declares."""
    sizes = (1, 3)
    for rows in sizes:
        feed = [np.zeros([rows if i == 0 and d is None else (1 if d is None else d)
                          for i, d in enumerate(port.shape or (None,))], dtype=port.dtype)
                for port in served.inputs]
        try:
            got = served.serve(*feed)
        except Exception as exc:
            raise No(f"the export does not serve a batch of {rows}: {exc}") from exc
        got = list(got) if isinstance(got, tuple) else [got]
        for port, array in zip(served.outputs, got):
            declared = port.shape
            if declared is None:
                continue
            fits = len(declared) == array.ndim and all(
                d is None or d == n for d, n in zip(declared, array.shape))
            if not fits or (declared and array.shape[0] != rows):
                raise No(f"output {port.name} of a batch of {rows} has shape {array.shape}, "
                         f"the export declares {port.shape}")
    return f"serves batches of {sizes[0]} and {sizes[1]}"


def _facts(artifact: ks.Artifact, into: keras.Model | None, config: str | None) -> list[str]:
    """What makes the artifact good; raises No (or a KerasaveError) otherwise."""
    meta = artifact.metadata
    manifest = meta["manifest"]
    facts = [f"manifest: {manifest['detail']}" if manifest["path"] is not None
             else manifest["detail"]]
    stored: dict[Any, str] = {}
    count = 0
    for name in artifact:
        stored.setdefault(fingerprint(artifact.array(name)), name)
        count += 1
    if artifact.kind == "config":
        model = ks.load_config(artifact)
        facts.append(f"rebuilds a {type(model).__name__} with {len(model.weights)} weights")
        return facts
    facts.append(f"{count} arrays read")
    if whole(artifact):
        if config:
            note(f"--config is not used: {artifact.path} holds its own architecture")
        model = ks.load_model(artifact)
        loaded = _loaded_fingerprints(model)
        left = meta["not_loaded"]
        missing = [n for fp, n in stored.items() if fp not in loaded and n not in left]
        optimizer = set(meta["optimizer_variables"])
        if missing and all(n in optimizer or "optimizer" in n.split("/")[0] for n in missing):
            raise No(f"its optimizer state ({len(missing)} of the {len(stored)} distinct "
                     "stored arrays) does not load: the model comes back with a fresh "
                     "optimizer, so resumed training would not match")
        if missing:
            raise No(f"{len(missing)} of the {len(stored)} distinct stored arrays are not in "
                     f"the loaded model (e.g. {missing[0]}): it does not load as saved")
        if left:
            kinds = sorted(set(left.values()))
            facts.append(f"loads with all {count - len(left)} arrays of the model and its "
                         f"optimizer ({len(left)} left out on purpose: {', '.join(kinds)})")
        else:
            facts.append(f"loads with all {count} arrays")
        facts.append(_probe_model(model))
        return facts
    if is_export(artifact):  # runs in its own runtime
        if config:
            note(f"--config is not used: {artifact.path} is a {artifact.format} export")
        exported = ks.load_model(artifact)
        facts.append(f"loads in {exported.runtime}")
        facts.append(_probe_export(exported))
        return facts
    served = None
    if artifact.kind == "model":  # a serving export
        served = ks.load_model(artifact)
        missing = [n for fp, n in stored.items() if fp not in _loaded_fingerprints(served)]
        if missing:
            raise No(f"{len(missing)} stored arrays are not in the restored object "
                     f"(e.g. {missing[0]})")
        facts.append("loads")
        facts.append(_probe_served(served))
    recorded = meta["recorded_optimizer_variables"]
    saved = len(meta["optimizer_variables"])
    if recorded is not None and recorded != saved:
        raise No(f"kerasave recorded {recorded} optimizer variables, the "
                 f"{artifact.format} holds {saved}")
    if into is not None:
        # All or nothing, so every saved array fits a variable of the architecture.
        load_into(into, artifact, served)
        facts.append(f"loads into the architecture of {config}")
    return facts


@click.command("verify")
@click.argument("path")
@click.option("--config", metavar="CONFIG",
              help="An architecture (.json/.yaml config, .keras or .h5 model) to load weights "
                   "into, for weights-only artifacts.")
def verify_command(path: str, config: str | None) -> int:
    """Check the artifact at PATH on its own: manifest, every array, loading.

    Prints one "ok" line and exits 0 when it is good; exits 1 with the reason
    on stderr when it is not.
    """
    try:  # nothing there or no format at all is an error (2); damage is a "no" (1)
        with open_once(path) as artifact:  # (a URL's: missing or wrong-sized objects too)
            return _verify(path, artifact, config)
    except No:
        raise  # (said already)
    except _BAD as exc:
        raise No(f"{path} failed verification: {exc}") from exc


def _verify(path: str, artifact: ks.Artifact, config: str | None) -> int:
    what = f"{artifact.format} {artifact.metadata['description']}"
    into = architecture(config) if config else None
    try:
        with status(f"verifying {path}"):
            facts = _facts(artifact, into, config)
    except _BAD as exc:
        raise No(f"{path} ({what}) failed verification: {exc}") from exc
    click.echo(shown(f"ok: {path} ({what}): " + "; ".join(facts)))
    return OK
