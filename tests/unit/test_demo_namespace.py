"""The demo's own namespace on real services (`oo_features.demo.demo_namespace`)."""

from __future__ import annotations

import time

import pytest

from oo_features.demo import demo_namespace


def test_two_runs_in_the_same_second_get_different_namespaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "strftime", lambda fmt, *rest: "20260102030405")
    first, second = demo_namespace("oo", "t."), demo_namespace("oo", "t.")
    assert first != second
    for keys, topics in (first, second):
        assert keys.startswith("oo-demo-20260102030405-") and ":" not in keys
        assert topics.startswith("t.demo-20260102030405-") and topics.endswith(".")
        assert topics[len("t.") : -1] == keys[len("oo-") :]
