"""The package's layers (docs/architecture.md): every module imports only from its own layer or the layers below.

Every import statement of every module is read with ``ast`` (function-level ones included, relative ones resolved),
so an import hidden in a function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nhllib

PACKAGE = Path(nhllib.__file__).resolve().parent

# LAYERS-BEGIN (written by the relayout script; edit the script's table, not this block)
#: The layers, lowest first: (name, the module prefixes in it). A module belongs to the layer of its longest
#: matching prefix; a module that matches none fails test_every_module_has_a_layer.
LAYERS = (
    ("base", ("nhllib.checks", "nhllib.vocab", "nhllib.compat", "nhllib.utils", "nhllib.machine", "nhllib.layout",
              "nhllib.workdir", "nhllib.weight_sources")),
    ("data", ("nhllib.data",)),
    ("retrieval", ("nhllib.retrieval",)),
    ("core", ("nhllib.core",)),
    ("store", ("nhllib.store",)),
    ("training", ("nhllib.training",)),
    ("analysis", ("nhllib.analysis",)),
    ("plots", ("nhllib.plots",)),
    ("study", ("nhllib.study",)),
    ("teaching", ("nhllib.teaching",)),
    ("api", ("nhllib",)),  # the package root: re-exports only
)


def test_at_most_ten_modules_directly_under_nhllib():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, f"{len(top)} modules directly under nhllib/ (at most 10; put them in a layer): {top}"
# LAYERS-END

#: Imports across layers that are known and scheduled to go, each with the reason; a listed import that no longer
#: exists fails test_known_exceptions_still_exist, so the list only shrinks.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every nhllib import in ``path``, at any depth of the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from nhllib import plots`` imports the module nhllib.plots, not the package root
            found += [(node.lineno, f"{module}.{alias.name}") if is_module(f"{module}.{alias.name}")
                      else (node.lineno, module) for alias in node.names]
    return [(line, target) for line, target in found if target == "nhllib" or target.startswith("nhllib.")]


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(name: str, layers=LAYERS) -> int | None:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def upward_imports(package: Path = PACKAGE, layers=LAYERS) -> list[str]:
    """Every import of a module from a higher layer, as 'file:line: module (layer) imports target (layer)'."""
    names = [layer for layer, _ in layers]
    offences = []
    for path in sorted(package.rglob("*.py")):
        source = module_name(path)
        own = layer_of(source, layers)
        for line, target in imports_of(path):
            theirs = layer_of(target, layers)
            if own is None or theirs is None or theirs <= own or (source, target) in KNOWN_EXCEPTIONS:
                continue
            offences.append(f"{path.relative_to(package.parent)}:{line}: {source} ({names[own]}) imports "
                            f"{target} ({names[theirs]})")
    return offences


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in sorted(PACKAGE.rglob("*.py")) if layer_of(module_name(p)) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    offences = upward_imports()
    assert not offences, "imports against the layer order:\n" + "\n".join(offences)


def test_known_exceptions_still_exist():
    present = {(module_name(p), target) for p in PACKAGE.rglob("*.py") for _, target in imports_of(p)}
    stale = [pair for pair in KNOWN_EXCEPTIONS if pair not in present]
    assert not stale, f"these imports are gone: remove them from KNOWN_EXCEPTIONS: {stale}"


@pytest.mark.parametrize("statement", [
    "from nhllib.plots import default_output_dir",  # module level, absolute
    "def f():\n    from nhllib import study\n",  # function level, `from package import module`
    "def f():\n    import nhllib.plots\n",  # function level, plain import
])
def test_the_check_names_an_upward_import(statement):
    """A core module importing from a higher layer fails, naming the file, the line and both layers."""
    import nhllib.core.losses as core_package

    probe = Path(core_package.__file__).parent / "_layer_probe_tmp.py"
    probe.write_text(statement)
    try:
        offences = [o for o in upward_imports() if "_layer_probe_tmp" in o]
    finally:
        probe.unlink()
    assert len(offences) == 1 and "(core) imports" in offences[0] and "_layer_probe_tmp.py:" in offences[0]
