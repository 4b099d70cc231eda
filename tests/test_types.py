"""The type check `make test` runs (mypy, configured in setup.cfg) stays as strict as it is.

mypy itself runs in `make test` and `make lint`, not here: this holds its configuration
to its promise (the store, the handler protocol and the public API strict; the rest of
the package checked at a baseline), so the check cannot be weakened without a test
failing, and counts ``Any`` in the strict modules so that it only goes down.
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The modules checked as `mypy --strict` would (module name → its file).
STRICT = {
    "kerasave": "kerasave/__init__.py",
    "kerasave._api": "kerasave/_api.py",
    "kerasave._errors": "kerasave/_errors.py",
    "kerasave.testing": "kerasave/testing.py",
    "kerasave.formats._base": "kerasave/formats/_base.py",
    **{f"kerasave.store.{p.stem}" if p.stem != "__init__" else "kerasave.store":
       f"kerasave/store/{p.name}" for p in sorted((ROOT / "kerasave/store").glob("*.py"))},
}
# What `--strict` turns on, per module (warn_unused_configs and warn_redundant_casts are
# global: checked below on [mypy]).
FLAGS = ("disallow_untyped_defs", "disallow_incomplete_defs", "disallow_untyped_calls",
         "disallow_untyped_decorators", "disallow_any_generics", "disallow_subclassing_any",
         "check_untyped_defs", "warn_return_any", "warn_unused_ignores", "no_implicit_optional",
         "no_implicit_reexport", "strict_equality", "extra_checks")
# Options that would quietly take a module out of the check.
WEAKENING = ("ignore_errors", "follow_imports", "ignore_missing_imports", "disable_error_code",
             "allow_untyped_defs", "allow_untyped_calls", "allow_any_generics",
             "allow_incomplete_defs", "allow_subclassing_any", "allow_untyped_decorators",
             "implicit_optional", "implicit_reexport", "no_warn_return_any",
             "no_strict_equality", "no_check_untyped_defs", "no_warn_unused_ignores")
# `Any` written in the strict modules today (an annotation, a cast, ``typing.Any``): may
# only go down (lower it when it does).
MAX_ANY = 129


def _config() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _matches(pattern: str, module: str) -> bool:
    """mypy's rule for a ``[mypy-PATTERN]`` section: ``a.b.*`` is ``a.b`` and every
    module below it; a ``*`` inside stands for one part."""
    stem, below = (pattern[:-2], r"(\..+)?") if pattern.endswith(".*") else (pattern, "")
    return re.fullmatch(re.escape(stem).replace(r"\*", r"[^.]+") + below, module) is not None


def test_the_pattern_rule():
    assert _matches("kerasave.store.*", "kerasave.store")
    assert _matches("kerasave.store.*", "kerasave.store.local")
    assert not _matches("kerasave.store.*", "kerasave.storeroom")
    assert _matches("kerasave", "kerasave") and not _matches("kerasave", "kerasave._api")
    assert _matches("kerasave.*.base", "kerasave.store.base")


def _sections(module: str) -> list[str]:
    """The ``[mypy-...]`` sections of setup.cfg that speak of ``module``."""
    return [name for name in _config().sections() if name.startswith("mypy-")
            and any(_matches(p.strip(), module) for p in name[5:].split(","))]


def test_mypy_checks_the_whole_package_at_a_baseline():
    config = _config()
    assert config.has_section("mypy"), "setup.cfg has no [mypy] section (make test runs mypy)"
    base = config["mypy"]
    assert base.get("packages", "").strip() == "kerasave"
    assert base.get("python_version") == "3.10"  # the oldest Python kerasave supports
    assert base.getboolean("warn_redundant_casts") and base.getboolean("warn_unused_configs")
    assert not base.getboolean("ignore_errors", fallback=False)
    assert "ignore_missing_imports" not in base and "follow_imports" not in base
    # Only third-party packages are skipped, never kerasave's own modules.
    for name in config.sections():
        if name.startswith("mypy-") and ("follow_imports" in config[name]
                                         or "ignore_errors" in config[name]):
            assert not any(p.strip().startswith("kerasave") for p in name[5:].split(",")), name


@pytest.mark.parametrize("module", sorted(STRICT))
def test_the_strict_modules_are_strict(module):
    assert (ROOT / STRICT[module]).is_file(), STRICT[module]
    sections = _sections(module)
    assert sections, f"no [mypy-...] section of setup.cfg makes {module} strict"
    config = _config()
    for flag in FLAGS:  # (the last section that sets a flag wins: every one must say True)
        said = [config[s].getboolean(flag) for s in sections if flag in config[s]]
        assert said and all(said), f"{module}: {flag} is not True in {sections}"
    for name in sections:
        weak = [o for o in WEAKENING if o in config[name]]
        assert not weak, f"[{name}] weakens the check of {module}: {weak}"


def test_every_store_module_is_strict():
    # (a new module of kerasave.store is strict too: the section's pattern is store.*)
    for path in (ROOT / "kerasave/store").glob("*.py"):
        module = "kerasave.store" if path.stem == "__init__" else f"kerasave.store.{path.stem}"
        assert module in STRICT and _sections(module), module


def _anys(source: str) -> int:
    tree = ast.parse(source)
    count = sum(isinstance(node, ast.Name) and node.id == "Any"
                or isinstance(node, ast.Attribute) and node.attr == "Any"
                for node in ast.walk(tree))
    # A quoted annotation is a string: parse it too.
    for node in ast.walk(tree):
        for note in _annotations(node):
            if isinstance(note, ast.Constant) and isinstance(note.value, str):
                count += _anys(note.value)
    return count


def _annotations(node: ast.AST) -> list[ast.AST | None]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        arguments = node.args
        every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                 arguments.vararg, arguments.kwarg]
        return [node.returns, *(a.annotation for a in every if a is not None)]
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    return []


def test_any_in_the_strict_modules_only_goes_down():
    count = sum(_anys((ROOT / path).read_text()) for path in STRICT.values())
    assert count <= MAX_ANY, (f"{count} Any in the strict modules, {MAX_ANY} allowed: type "
                              "what is new")


def test_the_any_count_counts():
    # (the import is not a use; a quoted annotation is)
    assert _anys("from typing import Any\nx: Any = 1\ndef f(a: 'Any') -> typing.Any: ...") == 3
    assert _anys("x: int = 1") == 0


def test_make_test_and_make_lint_run_mypy_and_clean_removes_its_cache():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "lint"):
        body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert body and "-m mypy --config-file setup.cfg" in body.group(1), target
    clean = re.search(r"^clean:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert clean and ".mypy_cache" in clean.group(1)
    assert ".mypy_cache/" in (ROOT / ".gitignore").read_text().split()
    extra = _config()["options.extras_require"]["test"]
    assert re.search(r"^mypy>=", extra, re.M) and re.search(r"^types-PyYAML>=", extra, re.M)
