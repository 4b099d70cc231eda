"""TensorFlow and Keras, imported the first time kerasave uses them.

``import tensorflow`` takes seconds (Keras imports it too); reading what an
artifact holds needs neither. Every kerasave module names the two through the
proxies below (``from kerasave._runtime.lazy import keras, tf``) instead of importing
them, so importing kerasave's modules imports neither: ``kerasave inspect``,
``kerasave doctor``'s versions and ``--help`` run without them. The first
attribute looked up on a proxy imports the real module (through
``kerasave._runtime.quiet.import_tensorflow``, so a ``TF_CPP_MIN_LOG_LEVEL`` holds) and
every attribute is then the real module's own, looked up once.

A module that needs one of them at import time (a subclass of a Keras class,
say) simply looks it up at import time: it is then not light, and
``tests/test_cold.py`` says which entry points must stay light.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["keras", "tf", "loaded"]


class _Module(types.ModuleType):
    """A stand-in for a module that imports it when an attribute is first looked up."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def _real(self) -> types.ModuleType:
        module = sys.modules.get(self.__name__)
        if module is None:
            from kerasave._runtime.quiet import import_tensorflow

            import_tensorflow()  # (Keras imports TensorFlow: quiet it first)
            module = importlib.import_module(self.__name__)
        return module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__") and attr != "__version__":
            raise AttributeError(attr)  # (what copy, pickle and inspect probe for)
        value = getattr(self._real(), attr)
        # Cached: the next lookup is an ordinary attribute. Submodules stay the
        # real ones, so monkeypatching ``keras.saving.load_model`` still works.
        self.__dict__[attr] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(self._real())

    def __repr__(self) -> str:
        return f"<kerasave lazy module {self.__name__!r}>"


def loaded(name: str) -> bool:
    """Whether the real module ``name`` has been imported in this process."""
    return name in sys.modules


if TYPE_CHECKING:  # type checkers see the real modules
    import keras
    import tensorflow as tf
else:
    keras = _Module("keras")
    tf = _Module("tensorflow")
