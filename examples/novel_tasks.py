"""Tasks of the novel_processing example (seed 003): split a novel, process each chapter, assemble.

The bundled novel is `examples/novel/lighthouse.txt`: a `# Title` line, then
chapters that start with `## Chapter N: Title`. `process_chapter` can play a
network blip (a `TransientError` on the first attempt of one chapter) and a
hang (the first attempt of one chapter outlasts the node's timeout), so the
pipeline's retry and timeout have something to do.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BUNDLED = Path(__file__).resolve().parent / "novel" / "lighthouse.txt"
HEADING = re.compile(r"^## Chapter (\d+): (.+)$", re.MULTILINE)
WORD = re.compile(r"[A-Za-z']+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "was",
        "were",
        "had",
        "has",
        "have",
        "her",
        "his",
        "she",
        "he",
        "it",
        "its",
        "they",
        "them",
        "their",
        "that",
        "this",
        "then",
        "than",
        "there",
        "as",
        "be",
        "been",
        "but",
        "not",
        "no",
        "all",
        "one",
        "out",
        "up",
        "down",
        "into",
        "over",
        "what",
        "when",
        "who",
        "why",
        "how",
        "said",
        "did",
        "would",
        "could",
        "so",
        "if",
        "or",
        "is",
        "are",
        "you",
        "your",
        "we",
        "our",
        "i",
        "my",
        "me",
        "across",
        "after",
        "again",
        "back",
        "before",
        "could",
        "every",
        "far",
        "further",
        "more",
        "most",
        "never",
        "once",
        "only",
        "same",
        "some",
        "still",
        "such",
        "very",
    ]
)
HANG_S = 60.0


class TransientError(RuntimeError):
    """Stands for a network blip: worth retrying."""


def split_chapters(path: str = "") -> dict[str, Any]:
    """Read the novel (`path`, or the bundled one when empty) and split it.

    Returns `title` and `chapters`: [{number, title, text}] in order. Raises
    ValueError when the file has no `## Chapter N: Title` heading."""
    text = (Path(path) if path else BUNDLED).read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    headings = list(HEADING.finditer(text))
    if not headings:
        raise ValueError(f"{path or BUNDLED}: no '## Chapter N: Title' heading")
    chapters = []
    for i, match in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        chapters.append(
            {
                "number": int(match.group(1)),
                "title": match.group(2).strip(),
                "text": text[match.end() : end].strip(),
            }
        )
    return {"title": first.lstrip("# ").strip(), "chapters": chapters}


def process_chapter(
    chapter: dict[str, Any], flaky_chapter: int, slow_chapter: int, ctx: Any
) -> dict[str, Any]:
    """Count the chapter's words and sentences, name its characters and keywords.

    On its first attempt, chapter `flaky_chapter` raises TransientError and
    chapter `slow_chapter` hangs for HANG_S seconds (0: neither). Returns
    {number, title, words, sentences, characters (named twice), names (every
    candidate name: its count), keywords, opening, attempt}."""
    number = chapter["number"]
    if ctx.attempt == 1 and number == flaky_chapter:
        raise TransientError(f"chapter {number}: the text service hung up (first attempt)")
    if ctx.attempt == 1 and number == slow_chapter:
        ctx.log(f"chapter {number}: first attempt hangs for {HANG_S:.0f}s")
        time.sleep(HANG_S)
    text: str = chapter["text"]
    words = WORD.findall(text)
    lower = {w for w in words if w.islower()}
    # A character: a capitalised word never written in lower case, seen twice.
    names = Counter(
        w for w in words if w.istitle() and w.lower() not in lower | STOPWORDS and len(w) > 1
    )
    keywords = Counter(w.lower() for w in words if w.lower() not in STOPWORDS and len(w) > 3)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    return {
        "number": number,
        "title": chapter["title"],
        "words": len(words),
        "sentences": len(sentences),
        "characters": sorted(n for n, c in names.items() if c >= 2),
        "names": dict(sorted(names.items())),
        "keywords": [w for w, _ in sorted(keywords.items(), key=lambda kv: (-kv[1], kv[0]))[:5]],
        "opening": sentences[0] if sentences else "",
        "attempt": ctx.attempt,
    }


def assemble(title: str, chapters: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the chapter results into `summary.json` (a file output) and totals.

    Returns {summary, chapters, words, characters}: `characters` are the names
    written at least three times in the whole novel."""
    seen: Counter[str] = Counter()
    for ch in chapters:
        seen.update(ch["names"])
    characters = sorted(n for n, c in seen.items() if c >= 3)
    words = sum(ch["words"] for ch in chapters)
    document = {
        "title": title,
        "words": words,
        "characters": characters,
        "chapters": [
            {k: ch[k] for k in ("number", "title", "words", "keywords", "opening")}
            for ch in chapters
        ],
    }
    out = Path(tempfile.mkdtemp(prefix="novel-")) / "summary.json"
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return {"summary": out, "chapters": len(chapters), "words": words, "characters": characters}
