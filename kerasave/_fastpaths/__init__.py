"""The one place kerasave uses private Keras and TensorFlow names, and the one way it does.

Everything private (``keras.src.*``, ``tensorflow.python.*``, private functions
of ``saving_lib``, patched class attributes, private attributes of Keras
objects) is used from the modules of this package only, and each use is a
*fast path*: an optimisation with a twin on Keras' and TensorFlow's public API
that gives the same bytes and values. A change of Keras may make kerasave
slower, never wrong:

- Each fast path is registered (``register``) with a probe and its public twin
  in words; ``kerasave doctor`` lists them all. The probe runs once per
  process, the first time the fast path is wanted, on a tiny model: it runs
  the fast path and its public twin and compares them bit for bit (not
  ``hasattr``). One that fails its probe is off for the process.
- Every use goes through ``attempt(name, fast, public)``, the only place that
  chooses between a fast path and its twin:

  - the fast path is off (``KERASAVE_FAST_PATHS=0``, or its probe failed):
    ``public()``;
  - ``fast()`` raises ``Unsupported`` ("not this artifact, not this model"):
    ``public()``, and the fast path stays on;
  - ``fast()`` raises anything else: its public twin judges. If ``public()``
    succeeds, the fast path was at fault: it is off for the process, and the
    twin's result stands. If the twin fails too, the artifact is at fault and
    the twin's error (or failed verdict) is what the caller gets. Either way a
    fast path's own failure never becomes ``CorruptArtifactError``;
  - for a verification (``ok=``: the result is a verdict), a fast verdict that
    fails is given again by the twin, so a failure is always described as the
    public API sees it.

  Inside this package, a fast path that needs another (a reader that records
  assignments) says so with ``require(name)``: ``Unsupported`` when it is off.
- Both ways of switching one off are said once per fast path with a
  ``FastPathWarning``.
- ``KERASAVE_FAST_PATHS=0`` (or ``false``/``off``/``no``) turns every one of
  them off: every operation then runs on the public API only.

Outside this package nothing imports ``keras.src``/``tensorflow.python``,
touches a private attribute of a Keras or TensorFlow object, or catches
``Unsupported``: ``tests/test_internals.py`` reads every module to hold that.

This module imports nothing heavy; the fast paths' probes register themselves
when imported (``load_all`` imports them, for ``doctor``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from kerasave._errors import first_line
from kerasave._runtime.quiet import import_tensorflow

__all__ = ["ENV", "FastPathWarning", "Unsupported", "attempt", "enabled", "fast_paths",
           "load_all", "on", "register", "require", "status"]

ENV = "KERASAVE_FAST_PATHS"
T = TypeVar("T")

# The modules that register fast paths (imported by ``load_all``).
_MODULES = ("kerasave._fastpaths.probes", "kerasave._fastpaths.fitprobes")


class FastPathWarning(UserWarning):
    """A fast path is off for this process: it failed its probe or an operation."""


class Unsupported(Exception):
    """This artifact (or this model) is not one the fast path handles; use the public API.

    Not a failure: the fast path stays on for the next artifact.
    """


@dataclass
class _FastPath:
    name: str
    summary: str
    public: str  # its public twin, in words
    probe: Callable[[], None]
    state: bool | None = None  # None: not probed yet
    reason: str = ""
    warned: bool = False


_PATHS: dict[str, _FastPath] = {}
_LOCK = threading.RLock()
_PROBING = threading.local()  # .names: the fast paths this thread is probing


def _probing(name: str) -> bool:
    return name in getattr(_PROBING, "names", ())


def enabled() -> bool:
    """Whether ``KERASAVE_FAST_PATHS`` allows fast paths at all (read at every call)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def register(name: str, summary: str,
             public: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register the decorated probe as the fast path ``name``: ``summary`` says what it
    does, ``public`` what its public twin is.

    The probe runs the fast path and its public twin on a tiny model and
    raises (anything) when they disagree or the fast path does not work.
    """

    def decorate(probe: Callable[[], None]) -> Callable[[], None]:
        with _LOCK:
            _PATHS.setdefault(name, _FastPath(name, summary, public, probe))
        return probe

    return decorate


def _warn(path: _FastPath) -> None:
    if not path.warned:
        path.warned = True
        warnings.warn(f"kerasave: the fast path {path.name!r} is off for this process "
                      f"({path.reason}); Keras' and TensorFlow's public API give the same "
                      "result, more slowly. `kerasave doctor` shows every fast path.",
                      FastPathWarning, stacklevel=4)


_PATCHING = threading.local()  # .depth: patches this thread holds (see ``patching``)


@contextlib.contextmanager
def patching() -> Iterator[None]:
    """Marks a block in which this thread holds a patch (and the patches' lock)."""
    _PATCHING.depth = getattr(_PATCHING, "depth", 0) + 1
    try:
        yield
    finally:
        _PATCHING.depth -= 1


def on(name: str) -> bool:
    """Whether the fast path ``name`` may run: allowed, and its probe passed (run once).

    A thread that holds a patch cannot wait for a probe, which runs in a thread of
    its own and may need the patches' lock: the public path serves that one call,
    and the probe runs at the next call outside a patch.
    """
    if not enabled():
        return False
    import_tensorflow()  # (a fast path's private imports may be the process' first)
    if _probing(name):
        return True  # (the probe runs the fast path itself)
    if name not in _PATHS:
        load_all()
    path = _PATHS[name]
    if path.state is None:
        if hasattr(_PROBING, "names"):  # a probe that needs another: probe it here
            _probe(path)
        elif getattr(_PATCHING, "depth", 0):
            return False
        else:
            # In a thread of its own: Keras' global state (automatic names, the dtype
            # policy, scopes) and TensorFlow's distribution strategy are per thread,
            # so a probe neither sees nor changes the caller's.
            failure: list[BaseException] = []
            worker = threading.Thread(target=_probe_thread, args=(path, failure),
                                      name=f"kerasave-probe-{name}", daemon=True)
            worker.start()
            worker.join()
            if failure:
                raise failure[0]
        if path.state is False:
            _warn(path)
    return bool(path.state)


def _probe_thread(path: _FastPath, failure: list[BaseException]) -> None:
    _PROBING.names = frozenset()
    try:
        _probe(path)
    except BaseException as exc:  # (KeyboardInterrupt and the like: the caller's to raise)
        failure.append(exc)


def _probe(path: _FastPath) -> None:
    with _LOCK:  # (other threads wait for the probe)
        if path.state is not None:
            return
        kept = _PROBING.names
        _PROBING.names = kept | {path.name}
        try:
            with warnings.catch_warnings():  # (what Keras says of a tiny model is noise)
                warnings.simplefilter("ignore")
                path.probe()
        except Exception as exc:  # any failure: the public API it is
            path.state = False
            path.reason = f"its probe failed: {type(exc).__name__}: {_first(exc)}"
        else:
            path.state = True
        finally:
            _PROBING.names = kept


def require(name: str) -> None:
    """Inside a fast path that needs the fast path ``name`` as well: ``Unsupported``
    (the enclosing ``attempt`` runs the public twin) unless it is on."""
    if not on(name):
        raise Unsupported(f"the fast path {name!r} is off")


def _failed(name: str, exc: BaseException) -> None:
    """The fast path ``name`` raised where its public twin did not: off from now on."""
    path = _PATHS[name]
    with _LOCK:
        path.state = False
        path.reason = f"it raised {type(exc).__name__}: {_first(exc)}"
    _warn(path)


def attempt(name: str, fast: Callable[[], T], public: Callable[[], T], *,
            passthrough: tuple[type[BaseException], ...] = (),
            ok: Callable[[T], bool] | None = None) -> T:
    """``fast()`` when the fast path ``name`` is on, else (or when it cannot) ``public()``.

    ``Unsupported`` from ``fast`` means "not this artifact": ``public()`` runs and
    the path stays on. Exceptions in ``passthrough`` (kerasave's own verdicts on
    the artifact) propagate. Anything else is judged by ``public()``: if it
    succeeds, the fast path is switched off and its result stands; if it
    raises, that error propagates and the fast path stays on.

    ``ok``: the result is a verdict on the artifact (a check's list of
    ``Check``), and says whether it passed. A fast verdict that fails is given
    again by ``public()``, whose verdict the caller gets (a failure is described
    as the public API sees it); after ``fast`` raised, the twin "succeeds" when
    its verdict passes.

    ``fast`` must leave nothing changed when it raises.
    """
    if not on(name):
        return public()
    if _probing(name):
        return fast()  # (a probe judges the fast path alone)
    try:
        result = fast()
    except Unsupported:
        return public()
    except passthrough:
        raise
    except Exception as exc:
        result = public()
        if ok is None or ok(result):
            _failed(name, exc)
        return result
    if ok is not None and not ok(result):
        return public()
    return result


def load_all() -> None:
    """Import every module that registers fast paths."""
    for module in _MODULES:
        importlib.import_module(module)


def fast_paths() -> dict[str, str]:
    """Every registered fast path with its one-line summary."""
    load_all()
    return {name: path.summary for name, path in sorted(_PATHS.items())}


def status() -> dict[str, dict[str, Any]]:
    """Each fast path: ``on`` (probing it now if it was not yet), ``summary``, ``public``
    (its public twin), ``reason`` (why it is off)."""
    load_all()
    found = {}
    for name in sorted(_PATHS):
        state = on(name)
        path = _PATHS[name]
        reason = path.reason if enabled() else f"{ENV}=0"
        found[name] = {"on": state, "summary": path.summary, "public": path.public,
                       "reason": "" if state else reason}
    return found


def _first(exc: BaseException) -> str:
    return first_line(exc)[:200]
