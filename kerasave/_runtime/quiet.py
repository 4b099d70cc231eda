"""Importing TensorFlow without the log lines ``TF_CPP_MIN_LOG_LEVEL`` asks to hide.

TensorFlow 2.21's C++ libraries log through absl before anything initializes
absl's logging, and those lines ignore ``TF_CPP_MIN_LOG_LEVEL``: even with 3,
every process prints "WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR" and two ``I0000 ... port.cc / cudart_stub.cc``
lines. The command line and the test suite set the level to 3 to keep their
output readable; ``import_tensorflow`` makes a level hold for the import, where
those lines come from. kerasave's public entry points (the names of
``kerasave``, ``kerasave.testing``, ``kerasave.callbacks``) import TensorFlow
through it too, so a level a user set holds for them; with no level set,
nothing changes. Nothing else is hidden: every other line of the import's
stderr is written back.

This module imports nothing heavy itself (the command line calls it first).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

__all__ = ["import_tensorflow"]

_ABSL_PRELUDE = "WARNING: All log messages before absl::InitializeLog() is called"
# absl's line prefix: severity letter, MMDD, then the time ("I0000 00:00:17...").
_SEVERITY = re.compile(r"^([IWE])\d{4} \d\d:\d\d:\d\d")
_HIDDEN_AT = {"I": 1, "W": 2, "E": 3}  # TF_CPP_MIN_LOG_LEVEL that hides the severity


def _level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _shown(line: str, level: int) -> bool:
    if line.startswith(_ABSL_PRELUDE):
        return level < 1
    found = _SEVERITY.match(line)
    return found is None or level < _HIDDEN_AT[found.group(1)]


def import_tensorflow() -> None:
    """Import TensorFlow, dropping the C++ log lines its ``TF_CPP_MIN_LOG_LEVEL``
    hides (a no-op when it is imported already or the level is 0)."""
    level = _level()
    if "tensorflow" in sys.modules or level < 1:
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)  # the C++ libraries write to the descriptor
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if _shown(line, level)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
