"""`connectors/` is I/O only (issue 14, ADR 0017): no module there imports the per-user state
(`features.state`) or the package that decides what to write (`flows`).

Walks every module of `connectors/` with `ast`, so an import inside a function, a relative
import or `import flows.x as y` are caught too, and a move back fails here by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONNECTORS = ROOT / "connectors"
FORBIDDEN = ("features.state", "flows")
"""Module prefixes connectors must not import: the fold and the writer's decisions."""


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path` (a module under `root`),
    `from x import y` as `x.y`."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's own package
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [
                (node.lineno, f"{base}.{alias.name}" if base else alias.name)
                for alias in node.names
            ]
    return found


def _forbidden(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN)


def test_no_connectors_module_imports_the_state_or_flows() -> None:
    modules = sorted(CONNECTORS.rglob("*.py"))
    assert len(modules) > 10, f"expected the connectors package under {CONNECTORS}"
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules
        for line, name in _imports(path)
        if _forbidden(name)
    ]
    assert not offenders, (
        "connectors/ is I/O only (ADR 0017); move what folds or decides what to write to "
        "flows/: " + "; ".join(offenders)
    )


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from features.state import UserState", "connectors/x.py", True),
        ("import flows.folding as f", "connectors/x.py", True),
        ("from flows import folding", "connectors/x.py", True),
        ("def f():\n    from features import state", "connectors/store/x.py", True),
        ("from features.model import Incoming", "connectors/x.py", False),
        ("from ..store import base", "connectors/store/x.py", False),
        ("import flowsy", "connectors/x.py", False),
    ],
)
def test_the_walk_sees_every_kind_of_import(
    tmp_path: Path, source: str, where: str, expected: bool
) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    names = [name for _, name in _imports(path, tmp_path)]
    assert any(_forbidden(name) for name in names) is expected, names
