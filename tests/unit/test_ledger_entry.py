"""`LedgerEntry.encoded`: the stored JSON, written once, spliced where the params text is known."""

from __future__ import annotations

import json

import pytest

from connectors.store.base import dumps_compact
from connectors.store.ledger import LedgerAgent, LedgerEntry

PARAMS = {"p": {"value": [1.5, None, "é"], "source": "inferred"}, "q": {"value": float("nan")}}


def _entry(*, fallback: str | None, spliced: bool) -> LedgerEntry:
    params_json = dumps_compact(PARAMS) if spliced else None
    return LedgerEntry(
        tip_id="t1",
        user_id="u1",
        shown_at_ms=1_750_000_000_000,
        text='He said "go" — now.',
        kind="advice",
        agents=[
            LedgerAgent("mood", "1.0.0", PARAMS, 'Walk "slowly".', params_json=params_json),
            LedgerAgent("focus", "2.0.0", {}, None, params_json="{}" if spliced else None),
        ],
        fallback_reason=fallback,
        prompt_version=None if fallback else "v4",
        model=None,
        orchestrator_latency_ms=None if fallback else 3.25,
    )


@pytest.mark.parametrize("fallback", [None, "timeout"])
@pytest.mark.parametrize("spliced", [False, True])
def test_the_encoded_entry_is_what_encoding_its_parts_writes(
    fallback: str | None, spliced: bool
) -> None:
    """Byte for byte `dumps_compact` of `header()` and of each agent's `values()`, in order,
    whether the params are encoded or their stored text spliced (ADR 0046)."""
    e = _entry(fallback=fallback, spliced=spliced)
    header, values = e.encoded()
    assert header == dumps_compact(e.header())
    assert values == [(aid, dumps_compact(v)) for aid, v in e.values().items()]
    assert ("tip_text" in json.loads(values[0][1])) is (fallback is not None)
    assert e.encoded() is e.encoded()  # worked out once


def test_the_stored_params_text_does_not_take_part_in_equality() -> None:
    assert _entry(fallback=None, spliced=True) == _entry(fallback=None, spliced=False)
