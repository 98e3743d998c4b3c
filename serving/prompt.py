"""Orchestrator prompt assembly from a versioned template file.

Templates live in `serving/prompts/<version>.txt` and use `string.Template`
placeholders (`$snippets`, `$context`; a literal dollar is `$$`). A change of
wording is a new file and a new version, so a tip can always be traced to the
exact prompt that produced it. Nothing here does network I/O or logs content.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from serving.tips import FreshSnippet

PROMPT_VERSION = "v4-orchestrator"
NO_CONTEXT = "(not given)"


@lru_cache(maxsize=8)
def load_template(version: str = PROMPT_VERSION) -> string.Template:
    """The template of `version`; `FileNotFoundError` names the missing file."""
    path = resources.files("serving.prompts").joinpath(f"{version}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {version!r} (expected {path})")
    return string.Template(path.read_text(encoding="utf-8"))


def _one_line(text: str) -> str:
    # A snippet or context must not be able to start a line of its own in the prompt.
    return " ".join(text.split())


def assemble_prompt(
    snippets: Sequence[FreshSnippet], context: str | None, *, version: str = PROMPT_VERSION
) -> str:
    """The prompt for these snippets (in the given order) and the user's context.

    >>> s = FreshSnippet("momentum", "6 tasks done today.", None, 3600, 0)
    >>> print(assemble_prompt([s], None).split("Signals")[1].splitlines()[1])
    - [momentum] 6 tasks done today.
    """
    if not snippets:
        raise ValueError("a prompt needs at least one snippet")
    lines = "\n".join(f"- [{s.agent_id}] {_one_line(s.text)}" for s in snippets)
    situation = _one_line(context) if context and context.strip() else NO_CONTEXT
    return load_template(version).substitute(snippets=lines, context=situation)
