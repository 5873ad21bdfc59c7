"""The package's shape: each stage imports only from the stages below it."""

import ast
from pathlib import Path

import competition

# Lowest first. A module may import from its own stage and any stage before it.
STAGES = [
    "errors",
    "io",
    "progress",
    "distributed",
    "data",
    "models",
    "runs",
    "evaluate",
    "report",
    "augment",
    "retrieval",
    "train",
    "sweep",
    "pipeline",
    "cli",
]


def stage_of(module: str) -> str:
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("competition."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("competition."))
    return found


def test_no_stage_imports_from_a_stage_above_it():
    root = Path(competition.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == root:
            continue
        relative = path.relative_to(root).with_suffix("")
        own = relative.parts[0]
        assert own in STAGES, f"{relative}: a stage the architecture test does not know; add it to STAGES"
        for imported in imports_of(path):
            if STAGES.index(stage_of(imported)) > STAGES.index(own):
                upward.append(f"{relative} imports {imported}")
    assert upward == []
