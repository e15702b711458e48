"""The layer rule of docs/design.md, checked on the source: imports point downwards only.

``domain/`` and ``quality/`` are pure: besides each other they import no Truthset module and no
database, web or file-format library. ``api/`` and ``cli/`` are thin: they import no SQLAlchemy
(queries live in ``store/`` or a service; database errors, the session type and cursor pages are
named by ``store/``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "truthset"

#: Layer of each top-level module (0 = domain ... 3 = interfaces), as drawn in docs/design.md.
LAYER = {
    "domain": 0,
    "store": 1, "audit": 1, "imaging": 1, "quality": 1, "io": 1, "auth": 1,
    "workspace": 2, "workflow": 2, "release": 2, "prelabel": 2, "jobs": 2,
    "demo": 2, "demo_web": 2,
    "api": 3, "cli": 3,
}
PURE = {"domain", "quality"}
#: Interfaces: parse, authorise, call a service, format. No queries, so no SQL library.
THIN = {"api", "cli"}
IMPURE_LIBRARIES = {"sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "httpx",
                    "pydicom", "nibabel", "fsspec", "typer", "rich", "psycopg"}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0].removesuffix(".py") in LAYER)


def test_every_top_level_module_has_a_layer() -> None:
    tops = {p.name.removesuffix(".py") for p in ROOT.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists())
            or (p.suffix == ".py" and p.name != "__init__.py")}
    assert tops - {"web_dist"} <= set(LAYER), sorted(tops - set(LAYER))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downwards(path: Path) -> None:
    top = path.relative_to(ROOT).parts[0].removesuffix(".py")
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "truthset" and len(parts) > 1 and parts[1] in LAYER:
            assert LAYER[parts[1]] <= LAYER[top], f"{top} imports the higher layer {name}"
            if top in PURE:
                assert parts[1] in PURE, f"pure {top} imports {name}"
        if top in PURE:
            assert parts[0] not in IMPURE_LIBRARIES, f"pure {top} imports {name}"
        if top in THIN:
            assert parts[0] != "sqlalchemy", (
                f"{top} imports {name}: queries belong in store/ or a service")
