"""The Chroma index: idempotent and incremental re-indexing, errors that say what to do."""
import os
import socket
import subprocess
import sys
import warnings

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import store
from ragft_helpers.config import ConfigError, get_settings
from ragft_helpers.corpus import chunk_documents, load_documents
from tests.index_folders import settings, write_files as _write  # noqa: F401 (fixture)

FILES = {
    "tern-card.md": "# Tern Card\n\n## Cost\n\nThe Tern Card costs £25.00 a year.\n\n"
                    "## Benefits\n\nHolders get 15% off foot-passenger fares. Bicycles travel free.\n",
    "pets.md": "# Travelling with Pets\n\n## Dogs\n\nDogs travel free on a lead. "
               "Each passenger may bring up to two dogs.\n",
    "catering.md": "# Onboard Catering\n\n## Café\n\nThe Gull's Nest Café serves soup, "
                   "sandwiches and hot drinks.\n",
}


class CountingEmbeddingFunction(store.MiniLMEmbeddingFunction):
    """The real embedding function, counting the texts it embeds."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []
        self.batches: list[int] = []

    def __call__(self, input):
        self.texts.extend(input)
        self.batches.append(len(input))
        return super().__call__(input)





@pytest.fixture
def counting():
    return CountingEmbeddingFunction()


@pytest.fixture
def collection(settings, counting):
    return store.open_collection(settings, embedding_function=counting)


def test_collection_uses_cosine_and_the_minilm_function_by_name(collection, settings):
    config = collection.configuration_json
    assert config["hnsw"]["space"] == "cosine"
    assert config["embedding_function"]["name"] == store.MiniLMEmbeddingFunction.name()
    assert "/" not in str(config["embedding_function"]["config"])  # no environment path stored
    assert (settings.cache_dir / "chroma").is_dir()


def test_the_embedding_function_round_trips_its_config_without_loading():
    function = store.MiniLMEmbeddingFunction.build_from_config({"batch_size": 8})
    assert function._model is None and function.batch_size == 8
    assert not function.is_legacy()


def test_indexing_twice_adds_nothing(tmp_path, collection, counting):
    folder = _write(tmp_path / "kb", FILES)
    first = store.index_folder(folder, collection, progress=False)
    assert first.added == collection.count() == len(chunk_documents(load_documents(folder)))
    assert len(counting.texts) == first.added
    second = store.index_folder(folder, collection, progress=False)
    assert (second.added, second.updated, second.removed) == (0, 0, 0)
    assert second.unchanged == first.added == collection.count()
    assert len(counting.texts) == first.added  # nothing re-embedded


def test_an_edited_file_re_embeds_only_its_changed_chunks(tmp_path, collection, counting):
    folder = _write(tmp_path / "kb", FILES)
    store.index_folder(folder, collection, progress=False)
    before = collection.count()
    counting.texts.clear()
    edited = FILES["tern-card.md"].replace("£25.00", "£30.00")
    (folder / "tern-card.md").write_text(edited, encoding="utf-8")
    report = store.index_folder(folder, collection, progress=False)
    assert (report.added, report.updated, report.removed) == (0, 1, 1)
    assert counting.texts == ["Tern Card > Cost\nThe Tern Card costs £30.00 a year."]
    assert collection.count() == before


def test_moved_chunks_get_new_offsets_without_re_embedding(tmp_path, collection, counting):
    folder = _write(tmp_path / "kb", FILES)
    store.index_folder(folder, collection, progress=False)
    counting.texts.clear()
    longer = FILES["pets.md"].replace("# Travelling with Pets\n", "# Travelling with Pets\n\n\n\n")
    (folder / "pets.md").write_text(longer, encoding="utf-8")
    report = store.index_folder(folder, collection, progress=False)
    assert report.embedded == 0 and report.removed == 0
    stored = collection.get(where={"source": "pets.md"}, include=["metadatas"])["metadatas"][0]
    assert longer[stored["start_char"]:stored["end_char"]].startswith("Dogs travel free")


def test_a_deleted_file_is_removed_and_other_folders_are_kept(tmp_path, collection):
    folder = _write(tmp_path / "kb", FILES)
    updates = _write(tmp_path / "updates", {"fee.md": "# Fee change\n\nThe fee rises to £30.00.\n"})
    store.index_folder(folder, collection, progress=False)
    store.index_folder(updates, collection, progress=False)
    assert set(store.index_stats(collection)) == {*FILES, "fee.md"}
    (folder / "pets.md").unlink()
    report = store.index_folder(folder, collection, progress=False)
    assert report.removed == 1 and report.embedded == 0
    assert set(store.index_stats(collection)) == {"tern-card.md", "catering.md", "fee.md"}


def test_writes_are_batched(tmp_path, collection, counting):
    folder = _write(tmp_path / "kb", FILES)
    chunks = chunk_documents(load_documents(folder))
    report = store.build_index(chunks, collection, batch_size=2, progress=False)
    assert report.added == len(chunks) and max(counting.batches) <= 2
    assert len(counting.batches) == -(-len(chunks) // 2)


def test_index_stats_counts_chunks_per_source(tmp_path, collection):
    store.index_folder(_write(tmp_path / "kb", FILES), collection, progress=False)
    assert store.index_stats(collection) == {"catering.md": 1, "pets.md": 1, "tern-card.md": 2}


def test_an_empty_index_says_how_to_build_it(collection):
    with pytest.raises(store.MissingIndexError, match=r"index_folder\('data/knowledge'\)"):
        store.require_index(collection)


def test_reset_index_empties_the_collection(tmp_path, settings, collection):
    store.index_folder(_write(tmp_path / "kb", FILES), collection, progress=False)
    fresh = store.reset_index(settings)
    assert fresh.count() == 0


def test_a_corrupted_index_folder_names_the_folder_and_reset_index(settings):
    folder = settings.cache_dir / "chroma"
    folder.mkdir(parents=True)
    (folder / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(store.CorruptIndexError) as info:
        store.make_client(settings)
    assert str(folder) in str(info.value) and "reset_index()" in str(info.value)
    assert store.reset_index(settings).count() == 0


def test_an_unreachable_server_says_how_to_start_one(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path),
                             "RAGFT_CHROMA_URL": f"http://127.0.0.1:{port}"})
    with pytest.raises(store.StoreError) as info:
        store.make_client(settings)
    assert "RAGFT_CHROMA_URL" in str(info.value) and "chroma run --path" in str(info.value)


def test_a_malformed_server_url_is_a_config_error(tmp_path):
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path), "RAGFT_CHROMA_URL": "ftp://x:y"})
    with pytest.raises(ConfigError, match="RAGFT_CHROMA_URL"):
        store.make_client(settings)


HOLD_THE_INDEX = """
import sys
from ragft_helpers import store
from ragft_helpers.config import get_settings
store.make_client(get_settings({"RAGFT_CACHE_DIR": sys.argv[1]}))
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_process_on_one_index_folder_is_warned_until_the_first_exits(settings):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_INDEX, str(settings.cache_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.warns(store.ConcurrentWriterWarning) as caught:
            store.make_client(settings)
        message = str(caught[0].message)
        assert f"pid {holder.pid}" in message and str(settings.cache_dir / "chroma") in message
        assert "make chroma" in message and "RAGFT_CHROMA_URL" in message
    finally:
        holder.stdin.close()  # the holder's read ends: it exits and its lock goes with it
        holder.wait(60)
    assert holder.returncode == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", store.ConcurrentWriterWarning)
        store.make_client(settings)
        store.make_client(settings)  # a second client in the same process is no second writer


def test_the_writer_lock_lives_outside_the_index_folder(tmp_path, settings, collection):
    store.index_folder(_write(tmp_path / "kb", FILES), collection, progress=False)
    lock = store.writer_lock_path(settings)
    assert lock.read_text().strip() == str(os.getpid())
    assert store.persistent_path(settings) not in lock.parents
    assert store.reset_index(settings).count() == 0 and lock.is_file()
