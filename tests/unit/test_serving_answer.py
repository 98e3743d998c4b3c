"""Reading a model's message content as a tip (`serving.answer.read_tip`): every way a real
model answers, and what is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.answer import (
    MAX_PLAIN_CHARS,
    MAX_TIP_CHARS,
    AnswerError,
    ReadTip,
    bound_plain,
    read_tip,
)

TIP = {"text": "Close the report.", "kind": "todo"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps(TIP), ReadTip("Close the report.", "todo", "json")),
        (f"```json\n{json.dumps(TIP)}\n```", ReadTip("Close the report.", "todo", "json")),
        (f"```\n{json.dumps(TIP)}\n```", ReadTip("Close the report.", "todo", "json")),
        (
            f"Here is a tip for you:\n\n```json\n{json.dumps(TIP)}\n```\nHope it helps.",
            ReadTip("Close the report.", "todo", "embedded_json"),
        ),
        (
            f"Sure. {{not json}} then {json.dumps(TIP)} and {{}}",
            ReadTip("Close the report.", "todo", "embedded_json"),
        ),
        (
            "Close the two oldest overdue tasks before lunch.",
            ReadTip("Close the two oldest overdue tasks before lunch.", "advice", "plain"),
        ),
        (
            '  **"You did 6 tasks today;   take a   break."**  ',
            ReadTip("You did 6 tasks today; take a break.", "advice", "plain"),
        ),
        (
            "```\nTake a walk after lunch.\n```",
            ReadTip("Take a walk after lunch.", "advice", "plain"),
        ),
        (
            '{"text": "  Breathe\\n deeply. ", "kind": "advice", "extra": 1}',
            ReadTip("Breathe deeply.", "advice", "json"),
        ),
    ],
)
def test_every_way_a_model_answers_is_read(content: str, expected: ReadTip) -> None:
    assert read_tip(content) == expected


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("...", "no usable sentence"),
        ("```\n```", "no usable sentence"),
        ("[1, 2]", "expected a JSON object"),
        ('"just a json string"', None),
        ('{"answer": null}', "'text' must be a non-empty string"),
        ('{"text": "Go.", "kind": "command"}', "'kind' must be one of"),
        (json.dumps({"text": "x" * (MAX_TIP_CHARS + 1), "kind": "todo"}), "longer than"),
        ('Here: {"text": 5, "kind": "todo"}', "the JSON in the message is not a tip"),
        ('{"text": "unfinished', "starts as JSON but does not parse"),
    ],
)
def test_no_usable_tip_is_an_error_that_says_why(content: str, why: str | None) -> None:
    if why is None:  # a JSON string is a sentence in quotes: read as plain text
        assert read_tip(content) == ReadTip("just a json string", "advice", "plain")
        return
    with pytest.raises(AnswerError, match=why):
        read_tip(content)


def test_a_long_plain_answer_is_cut_at_a_sentence_end() -> None:
    sentence = "Finish the overdue report before your ten o'clock meeting. "
    got = read_tip(sentence * 20)
    assert got.form == "plain"
    assert len(got.text) <= MAX_PLAIN_CHARS
    assert got.text.endswith("meeting.")
    assert got.text.startswith("Finish the overdue report")


def test_a_long_plain_answer_without_sentence_ends_is_cut_at_a_word() -> None:
    got = read_tip("word " * 200)
    assert len(got.text) <= MAX_PLAIN_CHARS
    assert got.text.endswith("word…")


@given(st.text(max_size=2000))
def test_any_content_is_either_a_bounded_tip_or_an_answer_error(content: str) -> None:
    try:
        tip = read_tip(content)
    except AnswerError:
        return
    assert tip.text == tip.text.strip() and tip.text
    assert tip.kind in ("advice", "todo")
    limit = MAX_PLAIN_CHARS if tip.form == "plain" else MAX_TIP_CHARS
    assert len(tip.text) <= limit


@given(st.text(min_size=1, max_size=600))
def test_bound_plain_never_exceeds_the_limit(text: str) -> None:
    assert len(bound_plain(text, limit=50)) <= 50
