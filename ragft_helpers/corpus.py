"""Documents and chunks: load a folder of text files and cut it into retrievable pieces.

This is the one module notebooks import corpus functions from; it also re-exports the WikiText
loader (:mod:`ragft_helpers.wikitext`).

Chunking rule: a document is split at its headings (Markdown ``#`` … ``######``, WikiText
`` = = Section = = ``; in plain-text files — any suffix but ``.md``, ``.markdown`` and ``.raw``,
e.g. ``.txt`` and ``.rst`` — also reStructuredText titles: a line underlined, optionally also
overlined, with one repeated punctuation character at least as long as it, levels in the order the
styles first appear), then each section body is packed into chunks of at most ``max_tokens``
tokens (heading line included), preferring to end at a paragraph, then a line, then a sentence.
Consecutive chunks of one section share up to ``overlap`` tokens of whole sentences. In plain-text
files an indented block (a literal or code block, a note, a definition's body: the paragraphs
indented deeper than the paragraph before them) is one piece that stays whole, and stays with the
paragraph that introduces it, whenever it fits the budget.

Every chunk's text starts with its heading path (the document title, then the headings above it,
joined by ``" > "``), so the title is embedded and searched with each piece of the body; a file
without headings uses its title: its first heading, else the file name without suffix.

Chunk ids: ``sha256(folder, source, heading_path, text, occurrence)[:16]`` in hex, where
``occurrence`` counts earlier chunks of the same document with the same heading path and text.
The same text at the same place always gets the same id, so re-indexing can skip it; two identical
chunks in one document still get distinct ids.

Notices: a document whose first lines after its title are ``Effective: YYYY-MM-DD`` and
``Supersedes: <file>[, <file> ...]`` (the updates in ``data/knowledge_updates/``) is a notice that
replaces facts of the named files from that date. Every chunk of it carries ``notice`` (``True``),
``effective`` (the ISO date) and ``supersedes`` (the file names, joined by ``", "``) in its
metadata; chunks of other documents carry none of them. Retrieval uses them (:mod:`ragft_helpers.retrieval`).
"""
from __future__ import annotations

import fnmatch
import hashlib
import re
import string
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ragft_helpers.wikitext import (
    FALLBACK_DIR,
    RAW_FILES,
    WikiTextError,
    article_title,
    cap_lines,
    detokenize,
    heading_level,
    is_heading,
    load_raw_folder,
    load_wikitext,
    raw_files,
    read_raw_lines,
    split_articles,
    split_by_articles,
    undo_escapes,
)

DEFAULT_PATTERNS = ("*.md", "*.txt", "*.rst", "*.raw")
HEADING_SEPARATOR = " > "

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*+>][ \t]|\||\d+[.)][ \t]))")
_SENTENCE = re.compile(r"\S.*?(?:[.!?][\"')\]]*(?=\s)|$)", re.DOTALL)
_WORD = re.compile(r"\S+")
_PARAGRAPH_TEXT = re.compile(r"[^\n]*\S[^\n]*(?:\n[ \t]*\S[^\n]*)*")  # non-blank lines in a row
_MARKUP_SUFFIXES = (".md", ".markdown", ".raw")  # every other suffix is plain text (.txt, .rst, ...)
_ADORNMENT_CHARS = frozenset(string.punctuation)

_FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z -]*):[ \t]*(.*?)[ \t]*$")
NOTICE_FIELDS = ("notice", "effective", "supersedes")  # chunk metadata keys of a notice
SUPERSEDES_SEPARATOR = ", "

# How strongly a chunk should end just before a unit that starts ...
_PARAGRAPH, _LINE, _SENTENCE_START, _WORD_START = 3, 2, 1, 0


