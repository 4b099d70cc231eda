"""One module per format; ``kerasave._registry`` maps names and suffixes to their handlers.

``TABLE`` is the one table of the formats that the round trip (``kerasave.testing``),
the demo, the tests and the benchmarks read: each format's label, handler name,
kind, canonical file, what a load gives back and whether it is exact. A consumer
that needs fewer takes a filter of it, never a list of its own; the handlers
themselves (suffixes, what they hold) stay in their modules, and
``tests/test_handlers.py`` holds the table and the registry to one another.
This module imports nothing heavy: a benchmark's parent process reads it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kerasave.formats._base import Handler

__all__ = ["Format", "TABLE", "by_label", "formats"]

_CALLS = {"weights": "save_weights", "config": "save_config", "model": "save_model"}
_LOADS = {"weights": "load_weights", "config": "load_config", "model": "load_model"}


@dataclass(frozen=True)
class Format:
    """One format, as the code that saves and reads it back sees it."""

    label: str  # the name kerasave.testing, the demo, the bench and the corpus use
    name: str  # the handler's: format=, Report.format, Inspection.format
    kind: str  # the handler's kind: "weights", "config" or "model"
    file: str  # the canonical artifact, relative (the names the README's demo shows)
    loads: str  # what reading it back gives: "weights" (into a model), "config" (an
    # uncompiled model), "model" (a compiled Keras model), "serving" (a SavedModel's
    # callable), "export" (an export's runtime)
    exact: bool  # every value comes back bit for bit (an export: within a tolerance)
    classic: bool  # one of the seven classic formats (the demo's, the corpus')

    @property
    def call(self) -> str:
        """The facade's save call: ``save_weights``, ``save_config`` or ``save_model``."""
        return _CALLS[self.kind]

    @property
    def load(self) -> str:
        """The facade's load call: ``load_weights``, ``load_config`` or ``load_model``."""
        return _LOADS[self.kind]

    @property
    def export(self) -> bool:
        """A deployment export (``kerasave[export]``)."""
        return self.loads == "export"

    @property
    def suffix(self) -> str:
        """What ``file`` ends in after its stem ('' for a checkpoint prefix or a folder)."""
        _, dot, rest = Path(self.file).name.partition(".")
        return dot + rest

    def named(self, stem: str) -> str:
        """``file`` with its stem changed: ``"weights/my_model"`` -> ``"weights/w"``,
        ``"my_model.keras"`` -> ``"w.keras"``; a folder (``"serving"``) keeps its name."""
        head = self.file.rpartition("/")[0]
        if not head and not self.suffix:
            return self.file
        return (f"{head}/" if head else "") + stem + self.suffix

    @property
    def handler(self) -> Handler:
        """The registered handler (imports the formats: not for a light process)."""
        from kerasave import _registry

        return _registry.by_name(self.kind, self.name, Path(self.file))


#: Every format kerasave writes, in the order the round trip checks them.
TABLE: tuple[Format, ...] = (
    Format("checkpoint", "checkpoint", "weights", "weights/my_model", "weights", True, True),
    Format("h5 weights", "h5", "weights", "my_model.weights.h5", "weights", True, True),
    Format("json", "json", "config", "model.json", "config", True, True),
    Format("yaml", "yaml", "config", "model.yaml", "config", True, True),
    Format("keras", "keras", "model", "my_model.keras", "model", True, True),
    Format("h5 model", "h5", "model", "my_model.h5", "model", True, True),
    Format("savedmodel", "savedmodel", "model", "serving", "serving", True, True),
    Format("onnx", "onnx", "model", "my_model.onnx", "export", False, False),
    Format("litert", "litert", "model", "my_model.tflite", "export", False, False),
    Format("h5 sharded", "h5-sharded", "weights", "my_model.weights.json", "weights", True,
           False),
)


def formats(where: Callable[[Format], bool] | None = None) -> tuple[Format, ...]:
    """The rows of ``TABLE`` for which ``where`` holds (all of them without it)."""
    return tuple(f for f in TABLE if where is None or where(f))


def by_label(label: str) -> Format:
    """The row whose label is ``label`` (``KeyError`` for none)."""
    for f in TABLE:
        if f.label == label:
            return f
    raise KeyError(label)
