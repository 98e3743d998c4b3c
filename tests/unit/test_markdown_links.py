"""No link in any Markdown file leaves the repository, and every relative link resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# [text](target) and <scheme://...> autolinks; code spans and fenced blocks are left out.
INLINE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>]+)>")
BARE_URL = re.compile(r"(?<![(<\w])(?:https?|ftp)://[^\s)>\]]+")


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _prose(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    prose = _prose(text)
    found = INLINE.findall(prose) + REFERENCE.findall(prose) + AUTOLINK.findall(prose)
    # A relative path in a code span that climbs out of its folder is a pointer too.
    spans = [m for span in re.findall(r"`([^`\n]*)`", text) for m in re.findall(r"\.\./\S+", span)]
    return found + BARE_URL.findall(prose) + spans


def test_no_markdown_link_leaves_the_repository() -> None:
    problems = []
    files = markdown_files()
    assert len(files) > 5
    for path in files:
        for target in links(path):
            where = f"{path.relative_to(ROOT)}: {target}"
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                problems.append(f"{where} (leaves the repository)")
                continue
            if target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{where} (points outside the repository)")
            elif not resolved.exists():
                problems.append(f"{where} (does not exist)")
    assert not problems, "\n".join(problems)
