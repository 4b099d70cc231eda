"""The house's layout: which part of kerasave may import which (docs/architecture.md).

Read from the installed copy's source (its AST, every import, also those inside
functions), so a change that makes the store read a format, or the comparisons
reach for the store, fails here instead of quietly tangling the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kerasave as ks

PACKAGE = Path(ks.__file__).parent
# The parts of kerasave: a subpackage (formats/_tf apart from the other formats) or a
# module at the root.
SUBPACKAGES = ("store", "formats", "checkpoints", "compare", "keras2", "cli", "_fastpaths",
               "_runtime")
EVERYTHING = frozenset({*SUBPACKAGES, "formats._tf", "_api", "_errors", "_registry",
                        "_report", "_safety", "callbacks", "testing", "pytest_plugin",
                        "__main__", "kerasave"})
# What each part may import of kerasave (besides itself); a part not named here may
# import anything but the command line.
MAY_IMPORT = {
    "_runtime": set(),
    "_report": {"_runtime"},
    "_errors": {"_runtime", "_report"},
    "store": {"_errors", "_report"},
    "formats._tf": {"_errors", "_report", "_runtime", "_fastpaths", "store"},
    "compare": {"_errors", "_report", "_runtime", "_fastpaths"},
    "keras2": {"_errors", "_report", "_runtime", "_fastpaths", "formats", "formats._tf",
               "compare", "store"},
    "formats": {"_errors", "_report", "_runtime", "_fastpaths", "_registry", "_safety",
                "formats._tf", "compare", "keras2", "store"},
    "_registry": {"_errors", "_report", "_runtime", "formats", "store"},
}
ROOT_MODULES = 10  # at most: the rest lives in the subpackages


def part(dotted: str) -> str:
    """The part of kerasave a dotted module name belongs to."""
    names = dotted.split(".")
    if len(names) == 1:
        return "kerasave"
    if names[1:3] == ["formats", "_tf"]:
        return "formats._tf"
    return names[1]


def _module(path: Path) -> str:
    names = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def _imports(path: Path) -> set[str]:
    """Every kerasave module ``path`` imports (relative imports resolved)."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from kerasave import _registry" imports kerasave._registry; "from
            # kerasave import save_model" imports the package itself
            subs = {f"{module}.{a.name}" for a in node.names if _exists(f"{module}.{a.name}")}
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(module)
    return {m for m in found if m == "kerasave" or m.startswith("kerasave.")}


def _exists(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_graph_reads_every_module_and_every_part_is_known():
    assert len(GRAPH) > 80
    parts = {part(m) for m in GRAPH} | {part(t) for targets in GRAPH.values() for t in targets}
    assert parts <= EVERYTHING, parts - EVERYTHING
    # (the reader sees the imports there are: the facade imports the store and the registry)
    assert {"kerasave.store", "kerasave._registry"} <= GRAPH["kerasave._api"]


@pytest.mark.parametrize("source", sorted(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(source):
    wrong = {f"{m} imports {t}" for m, targets in GRAPH.items() if part(m) == source
             for t in targets if part(t) != source and part(t) not in MAY_IMPORT[source]}
    assert wrong == set()


def test_only_the_entry_point_imports_the_command_line():
    wrong = {f"{m} imports {t}" for m, targets in GRAPH.items()
             if part(m) not in ("cli", "__main__") for t in targets if part(t) == "cli"}
    assert wrong == set()


def test_nothing_below_the_public_calls_imports_them():
    # the facade (kerasave._api) is called from above: the package, callbacks, testing,
    # the command line; a format, a store or a checkpoint that called it back would loop
    above = {"kerasave", "_api", "callbacks", "testing", "cli"}
    wrong = {f"{m} imports kerasave._api" for m, targets in GRAPH.items()
             if part(m) not in above and "kerasave._api" in targets}
    assert wrong == set()


def test_the_root_holds_few_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= ROOT_MODULES, root
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} \
        == set(SUBPACKAGES)


def test_the_layer_check_fails_on_a_store_that_reads_a_format():
    # the check itself, on an import it must refuse
    graph = {"kerasave.store.local": {"kerasave.formats.keras"}}
    wrong = {t for m, targets in graph.items() for t in targets
             if part(t) != part(m) and part(t) not in MAY_IMPORT[part(m)]}
    assert wrong == {"kerasave.formats.keras"}


def test_the_architecture_draws_every_module():
    doc = Path(__file__).parents[1] / "docs" / "architecture.md"
    if not doc.is_file():
        pytest.skip("docs/ is not beside these tests")
    text = doc.read_text()
    tree = text[text.index("```\nkerasave/"):]
    tree = tree[: tree.index("```\n", 4)]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and p.name not in tree)
    assert missing == []
