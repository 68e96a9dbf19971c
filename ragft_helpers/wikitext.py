"""Load WikiText-2 (raw) as a ``DatasetDict`` and read its structure (articles, headings, escapes).

Source chain (first that works wins), with one provenance line printed:

1. The hub dataset ``wikitext`` / ``wikitext-2-raw-v1``, from the hub when it is reachable or
   else from the local datasets cache that ``ragft prefetch`` fills (offline mode makes a cache
   miss fail at once).
2. ``RAGFT_WIKITEXT_DIR``: a folder with any of ``wiki.train.raw``, ``wiki.valid.raw``,
   ``wiki.test.raw`` (LF or CRLF). It is read first, so a folder that is missing or holds none
   of those files is an error, never skipped.
3. The small fallback corpus in WikiText raw format shipped in the repo, ``data/wikitext-fallback/``.

Rows are the lines of the raw files, as in the hub dataset: a line keeps its ``\\n``, and a blank
line is the empty string. The profile's ``train_max_chars`` caps the training split.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ragft_helpers import hub
from ragft_helpers.config import DATA_DIR, Provenance, Settings, get_settings
from ragft_helpers.hub import SOURCE_HUB

DATASET_NAME = "wikitext-2-raw-v1"
HUB_DATASET_IDS = ("wikitext", "Salesforce/wikitext")  # the legacy id and its current name
RAW_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
FALLBACK_DIR = DATA_DIR / "wikitext-fallback"
FALLBACK_NAME = "wikitext-fallback"
VALIDATION_EVERY = 10  # single-file folders: every 10th article goes to validation

SOURCE_FOLDER = "local folder from RAGFT_WIKITEXT_DIR"
SOURCE_DATASETS_CACHE = "local Hugging Face datasets cache"
SOURCE_FALLBACK = "fallback corpus in the repo"

_HEADING = re.compile(r"^((?:= )+)(.+?)((?: =)+)$")
_ESCAPES = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


class WikiTextError(ValueError):
    """WikiText cannot be loaded as configured; the message says how to fix it."""


# ---- structure ---------------------------------------------------------------------------------

def heading_level(line: str) -> int:
    """1 for `` = Title = ``, 2 for `` = = Section = = ``, and so on; 0 for any other line."""
    match = _HEADING.match(line.strip())
    if not match:
        return 0
    opening, closing = match.group(1).count("="), match.group(3).count("=")
    return opening if opening == closing else 0


def is_heading(line: str) -> bool:
    return heading_level(line) > 0


def article_title(line: str) -> str | None:
    """The title of a level-1 heading line (an article start), else ``None``."""
    if heading_level(line) != 1:
        return None
    return _HEADING.match(line.strip()).group(2)


def split_articles(lines: Iterable[str]) -> list[list[str]]:
    """Group lines into articles, each starting at a level-1 heading.

    Nothing is lost: lines before the first heading join the first article, and a text without
    any heading is one article.
    """
    articles: list[list[str]] = []
    preamble: list[str] = []
    for line in lines:
        if article_title(line) is not None:
            articles.append(preamble + [line])
            preamble = []
        elif articles:
            articles[-1].append(line)
        else:
            preamble.append(line)
    if preamble:
        articles.append(preamble)
    return articles


def undo_escapes(text: str) -> str:
    """Undo WikiText's number and hyphen escapes: ``1 @,@ 000`` → ``1,000``, ``a @-@ b`` → ``a-b``."""
    for escaped, plain in _ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


