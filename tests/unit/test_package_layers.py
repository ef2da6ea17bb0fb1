"""The shipped package's layers: every import points down, and nothing imports in a cycle.

Layers, top to bottom (kv_sync/__init__.py): entry; the engine; source, transform
and sink, which never import each other; leaves. Imports inside functions and
type-only imports count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lambda_function" / "kv_sync"

# module -> (layer rank, group). A module may import a lower rank, or its own group.
LAYERS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(("handler", "events", "replies"), (3, "entry")),
    **dict.fromkeys(("engine", "pages", "plan", "cursor"), (2, "engine")),
    **dict.fromkeys(
        ("source", "cloudflare", "cloudflare_replies", "credentials", "ratelimit"), (1, "source")
    ),
    "records": (1, "transform"),
    **dict.fromkeys(("store", "ledger"), (1, "sink")),
    **dict.fromkeys(
        ("model", "errors", "settings", "runtime", "observability", "tracing", "redaction"),
        (0, "leaves"),
    ),
}


def package_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, anywhere in it."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            continue
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # "from kv_sync import x" names modules; "from kv_sync.x import y" names one.
                if node.module == "kv_sync":
                    names = [f"kv_sync.{alias.name}" for alias in node.names]
                else:
                    names = [node.module]
            else:
                continue
            imported |= {name.split(".")[1] for name in names if name.startswith("kv_sync.")}
        graph[path.stem] = imported - {path.stem}
    return graph


GRAPH = package_imports()


def test_every_module_has_a_layer() -> None:
    # GIVEN the modules of the package WHEN each is looked up THEN each has its place
    assert sorted(set(GRAPH) - set(LAYERS)) == []
    assert sorted(set(LAYERS) - set(GRAPH)) == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    # GIVEN a module's imports, type-only and function-local ones included
    rank, group = LAYERS[module]
    # WHEN each is compared with the module's own layer
    upward = [
        name
        for name in sorted(GRAPH[module])
        if not (LAYERS[name][0] < rank or LAYERS[name][1] == group)
    ]
    # THEN none points up, and source, transform and sink never import each other
    assert upward == [], f"{module} ({group}) imports {upward}"


def test_no_import_cycles() -> None:
    # GIVEN the import graph WHEN it is walked depth first THEN no module reaches itself
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for name in sorted(GRAPH[module]):
            if name in path:
                cycles.append([*path[path.index(name) :], name])
            elif len(path) < len(GRAPH):
                visit(name, [*path, name])

    for start in sorted(GRAPH):
        visit(start, [start])
    assert cycles == []


def test_no_generic_top_level_modules_ship() -> None:
    # GIVEN what build_lambda.sh copies WHEN lambda_function/ is listed
    shipped = sorted(
        p.name for p in PACKAGE.parent.iterdir() if p.name != "__pycache__" and p.name[0] != "."
    )
    # THEN only the one package is there, so nothing else on sys.path can shadow it
    assert shipped == ["kv_sync"]
