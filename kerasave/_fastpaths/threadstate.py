"""Keras' per-thread settings carried into a thread of kerasave's own (fast path
``thread_settings``).

Keras keeps its scopes in a ``threading.local``: the custom objects of a
``custom_object_scope``, the dtype policy, the safe mode. kerasave counts what
a config declares by building it in a thread of its own
(``_safety.refuse_oversized``), where the caller's scopes are not seen: a
class known only through the caller's ``custom_object_scope`` would be unknown
there. ``carried()`` copies those settings across. No public call reads them;
with the fast path off the dry build sees only what is registered globally, and
a build that fails on an unknown class there is judged by the real build in
the caller's thread instead (see ``refuse_oversized``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kerasave._fastpaths import attempt

__all__ = ["carried", "CARRIED"]

# The settings a build depends on; never a scope's variables or Keras' list of
# variables created without memory (those stay the dry thread's own).
CARRIED = ("custom_objects_scope_dict", "dtype_policy", "safe_mode_saving",
           "use_legacy_config")


def _tracker() -> Any:
    from keras.src.backend.common import global_state

    return global_state.GLOBAL_STATE_TRACKER


def _capture() -> Callable[[], None]:
    tracker = _tracker()
    kept = {name: getattr(tracker, name) for name in CARRIED if hasattr(tracker, name)}

    def apply() -> None:
        for name, value in kept.items():  # (a threading.local: sets the calling thread's)
            setattr(tracker, name, value)

    return apply


def carried() -> Callable[[], None] | None:
    """A function that gives the thread running it this thread's Keras settings; None
    when the fast path is off (the public twin: the other thread then has Keras'
    defaults)."""
    return attempt("thread_settings", _capture, lambda: None)