def detokenize(text: str) -> str:
    """Readable text for display: undo the escapes and the spaces around punctuation and quotes."""
    text = undo_escapes(text)
    text = re.sub(r" ([.,;:!?)\]}]|'s\b|n't\b)", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    text = re.sub(r'" (.*?) "', r'"\1"', text)
    return text


# ---- reading raw files -------------------------------------------------------------------------

def read_raw_lines(path: Path) -> list[str]:
    """The rows of a raw file: CRLF or LF, each line ending in ``\\n``, blank lines as ``""``."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text after the final newline
    return [line + "\n" if line.strip() else "" for line in lines]


def split_by_articles(lines: list[str]) -> tuple[list[str], list[str], int, int]:
    """Split lines into (train, validation) by whole articles, deterministically.

    Rule: the 10th, 20th, 30th, … article goes to validation, the rest to train (about 90/10).
    With fewer than 10 articles the last one is the validation article. Returns the two line
    lists and the numbers of train and validation articles.
    """
    articles = split_articles(lines)
    if len(articles) < 2:
        raise WikiTextError(f"Only {len(articles)} article found: at least 2 ` = Title = ` "
                            "articles are needed to split train from validation.")
    held_out = {i for i in range(len(articles)) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1}
    held_out = held_out or {len(articles) - 1}
    train = [line for i, article in enumerate(articles) if i not in held_out for line in article]
    validation = [line for i in sorted(held_out) for line in articles[i]]
    return train, validation, len(articles) - len(held_out), len(held_out)


def raw_files(folder: Path) -> dict[str, Path]:
    """The ``wiki.*.raw`` files present in ``folder``, by split name."""
    return {split: folder / name for split, name in RAW_FILES.items() if (folder / name).is_file()}


def folder_key(folder: Path) -> str:
    """A key for the text of ``folder``'s ``wiki.*.raw`` files, not for where the folder is: the
    same files copied elsewhere (another checkout, CI's ``../shared``) give the same key."""
    digest = hashlib.sha256()
    for split, path in sorted(raw_files(folder).items()):
        digest.update(f"{split}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return f"{SOURCE_FOLDER}:{digest.hexdigest()[:16]}"


def _missing_files_message(folder: Path, problem: str) -> str:
    expected = ", ".join(RAW_FILES.values())
    return (f"RAGFT_WIKITEXT_DIR={folder} {problem}. It must be a folder holding any of {expected} "
            "(WikiText raw format, LF or CRLF). Fix the path or unset RAGFT_WIKITEXT_DIR.")


def load_raw_folder(folder: Path) -> tuple[dict[str, list[str]], str]:
    """Read a folder of ``wiki.*.raw`` files into split → lines, and describe what was done.

    - train and valid (and test): used as they are;
    - train and test, no valid: test becomes the validation split;
    - otherwise (one file, or no train file): the files are joined (train, valid, test order) and
      split by whole articles with :func:`split_by_articles`.
    """
    if not folder.is_dir():
        raise WikiTextError(_missing_files_message(folder, "does not exist or is not a folder"))
    files = raw_files(folder)
    if not files:
        raise WikiTextError(_missing_files_message(folder, "holds no wiki.*.raw file"))
    found = ", ".join(path.name for path in files.values())
    lines = {split: read_raw_lines(path) for split, path in files.items()}
    if "train" in lines and "validation" in lines:
        return lines, found
    if "train" in lines and "test" in lines:
        return {"train": lines["train"], "validation": lines["test"]}, f"{found}; test used as validation"
    joined = [line for split in RAW_FILES if split in lines for line in lines[split]]
    train, validation, n_train, n_validation = split_by_articles(joined)
    note = (f"{found} split by whole articles: {n_train} train, {n_validation} validation "
            f"(every {VALIDATION_EVERY}th article)")
    return {"train": train, "validation": validation}, note


# ---- the loader --------------------------------------------------------------------------------

def cap_lines(lines: list[str], max_chars: int | None) -> list[str]:
    """Whole lines from the start while their total length stays within ``max_chars``."""
    if max_chars is None:
        return lines
    total = 0
    for count, line in enumerate(lines):
        total += len(line)
        if total > max_chars:
            return lines[:count]
    return lines


def _load_hub_dataset():
    """The hub (or cached) dataset and the id it came from, or ``None`` and why it is unavailable."""
    status = hub.status()
    if not status.reachable and not hub.offline_requested():
        return None, status.reason
    from datasets import load_dataset

    reasons = []
    for repo_id in HUB_DATASET_IDS:
        try:
            return load_dataset(repo_id, DATASET_NAME), repo_id
        except Exception as err:  # offline cache miss (ConnectionError), missing repo, bad cache
            reasons.append(f"{repo_id}: {str(err).splitlines()[0]}")
    return None, "; ".join(reasons)


def _dataset_dict(lines: dict[str, list[str]]):
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict({"text": rows}) for split, rows in lines.items()})


def _load_from_chain(settings: Settings):
    folder_lines = load_raw_folder(settings.wikitext_dir) if settings.wikitext_dir else None
    dataset_dict, detail = _load_hub_dataset()
    if dataset_dict is not None:
        source = SOURCE_DATASETS_CACHE if hub.offline_requested() else SOURCE_HUB
        return dataset_dict, Provenance("dataset", DATASET_NAME, source, detail)
    if folder_lines is not None:
        lines, note = folder_lines
        return _dataset_dict(lines), Provenance("dataset", DATASET_NAME, SOURCE_FOLDER,
                                                str(settings.wikitext_dir),
                                                f"{note}; hub dataset unavailable: {detail}")
    if not raw_files(FALLBACK_DIR):
        raise WikiTextError(f"No WikiText available: the hub dataset is unavailable ({detail}) and "
                            f"the fallback corpus {FALLBACK_DIR} has no wiki.*.raw file. Set "
                            "RAGFT_WIKITEXT_DIR to a folder with wiki.*.raw files, or run "
                            "'ragft prefetch' where the hub is reachable.")
    lines, found = load_raw_folder(FALLBACK_DIR)
    note = (f"{found}; hub dataset unavailable: {detail}; set RAGFT_WIKITEXT_DIR or run "
            "'ragft prefetch' online for the real corpus")
    return _dataset_dict(lines), Provenance("dataset", FALLBACK_NAME, SOURCE_FALLBACK,
                                            str(FALLBACK_DIR), note)


def prefetch_hub_dataset():
    """Download WikiText-2 raw into the datasets cache (for ``ragft prefetch``); its provenance."""
    dataset_dict, detail = _load_hub_dataset()
    if dataset_dict is None:
        raise WikiTextError(f"Could not download {DATASET_NAME}: {detail}")
    return Provenance("dataset", DATASET_NAME, SOURCE_HUB, detail)


def describe_source(settings: Settings) -> str:
    """Where :func:`load_wikitext` will read from, without loading anything (for ``ragft doctor``)."""
    if hub.status().reachable:
        return f"{DATASET_NAME} ({SOURCE_HUB})"
    if settings.wikitext_dir is not None:
        files = raw_files(settings.wikitext_dir) if settings.wikitext_dir.is_dir() else {}
        if not files:
            raise WikiTextError(_missing_files_message(settings.wikitext_dir, "holds no wiki.*.raw file"
                                                       if settings.wikitext_dir.is_dir() else
                                                       "does not exist or is not a folder"))
        return f"{DATASET_NAME} ({SOURCE_FOLDER}: {', '.join(p.name for p in files.values())}) " \
               "unless the datasets cache holds it"
    return f"{FALLBACK_NAME} ({SOURCE_FALLBACK}) unless the datasets cache holds {DATASET_NAME}"


def load_wikitext(settings: Settings | None = None, *, verbose: bool = True):
    """WikiText-2 raw as a ``DatasetDict`` ("train", "validation", maybe "test") and its provenance.

    See the module docstring for the source chain. A folder without both ``wiki.train.raw`` and
    ``wiki.valid.raw`` follows :func:`load_raw_folder`: with train and test, test is validation;
    otherwise the text is split by whole articles, every 10th article (10th, 20th, …; the last
    one when there are fewer than 10) to validation — a fixed rule, the same on every run. The
    profile's ``train_max_chars`` keeps whole lines from the start of the train split up to that
    many characters.
    """
    settings = settings or get_settings()
    dataset_dict, provenance = _load_from_chain(settings)
    train = dataset_dict["train"]
    kept = len(cap_lines(train["text"], settings.profile.train_max_chars))
    if kept < len(train):
        dataset_dict["train"] = train.select(range(kept))
        cap = (f"train capped at {settings.profile.train_max_chars:,} characters "
               f"({kept:,} of {len(train):,} lines)")
        provenance = replace(provenance, note="; ".join(filter(None, [provenance.note, cap])))
    if verbose:
        print(provenance.line())
    return dataset_dict, provenance
