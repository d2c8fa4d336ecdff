"""Every relative link in README.md and docs/ leads somewhere that is shipped.

A link to a file that is not in the repository (or to a heading that was renamed) sends a new
user nowhere. Checked here: inline links ``[text](target)`` and reference definitions
``[name]: target`` outside code, the ``#anchor`` of a link against the target file's headings
(GitHub's slugs), and files named in code spans (`` `naming.md` ``), which read like a pointer
even when they are not links. And every ``configure()`` setting has its own row in docs/api.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from chainsight.config.settings import NAMES

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_MD_IN_CODE = re.compile(r"^[\w./-]+\.md$")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def _without_fences(text: str) -> str:
    return _FENCE.sub("", text)


def _prose(text: str) -> str:
    """The text outside fenced blocks and code spans: where a link is a link."""
    return _CODE_SPAN.sub("", _without_fences(text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in _HEADING.finditer(_without_fences(path.read_text(encoding="utf-8"))):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> Iterator[str]:
    """The link targets of a Markdown file, outside code."""
    prose = _prose(path.read_text(encoding="utf-8"))
    for match in _INLINE_LINK.finditer(prose):
        yield match.group(1)
    for match in _REFERENCE.finditer(prose):
        yield match.group(1)


def broken_links(path: Path) -> list[str]:
    """What is wrong with each relative link of ``path`` (empty when every one resolves)."""
    problems: list[str] = []
    for target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def missing_named_files(path: Path) -> list[str]:
    """Markdown files named in code spans (`` `naming.md` ``) that are nowhere to be found."""
    problems: list[str] = []
    for match in _CODE_SPAN.finditer(_without_fences(path.read_text(encoding="utf-8"))):
        name = match.group(2).strip()
        if not _MD_IN_CODE.match(name):
            continue
        bases = (path.parent, ROOT, ROOT / "docs")
        if not any((base / name).exists() for base in bases):
            problems.append(f"`{name}` is not a file of the repository")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_markdown_file_named_in_code_is_shipped(path: Path) -> None:
    assert missing_named_files(path) == []


def test_the_checker_catches_a_missing_file_and_a_wrong_anchor(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    (tmp_path / "other.md").write_text("# A `code` heading, with punctuation!\n", encoding="utf-8")
    doc.write_text(
        "# Top\n\n[ok](other.md#a-code-heading-with-punctuation) [self](#top) "
        "[web](https://example.com/x.md)\n[gone](naming.md) [bad](other.md#nope)\n"
        "```\n[in a fence](nowhere.md)\n```\n`[in code](nowhere.md)`\n",
        encoding="utf-8",
    )
    assert [problem.split(":")[0] for problem in broken_links(doc)] == [
        "naming.md",
        "other.md#nope",
    ]
    doc.write_text("see `naming.md` and `other.md`\n", encoding="utf-8")
    assert missing_named_files(doc) == ["`naming.md` is not a file of the repository"]


def test_every_configure_setting_has_its_own_row_in_the_api_doc() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## `configure(**settings)`", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert set(NAMES) - documented == set(), "settings without a row in docs/api.md"
    assert documented - set(NAMES) == set(), "rows in docs/api.md for settings that do not exist"
