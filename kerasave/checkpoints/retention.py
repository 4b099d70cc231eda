"""Which of a ``CheckpointManager``'s checkpoints there are, and which stay.

The directory's listing is the manager's state (``series``): each checkpoint's
number, time, metrics and metadata, read from its committed manifest, and the
``keep_every_n_hours`` of the manager that wrote it. ``kept`` applies the
rules: the newest ``max_to_keep``, the ``best_k`` by a metric, and one
checkpoint per N hours, under this manager's N and under every N an earlier
manager recorded (what it preserved stays preserved, as with
``tf.train.CheckpointManager``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kerasave.store.base import Store
from kerasave.store.layout import Layout

__all__ = ["Entry", "series", "kept"]


@dataclass(frozen=True)
class Entry:
    """One checkpoint of a manager's directory."""

    number: int
    path: str  # as shown: a path, or a URL's checkpoints by their URLs
    name: str
    time: float
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The keep_every_n_hours of the manager that wrote it: what it preserves stays
    # preserved under any later manager, as with tf.train.CheckpointManager.
    every: float | None = None


def series(store: Store, name: str, layout: Layout) -> list[Entry]:
    """The committed checkpoints ``name-N`` of the directory ``store``, by number."""
    found = []
    for e in store.list(re.escape(name) + r"-(\d+)", layout):
        m = e.manifest
        try:
            when = float(m.get("time") or 0)
        except (TypeError, ValueError):
            when = 0.0
        found.append(Entry(e.number, e.shown, e.name, when,
                           _dict(m.get("metrics")), _dict(m.get("metadata")), _every(m)))
    return found


def kept(entries: list[Entry], *, max_to_keep: int | None, best_k: int | None = None,
         metric: str | None = None, mode: str = "min",
         keep_every_n_hours: float | None = None) -> list[Entry]:
    """The entries the rules keep, in their order."""
    keep = {e.number for e in entries} if max_to_keep is None else {
        e.number for e in entries[-max_to_keep:]}
    if best_k and metric:
        ranked = [e for e in entries if isinstance(e.metrics.get(metric), (int, float))
                  and not math.isnan(e.metrics[metric])]
        ranked.sort(key=lambda e: e.metrics[metric], reverse=mode == "max")
        keep |= {e.number for e in ranked[:best_k]}
    # One checkpoint per N hours, the first included: this manager's N over every
    # checkpoint, and the N each earlier manager recorded over the checkpoints it
    # wrote (what it preserved stays, as TensorFlow's preserved checkpoints do).
    chains = {e.every for e in entries if e.every} - {keep_every_n_hours}
    for hours, chain in [(keep_every_n_hours, entries)] + [
            (h, [e for e in entries if e.every == h]) for h in sorted(chains)]:
        if not hours:
            continue
        anchor = None
        for e in sorted(chain, key=lambda e: e.time):
            if anchor is None or e.time - anchor >= hours * 3600:
                keep.add(e.number)
                anchor = e.time
    return [e for e in entries if e.number in keep]


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _every(manifest: Mapping[str, Any]) -> float | None:
    value = manifest.get("keep_every_n_hours")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None
