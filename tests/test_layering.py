"""Import layering: every import in the package (module level, function level and type-checking
alike, read with ``ast``) goes to the module's own layer or one below it."""

import ast
from pathlib import Path

import pytest

import adios

PACKAGE = Path(adios.__file__).parent
# lowest first; a module belongs to the layer of its longest listed prefix
LAYERS = [
    ["adios.errors", "adios.config_data"],
    ["adios.config"],
    ["adios.perf", "adios.runlog", "adios.checkpoint", "adios.rundir", "adios.optim",
     "adios.viz"],
    ["adios.data"],
    ["adios.models"],
    ["adios.objectives"],
    ["adios.distributed"],
    ["adios.masking"],
    ["adios.evaluation"],
    ["adios.api"],  # the public API: models that describe themselves, the ADIOS parts
    ["adios.engine"],
    ["adios.train"],
    ["adios.bench", "adios.bench_step", "adios.compare"],  # the commands that train
    ["adios.reference"],  # the paper presets beside the reference scripts (docs/presets.md)
    ["adios.cli"],
]


def module_name(path: Path) -> str:
    parts = ("adios", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int | None:
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    return max(matches)[1] if matches else None


def imports(path: Path) -> set[str]:
    """The adios modules ``path`` imports (``from adios import x`` counts as adios.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if node.module == "adios"}
    return {name for name in found if name.split(".")[0] == "adios" and name != "adios"}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}


def test_every_module_has_a_layer():
    assert [name for name in MODULES if layer(name) is None] == []
    assert imports(PACKAGE / "__init__.py") == set()  # the package itself sits below everything


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_from_a_layer_above(name):
    own = layer(name)
    above = sorted(t for t in imports(MODULES[name]) if (layer(t) or 0) > own)
    assert above == [], f"{name} (layer {own}) imports {above}"


def test_the_checker_sees_a_back_edge(tmp_path):
    """The walk finds imports at any depth, so a violation cannot hide in a function."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from adios.train import train\n    import adios.engine\n")
    assert imports(source) == {"adios.train", "adios.engine"}
    assert layer("adios.train") > layer("adios.evaluation.commands")
    assert layer("adios.data.scenes") > layer("adios.config")
