"""Reading a model's message content as a tip: structured JSON first, a plain sentence last.

Contract (`read_tip`), in this order:

1. The content (after one surrounding Markdown code fence, if any) is a JSON value: it must be
   an object with a non-empty string `text` (at most `MAX_TIP_CHARS`) and `kind` in
   {"advice", "todo"}; anything else is garbage (the model answered in structure, wrongly).
2. Else the first JSON object inside the prose (or inside a code fence in it) that is such a
   tip is the tip.
3. Else, when the content holds no JSON object at all, the text itself is the tip, of kind
   `advice`: Markdown fences, emphasis and wrapping quotes are dropped, whitespace collapsed,
   and it is cut to `MAX_PLAIN_CHARS` at the last sentence end (else the last word, with an
   ellipsis). It must hold at least `MIN_LETTERS` letters.

Anything else raises `AnswerError` whose message says what was wrong. Pure: no I/O, no logging
of content. Bounded: at most `MAX_JSON_PROBES` embedded objects are tried.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

TipKind = Literal["advice", "todo"]
TIP_KINDS: frozenset[str] = frozenset({"advice", "todo"})
PLAIN_KIND: TipKind = "advice"
MAX_TIP_CHARS = 600
"""A JSON tip's `text` longer than this is refused (the prompt asks for under 200)."""
MAX_PLAIN_CHARS = 280
"""A plain-text answer is cut to this many characters."""
MIN_LETTERS = 2
MAX_JSON_PROBES = 64

_WHOLE_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?\s*```$", re.DOTALL)
_ANY_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_SENTENCE_END = re.compile(r"[.!?…](?=[\"')\]]*(\s|$))")
_STRIP_CHARS = " \t\r\n\"'`*_#>-\u201c\u201d\u2018\u2019"

TIP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "The tip, at most two sentences."},
        "kind": {"type": "string", "enum": sorted(TIP_KINDS)},
    },
    "required": ["text", "kind"],
    "additionalProperties": False,
}
"""The JSON schema of a tip, sent as `response_format` (OpenAI, LiteLLM, vLLM, Ollama)."""

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "tip", "strict": True, "schema": TIP_SCHEMA},
}


class AnswerError(ValueError):
    """The content holds no usable tip; the message says why."""


@dataclass(frozen=True, slots=True)
class ReadTip:
    text: str
    kind: TipKind
    form: Literal["json", "embedded_json", "plain"]
    """How it was read: the whole content, an object inside prose, or the plain text."""


def _tip_of(value: Any) -> tuple[str, TipKind]:
    if not isinstance(value, dict):
        raise AnswerError(
            f"expected a JSON object with 'text' and 'kind'; got {type(value).__name__}"
        )
    text, kind = value.get("text"), value.get("kind")
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("'text' must be a non-empty string")
    if len(text) > MAX_TIP_CHARS:
        raise AnswerError(f"'text' is longer than {MAX_TIP_CHARS} characters ({len(text)})")
    if kind not in TIP_KINDS:
        raise AnswerError(f"'kind' must be one of {sorted(TIP_KINDS)}; got {kind!r}")
    return " ".join(text.split()), kind


def _embedded_objects(content: str) -> list[Any]:
    """JSON objects found inside `content`, in order (at most `MAX_JSON_PROBES` starts tried)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    start = content.find("{")
    probes = 0
    while start != -1 and probes < MAX_JSON_PROBES:
        probes += 1
        try:
            value, end = decoder.raw_decode(content, start)
        except ValueError:
            start = content.find("{", start + 1)
            continue
        found.append(value)
        start = content.find("{", end)
    return found


def bound_plain(text: str, limit: int = MAX_PLAIN_CHARS) -> str:
    """`text` with whitespace collapsed, cut to `limit` at a sentence end (else a word + '…').

    >>> bound_plain("  Close the two   oldest tasks.  ")
    'Close the two oldest tasks.'
    >>> bound_plain("One. Two three four.", limit=12)
    'One.'
    >>> bound_plain("abcdef ghijkl", limit=10)
    'abcdef…'
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends:
        return head[: ends[-1]].rstrip()
    cut = head[: limit - 1].rsplit(" ", 1)[0] if " " in head[: limit - 1] else head[: limit - 1]
    return cut.rstrip(" ,;:-") + "…"


def _plain(content: str) -> str:
    text = _ANY_FENCE.sub(" ", content).strip(_STRIP_CHARS)
    text = bound_plain(text).strip(_STRIP_CHARS.replace(".", ""))
    letters = sum(ch.isalpha() for ch in text)
    if letters < MIN_LETTERS:
        raise AnswerError(f"no usable sentence (at least {MIN_LETTERS} letters expected)")
    # Emphasis markers inside the sentence are Markdown, not part of the tip.
    return " ".join(text.replace("**", "").split())


def read_tip(content: str) -> ReadTip:
    """The tip in a model's message `content`; `AnswerError` when there is none (see module).

    >>> read_tip('{"text": "Walk.", "kind": "advice"}')
    ReadTip(text='Walk.', kind='advice', form='json')
    >>> read_tip('Here you go: {"text": "File it.", "kind": "todo"} Enjoy!')
    ReadTip(text='File it.', kind='todo', form='embedded_json')
    >>> read_tip('"Close the two oldest overdue tasks before lunch."')
    ReadTip(text='Close the two oldest overdue tasks before lunch.', kind='advice', form='plain')
    """
    stripped = content.strip()
    if not stripped:
        raise AnswerError("the message content is empty")
    fenced = _WHOLE_FENCE.match(stripped)
    inner = fenced.group(1).strip() if fenced else stripped
    try:
        whole = json.loads(inner)
    except ValueError:
        pass
    else:
        if isinstance(whole, (dict, list)):
            text, kind = _tip_of(whole)
            return ReadTip(text, kind, "json")
    objects = _embedded_objects(stripped)
    problems: list[str] = []
    for value in objects:
        try:
            text, kind = _tip_of(value)
        except AnswerError as exc:
            problems.append(str(exc))
            continue
        return ReadTip(text, kind, "embedded_json")
    if objects:
        raise AnswerError(f"the JSON in the message is not a tip: {problems[0]}")
    if inner.startswith(("{", "[")):
        raise AnswerError("the message content starts as JSON but does not parse")
    return ReadTip(_plain(inner), PLAIN_KIND, "plain")
