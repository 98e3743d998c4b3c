"""Runs the examples in `serving`'s docstrings (pytest collects doctests only under `features/`)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import serving

MODULES = sorted(info.name for info in pkgutil.walk_packages(serving.__path__, prefix="serving."))


def test_public_modules_import() -> None:
    assert {"serving.app", "serving.settings", "serving.orchestrator", "serving.events"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
