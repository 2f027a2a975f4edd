"""Imports point one way (docs/ARCHITECTURE.md, "Layers"): no module imports a layer above its own, at any depth
of the code."""

import ast
from pathlib import Path

import cadence

#: rank of each top-level part of the package; a module may import only its own rank or lower ones
LAYERS = {
    "io": 0, "seeding": 0, "config": 0, "nn": 0, "logging": 0, "checkpoint": 0,
    "envs": 1, "replay": 1,
    "world_models": 2,
    "agents": 3, "curricula": 3, "evaluation": 3,
    "loops": 4,
    "recipes": 5, "run_folder": 5,
    "runs": 6, "collection": 6, "libero_demos": 6, "sweeps": 6, "report": 6, "schema": 6, "cli": 6, "__main__": 6,
}
ROOT = Path(cadence.__file__).parent


def part_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "cadence" and len(parts) > 1 else None


def upward_imports(root: Path) -> list[str]:
    """Every import in the package at ``root`` of a layer above the importing module's own."""
    upward = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYERS, f"{rel} is in no layer: add it to LAYERS"
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                target = part_of(name)
                if target is not None and LAYERS[target] > LAYERS[own]:
                    upward.append(f"{rel}:{node.lineno} imports {name}")
    return upward


def test_no_module_imports_upward():
    upward = upward_imports(ROOT)
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_check_finds_an_upward_import_inside_a_function(tmp_path):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "sac.py").write_text("def f():\n    from cadence.loops.online import train_online\n")
    (tmp_path / "envs.py").write_text("import cadence.replay\n")
    assert upward_imports(tmp_path) == ["agents/sac.py:2 imports cadence.loops.online"]
