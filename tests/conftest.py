"""Generic test configuration: import path, the shared fixture plugin, the `integration` marker.

Every test under `tests/integration/` and `tests/e2e/` is marked `integration` automatically,
so `pytest -m "not integration"` runs only what needs no real Kafka or Redis. The
fixtures for those services live in `tests/fixtures_services.py` (see its docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# `--import-mode=importlib` leaves sys.path alone, so without an installed package
# (`pip install -e .`) the project's top-level packages would not import. Putting the
# repository root first is what pytest's `pythonpath = ["."]` setting would do.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.fixtures_services", "tests.fixtures_cluster"]

INTEGRATION_DIRS = ("integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = ROOT / "tests"
    for item in items:
        try:
            relative = item.path.resolve().relative_to(tests_dir)
        except ValueError:
            continue
        if relative.parts and relative.parts[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)
