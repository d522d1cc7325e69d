"""The layout rules of docs/design.md, read from the code's own imports (lazy ones included): imports
point one way (pipelines -> stage2_prior -> stage1_tokenizer), no import cycles, command-line modules
import no other command-line module, and nothing in the repository points outside it."""

import ast
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("stage1_tokenizer", "stage2_prior", "pipelines")
ORDER = {name: rank for rank, name in enumerate(PACKAGES)}  # a package may import those of lower rank


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    """The project modules `name` imports (a name imported from a package counts as its module)."""
    targets = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(part for part in (base, node.module or "") if part)
            candidates = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        targets |= {candidate for candidate in candidates if candidate in known and candidate != name}
    return targets


def graph():
    known = modules()
    return known, {name: imports_of(name, path, known) for name, path in known.items()}


def is_command(path: Path) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in ast.parse(path.read_text()).body)


def test_imports_point_one_way():
    _, edges = graph()
    wrong = [(a, b) for a, targets in edges.items() for b in targets if ORDER[b.split(".")[0]] > ORDER[a.split(".")[0]]]
    assert not wrong, wrong


def test_command_line_modules_import_no_other_command():
    known, edges = graph()
    commands = {name for name, path in known.items() if is_command(path)}
    assert {"stage1_tokenizer.train", "stage1_tokenizer.encode", "stage2_prior.train"} <= commands
    wrong = [(a, b) for a in commands for b in edges[a] if b in commands]
    assert not wrong, wrong


def test_no_import_cycles():
    """A package's __init__ re-exporting its own modules is no cycle; anything else is."""
    known, edges = graph()
    edges = {a: {b for b in targets if known[b].name != "__init__.py"} for a, targets in edges.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in edges[node]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_nothing_points_outside_the_repository():
    outside = "../" + "shared"
    skipped = {".git", ".venv", "outputs", "runs", "__pycache__", ".pytest_cache"}  # not ours, or not committed
    offenders = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [name for name in subfolders if name not in skipped]  # pruned, not walked then filtered
        for name in files:
            path = Path(folder) / name
            if path.suffix in (".py", ".md", ".yaml", ".toml", ".sh") and outside in path.read_text(errors="ignore"):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
