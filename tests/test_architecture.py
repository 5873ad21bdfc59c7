"""The package's shape: each stage imports only from the stages below it, no module takes part
in an import circle, and no file, function or class grows past what a reader takes in at once."""

import ast
import re
from pathlib import Path

import competition

# Lowest first. A module may import from its own stage and any stage before it.
STAGES = [
    "requirements",  # what this Python must have: runs before anything else of compete imports
    "errors",
    "io",
    "settings",
    "runs",
    "progress",
    "tracking",
    "device",
    "distributed",
    "data",
    "models",
    "evaluate",
    "report",
    "augment",
    "retrieval",
    "train",
    "submit",
    "sweep",
    "pipeline",
    "cli",
]
ROOT = Path(competition.__file__).parent
MOST_LINES = {"file": 400, "function": 80, "class": 150}


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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the competition modules it imports}, lazy imports included; `from package import
    module` counts as importing that module."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("competition"):
                named = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
                edges |= named or {node.module}
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.startswith("competition")}
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of a graph: Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere():
    assert circles(import_graph()) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # it finds one


def test_files_functions_and_classes_stay_short():
    too_long = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MOST_LINES["file"]:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            kind = (
                "class" if isinstance(node, ast.ClassDef) else "function" if isinstance(node, ast.FunctionDef) else ""
            )
            if kind and node.end_lineno - node.lineno + 1 > MOST_LINES[kind]:
                too_long.append(
                    f"{path.relative_to(ROOT)}: {kind} {node.name}, {node.end_lineno - node.lineno + 1} lines"
                )
    assert too_long == []


def test_no_format_re_ranking_or_pooling_is_told_apart_by_its_name():
    """Each is a record in its table (evaluate/formats.FORMATS, retrieval/rerank.RERANKINGS,
    models/pooling.POOLINGS); code asks the record what it does, so a new one is one record, not a
    branch in every caller."""
    from typing import get_args

    from competition.settings.choices import Format, Pooling, ReRanking

    kinds = (*get_args(Format), *get_args(ReRanking), *get_args(Pooling))
    names = "|".join(re.escape(name) for name in kinds if name != "off")
    compared = re.compile(rf"""(==|!=|\bin\b)\s*[(\[{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    told = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if compared.search(line)
    ]
    assert told == []
    assert compared.search('if fmt == "kaggle":') and compared.search('fmt in ("kaggle", "json")')  # it finds one


def test_no_run_file_name_is_spelled_outside_runs_py():
    """A run folder's files are named once, in runs.py: a second spelling would drift from it."""
    from competition import runs

    names = {value for value in vars(runs).values() if isinstance(value, str) and "." in value and "/" not in value}
    assert {"best.pt", "summary.json", "config.json"} <= names
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "runs.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert spelled == []


def test_no_verdict_or_fallback_reason_is_spelled_outside_its_enum():
    """Validation's verdicts (runs.Verdict) and the guard's reasons (submit/models.FellBack) are
    shown as words but decided on as members: a second spelling of the words would be a display
    string compared, which a rewording would silently break."""
    from competition.runs import Verdict
    from competition.submit.models import FellBack

    words = {member.value for enum in (Verdict, FellBack) for member in enum if member.value}

    def spellings(tree: ast.AST) -> list[int]:
        inside_enums = {
            id(node)
            for cls in ast.walk(tree)
            if isinstance(cls, ast.ClassDef) and cls.name in ("Verdict", "FellBack")
            for node in ast.walk(cls)
        }
        return [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in words and id(node) not in inside_enums
        ]

    spelled = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        for line in spellings(ast.parse(path.read_text()))
    ]
    assert spelled == []
    assert spellings(ast.parse('if verdict == "better":\n    pass')) == [1]  # it finds one
