"""The shape of the house (docs/design.md): arrows between subpackages go one way, and nothing grows too big.

    errors  <-  ir, quant, bundle          (import nothing else of the project)
            <-  export, targets            (use ir, quant, bundle)
            <-  compile                    (the pipeline on top of all of them)
            <-  runtime                    (uses only bundle: it ships without the exporter)
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("bundle", "compile", "export", "ir", "quant", "runtime", "targets")
ALLOWED = {
    "errors": set(),
    "ir": {"errors"},
    "quant": {"errors"},
    "bundle": {"errors"},
    "export": {"errors", "ir", "quant", "bundle"},
    "targets": {"errors", "ir", "quant", "bundle"},
    "compile": {"errors", "ir", "quant", "bundle", "export", "targets"},
    "runtime": {"errors", "bundle"},
}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 60


def project_files() -> dict[str, list[Path]]:
    """Component ("errors", "bundle", ...) -> its .py files."""
    files = {name: sorted((REPO / name).rglob("*.py")) for name in SUBPACKAGES}
    files["errors"] = [REPO / "errors.py"]
    return files


def _component(module: str) -> str | None:
    """`gptoss.bundle.names` -> "bundle"; `gptoss` itself (its __version__) -> None."""
    parts = module.split(".")
    if parts[0] != "gptoss" or len(parts) == 1:
        return None
    return parts[1]


def imported_components(path: Path) -> set[str]:
    """Every project component a file imports, at the top or lazily inside a function."""
    package = ["gptoss", *path.parent.relative_to(REPO).parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            modules = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {c for c in map(_component, modules) if c is not None}
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: set().union(*(imported_components(f) for f in files)) - {name}
            for name, files in project_files().items()}


def test_every_arrow_is_allowed():
    graph = import_graph()
    wrong = {name: sorted(deps - ALLOWED[name]) for name, deps in graph.items() if deps - ALLOWED[name]}
    assert wrong == {}, f"forbidden imports (component -> what it may not import): {wrong}"


def test_no_cycle_between_subpackages():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_the_checker_sees_forbidden_and_lazy_imports(tmp_path, monkeypatch):
    """The walker must catch a lazy import inside a function and a relative one, or the tests above prove nothing."""
    fake = REPO / "runtime" / "_probe_for_test.py"
    assert imported_components(REPO / "runtime" / "model.py") >= {"bundle"}
    source = "def f():\n    from gptoss.export import load_model\n    from ..targets import registry\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == fake else _read(self))
    assert imported_components(fake) == {"export", "targets"}


_read = Path.read_text


@pytest.mark.parametrize("folder", [*SUBPACKAGES, "tests", "bench", "packaging"])
def test_no_file_or_function_is_too_long(folder):
    too_long = []
    for path in sorted((REPO / folder).rglob("*.py")):
        if "build" in path.relative_to(REPO).parts:
            continue
        source = path.read_text()
        if source.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert too_long == []
