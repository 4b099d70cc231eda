"""The compile settings a Keras model keeps (fast path ``compile_config``).

``model.compile`` records its arguments in the model's private
``_compile_config``; Keras' legacy HDF5 writer pops ``optimizer`` from it, so a
``.keras`` file saved afterwards (by Keras itself too) records no optimizer.
kerasave puts it back (``kerasave.formats._base.mend_compile_config``) and keeps
the caller's config as it was across a legacy save. No public call reaches the
live record; with the fast path off these mends are skipped and Keras'
behaviour is what the caller gets.
"""

from __future__ import annotations

from typing import Any

from kerasave._internals import on

__all__ = ["live_compile_config"]


def live_compile_config(model: Any) -> dict[str, Any] | None:
    """The dict ``compile()`` recorded for ``model`` (changing it changes the model's
    record), or None: not compiled, or this Keras keeps it otherwise."""
    if not on("compile_config"):
        return None
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    return config if isinstance(config, dict) else None
