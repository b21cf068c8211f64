"""Data flows one way: a module imports only from its own stage or earlier ones."""

import ast
from pathlib import Path

import pytest

STAGES = ["data", "representations", "segmentation", "models", "training", "tuning", "analysis"]
FOUNDATION = {"config", "registry"}
PKG = Path(__file__).resolve().parents[1] / "cxrray"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cxrray"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("cxrray"))
    return names


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_import_direction(path):
    rel = path.relative_to(PKG)
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    for mod in _imports(path):
        target = _stage(mod)
        if target is None:
            continue
        if own in FOUNDATION or own == "__init__":
            assert target in FOUNDATION, f"{rel} (foundation) imports {mod}"
            continue
        if target in FOUNDATION:
            continue
        assert STAGES.index(target) <= STAGES.index(own), f"{rel} ({own}) imports later stage {mod}"


def test_pure_training_helpers_import_no_ray():
    for name in ("loop.py", "outputs.py", "fucitnet.py", "fucitnet_trial.py", "heads.py"):
        tree = ast.parse((PKG / "training" / name).read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.split(".")[0] == "ray" for m in mods), f"training/{name} imports Ray"


def test_every_stage_exists():
    assert all((PKG / s / "__init__.py").exists() for s in STAGES)
