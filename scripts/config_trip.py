"""How far a command's whole settings travel: from the command's entry point, follow every call
that hands its settings object on (or an object that holds it, such as train's `Run`), and
count the trip.

    python scripts/config_trip.py                       # submit and train, this checkout
    python scripts/config_trip.py --root OTHER/competition --show

Read from the source with `ast`, nothing imported. A function receives the settings when one of
its parameters is annotated with the command's settings class (or a class it extends or that
extends it), or with a class that holds them (a field or `self.config` of that type: a holder).
A step is a call site, reachable from the entry point through such functions (and every method
of a class made with them), whose callee (a function, method or class of the package) receives
them; each call site counts once. Modules:
those the callees live in. Climbs: steps, in reading order (depth first, calls in source order),
whose callee lives in a higher stage of the package (tests/test_architecture.STAGES) than the
previous step's callee: where a reader of the trip goes back up.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_architecture import STAGES  # noqa: E402

ENTRIES = {
    "submit": ("competition.submit.run.submit", {"SubmitConfig", "EmbeddingConfig"}),
    "train": ("competition.train.loop.train", {"TrainConfig"}),
}


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _names(annotation: ast.AST | None) -> set[str]:
    """The class names an annotation mentions (`list[Run] | None` -> {list, Run, None})."""
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return set()
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(annotation) if isinstance(n, ast.Attribute)
    }


class Package:
    def __init__(self, root: Path):
        self.functions: dict[str, ast.AST] = {}  # qualified name -> def
        self.classes: dict[str, ast.ClassDef] = {}
        self.scopes: dict[str, dict[str, str]] = {}  # module -> local name -> qualified name
        for path in sorted(root.rglob("*.py")):
            module = _module_name(root, path)
            tree = ast.parse(path.read_text())
            scope = {}
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions[f"{module}.{node.name}"] = node
                elif isinstance(node, ast.ClassDef):
                    self.classes[f"{module}.{node.name}"] = node
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.functions[f"{module}.{node.name}.{item.name}"] = item
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    scope[node.name] = f"{module}.{node.name}"
            for node in ast.walk(tree):  # lazy imports inside functions count too
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("competition"):
                    for alias in node.names:
                        scope.setdefault(alias.asname or alias.name, f"{node.module}.{alias.name}")
            self.scopes[module] = scope

    def holders(self, settings: set[str]) -> set[str]:
        """The settings classes and the classes that hold one, by short name, to a fixed point."""
        held = set(settings)
        for name, node in self.classes.items():  # classes that extend a settings class
            if {getattr(b, "id", "") for b in node.bases} & settings:
                held.add(name.rsplit(".", 1)[1])
        while True:
            more = {
                name.rsplit(".", 1)[1]
                for name, node in self.classes.items()
                for item in ast.walk(node)
                if isinstance(item, (ast.AnnAssign, ast.arg)) and _names(item.annotation) & held
            } - held
            if not more:
                return held
            held |= more

    def receives(self, qualified: str, held: set[str]) -> bool:
        node = self.functions.get(qualified)
        if node is None:
            return False
        arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        return any(_names(a.annotation) & held for a in arguments)


def _module_of(qualified: str) -> str:
    return ".".join(p for p in qualified.split(".") if not p[:1].isupper()).rsplit(".", 1)[0]


def trip(root: Path, command: str) -> list[str]:
    """The callees of every step, in reading order."""
    entry, settings = ENTRIES[command]
    package = Package(root)
    held = package.holders(settings)
    steps, read, counted = [], set(), set()

    def callee(call: ast.Call, module: str, owner: str | None) -> str | None:
        func, scope = call.func, package.scopes.get(module, {})
        if isinstance(func, ast.Name):
            target = scope.get(func.id)
        elif isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "self" and owner:
            target = f"{owner}.{func.attr}"
        else:
            return None
        if target in package.classes:
            target = f"{target}.__init__" if f"{target}.__init__" in package.functions else target
        return target if target in package.functions or target in package.classes else None

    def visit(name: str) -> None:
        read.add(name)
        module = _module_of(name)
        owner = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in package.classes else None
        node = package.functions.get(name)
        if node is None:
            return
        calls = sorted((n for n in ast.walk(node) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
        for call in calls:
            target = callee(call, module, owner)
            if target is None or (name, call.lineno, call.col_offset) in counted:
                continue
            klass = target in package.classes or target.endswith(".__init__")
            annotated = klass and {*_names_of_fields(package.classes.get(target.removesuffix(".__init__")))} & held
            if not (package.receives(target, held) or annotated):
                continue
            counted.add((name, call.lineno, call.col_offset))
            steps.append(target)
            if target not in read:
                visit(target)
            if klass:  # the object keeps them: its methods hand them on from `self`
                for method in [f for f in package.functions if f.startswith(f"{target.removesuffix('.__init__')}.")]:
                    if method not in read:
                        visit(method)

    visit(entry)
    return steps


def _names_of_fields(node: ast.ClassDef | None) -> set[str]:
    if node is None:
        return set()
    return {n for item in node.body if isinstance(item, ast.AnnAssign) for n in _names(item.annotation)}


def measure(root: Path, command: str) -> dict:
    steps = trip(root, command)
    stage = [STAGES.index(s.split(".")[1]) for s in steps]
    climbs = sum(b > a for a, b in zip(stage, stage[1:]))
    return {"steps": len(steps), "modules": len({_module_of(s) for s in steps}), "climbs": climbs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "competition")
    parser.add_argument("--show", action="store_true", help="List the steps.")
    args = parser.parse_args()
    for command in ENTRIES:
        print(f"{command}: {measure(args.root, command)}")
        if args.show:
            for step in trip(args.root, command):
                print("   ", step)


if __name__ == "__main__":
    main()