@dataclass(frozen=True)
class Document:
    """One text file. ``source`` is its path relative to the loaded folder (posix), ``folder`` the
    loaded folder's name; both default to the file's own name and its parent folder's name."""

    path: Path
    title: str
    text: str
    source: str = ""
    folder: str = ""

    def __post_init__(self):
        path = Path(self.path)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "source", self.source or path.name)
        object.__setattr__(self, "folder", self.folder or path.parent.name)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text`` is the heading path, a newline, then the body."""

    id: str
    text: str
    metadata: dict = field(hash=False)

    @property
    def body(self) -> str:
        return self.text[len(self.metadata["heading_path"]) + 1:]


def word_count(text: str) -> int:
    """The default token counter: whitespace-separated words."""
    return len(text.split())


# ---- loading -----------------------------------------------------------------------------------

def is_plain_text(path: str | Path) -> bool:
    """Whether a file is read as plain text / reStructuredText (any suffix but ``.md``,
    ``.markdown`` and ``.raw``): its underlined titles are headings too."""
    return Path(path).suffix.lower() not in _MARKUP_SUFFIXES


def document_title(text: str, path: Path) -> str:
    """The first ``# `` heading, else the first WikiText `` = Title = ``, else the file stem.

    In a plain-text file (:func:`is_plain_text`) it is the first heading of any kind, reST titles
    included.
    """
    if is_plain_text(path):
        headings = _headings(text, plain=True)
        return headings[0][3] if headings else path.stem
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("# ") and line[2:].strip():
            return _MD_HEADING.match(line).group(2)
    for line in text.splitlines():
        title = article_title(line)
        if title:
            return title
    return path.stem


def _read_text(path: Path) -> str | None:
    """The file as text (LF line ends), or ``None`` when it is unreadable or not UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _names(sources: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` of ``sources``, and how many more there are."""
    more = f" and {len(sources) - shown} more" if len(sources) > shown else ""
    return ", ".join(sources[:shown]) + more


def load_documents(folder: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[Document]:
    """Every file under ``folder`` whose name matches one of ``patterns`` in any case (recursive,
    sorted by relative path).

    Files in hidden folders (such as Jupyter's ``.ipynb_checkpoints``) are ignored. Unreadable,
    binary (NUL bytes), non-UTF-8 or empty files are skipped with one warning naming them all;
    files that match no pattern (a ``.html`` or ``.pdf`` page) with another, which says which
    kinds are read, so a document left out is never left out silently.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"The document folder {folder} does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file: pass the folder that holds the documents.")
    visible = [path for path in folder.rglob("*")
               if path.is_file() and not any(part.startswith(".")
                                             for part in path.relative_to(folder).parts)]
    paths = {path for path in visible  # "Guide.MD" is read like "guide.md"
             if any(fnmatch.fnmatch(path.name.lower(), pattern.lower()) for pattern in patterns)}
    kinds = ", ".join(p.lstrip("*") for p in patterns)
    documents, skipped = [], []
    for path in sorted(paths, key=lambda p: p.relative_to(folder).as_posix()):
        source = path.relative_to(folder).as_posix()
        text = _read_text(path)
        if text is None or not text.strip():
            skipped.append(source)
            continue
        documents.append(Document(path, document_title(text, path), text, source, folder.name))
    other = sorted(path.relative_to(folder).as_posix() for path in visible if path not in paths)
    if other:
        warnings.warn(f"Not indexed: {len(other)} file(s) in {folder} of a kind it does not read "
                      f"({_names(other)}); only {kinds} files are indexed, so save those as "
                      f"one of them (e.g. a web page's text as .md) to include them.", stacklevel=2)
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} file(s) in {folder} that are empty, unreadable or "
                      f"not UTF-8 text: {_names(skipped)}", stacklevel=2)
    if not documents:
        raise ValueError(f"No readable documents in {folder}: put text files ending in "
                         f"{kinds} there (UTF-8).")
    return documents


# ---- notices -----------------------------------------------------------------------------------

def notice_fields(text: str, name: str = "") -> dict:
    """``{"notice": True, "effective": "YYYY-MM-DD", "supersedes": "a.md, b.md"}`` when ``text``
    is a notice, else ``{}``.

    The fields are ``Key: value`` lines right after the title (blank lines and the ``#`` title
    line may come before them); the first other line ends them. Both ``Effective`` (an ISO date)
    and ``Supersedes`` (one or more file names, separated by commas) are needed; a notice with
    only one of them, or with a date that is not a date, is read as an ordinary document, with a
    warning naming ``name``.
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (not found and _MD_HEADING.match(stripped)):
            continue
        match = _FIELD_LINE.match(stripped)
        if not match:
            break
        found[match.group(1).strip().lower()] = match.group(2)
    effective, supersedes = found.get("effective"), found.get("supersedes")
    if effective is None and supersedes is None:
        return {}
    files = [part.strip() for part in (supersedes or "").split(",") if part.strip()]
    try:
        day = date.fromisoformat(effective or "")
    except ValueError:
        day = None
    if day is None or not files:
        warnings.warn(f"{name or 'A document'} starts like a notice (Effective: {effective!r}, "
                      f"Supersedes: {supersedes!r}) but a notice needs both 'Effective: YYYY-MM-DD' "
                      "and 'Supersedes: <file>.md': it is indexed as an ordinary document that "
                      "supersedes nothing.", stacklevel=3)
        return {}
    return {"notice": True, "effective": day.isoformat(),
            "supersedes": SUPERSEDES_SEPARATOR.join(files)}


def superseded_sources(metadata: dict) -> list[str]:
    """The files a notice chunk supersedes (``[]`` for any other chunk)."""
    return [part.strip() for part in (metadata.get("supersedes") or "").split(",") if part.strip()]


# ---- sections ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Section:
    heading_path: str
    start: int  # body span in the document text
    end: int


def _heading(line: str) -> tuple[int, str]:
    """(level, title) of a Markdown or WikiText heading line, else (0, "")."""
    match = _MD_HEADING.match(line)
    if match:
        return len(match.group(1)), match.group(2)
    level = heading_level(line)
    if level:
        return level, line.strip()[2 * level:-2 * level].strip()
    return 0, ""


def _adornment(line: str) -> str:
    """The character of a reST adornment line (3+ copies of one punctuation character from the
    first column), else ""."""
    line = line.rstrip()
    if len(line) >= 3 and line[0] in _ADORNMENT_CHARS and line == line[0] * len(line):
        return line[0]
    return ""


def _rest_title(lines: list[str], i: int) -> tuple[int, tuple[str, str], str] | None:
    """(line count, style, title) of a reST title starting at ``lines[i]``, else ``None``.

    A title follows a blank line (or starts the text) and is either a line that does not start
    with white space, underlined, or a line overlined and underlined with the same character;
    the adornment is at least as long as the title line.
    """
    if i > 0 and lines[i - 1].strip():
        return None
    width = len(lines[i + 1].rstrip()) if i + 1 < len(lines) else 0
    over = _adornment(lines[i])
    if (over and i + 2 < len(lines) and lines[i + 1].strip() and not _adornment(lines[i + 1])
            and _adornment(lines[i + 2]) == over
            and min(len(lines[i].rstrip()), len(lines[i + 2].rstrip())) >= width):
        return 3, ("over", over), lines[i + 1].strip()
    title = lines[i].rstrip()
    if (title and not title[0].isspace() and not over and i + 1 < len(lines)
            and _adornment(lines[i + 1]) and width >= len(title)):
        return 2, ("under", _adornment(lines[i + 1])), title.strip()
    return None


def _headings(text: str, plain: bool) -> list[tuple[int, int, int, str]]:
    """(start, end, level, title) of every heading outside code fences: ``start`` and ``end``
    span its whole line(s), newline included. ``plain`` adds reST titles (levels in the order
    their styles first appear)."""
    lines = text.splitlines(keepends=True)
    headings, styles, in_fence = [], [], False
    i, position = 0, 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            rest = _rest_title(lines, i) if plain else None
            if rest:
                count, style, title = rest
                if style not in styles:
                    styles.append(style)
                end = position + sum(len(part) for part in lines[i:i + count])
                headings.append((position, end, styles.index(style) + 1, title))
                i, position = i + count, end
                continue
            level, title = _heading(line.rstrip("\n"))
            if level:
                headings.append((position, position + len(line), level, title))
        i, position = i + 1, position + len(line)
    return headings


def _sections(doc: Document) -> list[_Section]:
    """The document cut at its headings; a heading path starts with a level-1 heading or the title."""
    sections, stack = [], []
    path, body_start = doc.title, 0
    for start, end, level, title in _headings(doc.text, is_plain_text(doc.source)):
        sections.append(_Section(path, body_start, start))
        stack = [(lvl, name) for lvl, name in stack if lvl < level] + [(level, title)]
        names = [name for _, name in stack]
        path = HEADING_SEPARATOR.join(names if stack[0][0] == 1 else [doc.title, *names])
        body_start = end
    sections.append(_Section(path, body_start, len(doc.text)))
    return sections


# ---- units and packing -------------------------------------------------------------------------

def _units(text: str, start: int, end: int, count: Callable[[str], int],
           budget: int) -> list[tuple[int, int, int]]:
    """(start, end, boundary strength) of the sentences in ``text[start:end]``.

    Blocks are paragraphs and the items of lists, tables and quotes; other line breaks are soft
    wraps inside a sentence. A sentence over ``budget`` tokens becomes words.
    """
    units = []
    block_start, strength = start, _PARAGRAPH
    for brk in [*_BLOCK_BREAK.finditer(text, start, end), None]:
        block_end = brk.start() if brk else end
        for sentence in _SENTENCE.finditer(text, block_start, block_end):
            s = sentence.start()
            e = s + len(sentence.group().rstrip())
            if count(text[s:e]) <= budget:
                units.append((s, e, strength))
            else:
                for word in _WORD.finditer(text, s, e):
                    units.append((word.start(), word.end(), strength))
                    strength = _WORD_START
            strength = _SENTENCE_START
        if brk:
            block_start = brk.end()
            strength = _PARAGRAPH if brk.group().count("\n") > 1 else _LINE
    return units


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _plain_units(text: str, start: int, end: int, count: Callable[[str], int],
                 budget: int) -> list[tuple[int, int, int]]:
    """:func:`_units` for plain text, with indented blocks kept whole.

    An indented block is a run of paragraphs indented deeper than the paragraph before it; when
    it fits ``budget`` it is one unit, and the boundary before it is weaker than a paragraph's so
    that it stays with the paragraph introducing it. A larger block is cut like other text.
    """
    paragraphs = list(_PARAGRAPH_TEXT.finditer(text, start, end))
    groups: list[list] = []  # [start, end, is a block]
    parent = min((_indent(match.group()) for match in paragraphs), default=0)
    for match in paragraphs:
        indent = _indent(match.group())
        s = match.start() + indent
        e = match.start() + len(match.group().rstrip())
        if groups and indent > parent:
            if groups[-1][2]:
                groups[-1][1] = e
            else:
                groups.append([s, e, True])
        else:
            parent = indent
            groups.append([s, e, False])
    units = []
    for s, e, block in groups:
        if block and count(text[s:e]) <= budget:
            units.append((s, e, _LINE))
            continue
        inner = _units(text, s, e, count, budget)
        if inner and block:
            inner[0] = (inner[0][0], inner[0][1], _LINE)
        units.extend(inner)
    return units


def _pack(counts: list[int], strengths: list[int], budget: int, overlap: int,
          fits: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """Group units into (first, last) ranges of at most ``budget`` tokens with sentence overlap.

    ``fits(first, last)`` checks the real count of a range, for tokenizers whose counts do not
    add up across words.
    """
    ranges, first, n = [], 0, len(counts)
    while first < n:
        last, total = first, counts[first]
        while last + 1 < n and total + counts[last + 1] <= budget:
            last += 1
            total += counts[last]
        if last + 1 < n:  # end before the strongest boundary in the second half of the chunk
            filled, best = 0, last + 1
            for nxt in range(first + 1, last + 2):
                filled += counts[nxt - 1]
                if 2 * filled >= budget and strengths[nxt] >= strengths[best]:
                    best = nxt
            last = best - 1
        while last > first and not fits(first, last):
            last -= 1
        if ranges and last <= ranges[-1][1]:  # only overlap, nothing new: restart without overlap
            first = ranges[-1][1] + 1
            continue
        ranges.append((first, last))
        if last + 1 >= n:
            break
        start, tail = last + 1, 0
        while start - 1 > first and tail + counts[start - 1] <= overlap:
            start -= 1
            tail += counts[start]
        first = start
    return ranges


def chunk_document(doc: Document, *, max_tokens: int = 200, overlap: int = 40,
                   count_tokens: Callable[[str], int] | None = None) -> list[Chunk]:
    """Cut ``doc`` into chunks (see the module docstring for the rule).

    ``count_tokens`` defaults to :func:`word_count`; for the embedder's real budget pass e.g.
    ``lambda text: len(model.tokenizer.tokenize(text))``. The budget covers the heading line too;
    a single word longer than the budget stays whole.
    """
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(f"Need max_tokens >= 1 and 0 <= overlap < max_tokens "
                         f"(got max_tokens={max_tokens}, overlap={overlap}).")
    count = count_tokens or word_count
    chunks: list[Chunk] = []
    seen: Counter = Counter()
    notice = notice_fields(doc.text, doc.source)
    split = _plain_units if is_plain_text(doc.source) else _units
    for section in _sections(doc):
        prefix = section.heading_path + "\n"
        budget = max(max_tokens - count(prefix), max_tokens // 2)
        units = split(doc.text, section.start, section.end, count, budget)
        if not units:
            continue
        counts = [count(doc.text[s:e]) for s, e, _ in units]

        def fits(first: int, last: int) -> bool:
            return count(prefix + doc.text[units[first][0]:units[last][1]]) <= max_tokens

        for first, last in _pack(counts, [u[2] for u in units], budget, overlap, fits):
            start, end = units[first][0], units[last][1]
            text = prefix + doc.text[start:end]
            key = (section.heading_path, text)
            digest = hashlib.sha256("\x1f".join(
                [doc.folder, doc.source, section.heading_path, text, str(seen[key])]).encode())
            seen[key] += 1
            chunks.append(Chunk(digest.hexdigest()[:16], text, {
                "source": doc.source, "folder": doc.folder, "title": doc.title,
                "heading_path": section.heading_path, "start_char": start, "end_char": end,
                "chunk_index": len(chunks), **notice}))
    return chunks


def chunk_documents(docs: Iterable[Document], **kwargs) -> list[Chunk]:
    """:func:`chunk_document` over many documents (same keyword arguments)."""
    return [chunk for doc in docs for chunk in chunk_document(doc, **kwargs)]


__all__ = [
    "Chunk", "DEFAULT_PATTERNS", "Document", "FALLBACK_DIR", "RAW_FILES", "WikiTextError",
    "article_title", "cap_lines", "chunk_document", "chunk_documents", "detokenize",
    "document_title", "heading_level", "is_heading", "is_plain_text", "load_documents",
    "load_raw_folder", "load_wikitext", "notice_fields", "raw_files", "read_raw_lines",
    "split_articles", "split_by_articles", "superseded_sources", "undo_escapes", "word_count",
]
