"""Shared by the index tests: a folder of documents, and smoke settings with a cache of their own."""
from __future__ import annotations

from pathlib import Path

import pytest

from ragft_helpers import store
from ragft_helpers.config import get_settings


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """``folder`` holding ``files`` (name -> text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def indexed_folder(settings, folder: Path, files: dict[str, str]):
    """(the default collection with ``files`` indexed from ``folder``, the folder)."""
    collection = store.open_collection(settings)
    write_files(folder, files)
    store.index_folder(folder, collection, progress=False, settings=settings)
    return collection, folder


@pytest.fixture
def settings(tmp_path):
    """Smoke-profile settings whose cache (index, lexical index, models) is in ``tmp_path``."""
    return get_settings({"RAGFT_CACHE_DIR": str(tmp_path / "cache"), "RAGFT_PROFILE": "smoke"})
