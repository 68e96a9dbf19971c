"""The Chroma index of the knowledge base: client, embedding function, incremental (re)indexing.

The index lives in ``RAGFT_CACHE_DIR/chroma`` (an embedded ``PersistentClient``) unless
``RAGFT_CHROMA_URL`` points at a ``chroma run`` server. Embeddings always come from the resolved
all-MiniLM-L6-v2 (:func:`ragft_helpers.assets.load_embedding_model`), passed explicitly whenever a
collection is opened, never from Chroma's default embedding function (it downloads at run time).

Re-indexing is incremental because chunk ids are derived from content
(:mod:`ragft_helpers.corpus`): unchanged chunks are skipped, new ids are embedded and added, ids
no longer present are deleted.

One process at a time should write a ``PersistentClient`` folder: a second process opening the
same folder gets a :class:`ConcurrentWriterWarning` pointing at the server
(:mod:`ragft_helpers.server`).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

import chromadb
from chromadb.api.client import SharedSystemClient
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError, InternalError, NotFoundError
from chromadb.utils.embedding_functions import register_embedding_function

from ragft_helpers.assets import load_embedding_model
from ragft_helpers.config import ConfigError, Settings, ensure_writable_dir, get_settings
from ragft_helpers import lexical
from ragft_helpers.corpus import DEFAULT_PATTERNS, Chunk, chunk_documents, load_documents
from ragft_helpers.server import heartbeat_status

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no concurrent-writer check
    fcntl = None

DEFAULT_COLLECTION = "knowledge"
EMBED_BATCH_SIZE = 64  # chunks per embedding call (one progress-bar step)
BUILD_HINT = ("run notebook 03, or ragft_helpers.store.index_folder('data/knowledge') "
              "to build it")
SERVER_PROBE_TIMEOUT = 5.0  # seconds to wait for a RAGFT_CHROMA_URL server's first answer


class StoreError(RuntimeError):
    """The index cannot be opened; the message says how to fix it."""


class CorruptIndexError(StoreError):
    """The persistent index folder cannot be read; :func:`reset_index` rebuilds it."""


class MissingIndexError(StoreError):
    """The collection is absent or empty: nothing to retrieve from yet."""


class ConcurrentWriterWarning(UserWarning):
    """Another process has the same persistent index folder open."""


@lru_cache(maxsize=1)
def shared_embedding_model():
    """The all-MiniLM-L6-v2 ``SentenceTransformer``, loaded once per process."""
    model, _ = load_embedding_model()
    return model


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over the resolved all-MiniLM-L6-v2 (normalized embeddings).

    Its stored config names the model, not a path, so an index keeps working when the
    environment moves; the model itself is resolved on first use.
    """

    def __init__(self, model: Any = None, batch_size: int = 32):
        self._model = model
        self.batch_size = batch_size

    @property
    def model(self):
        if self._model is None:
            self._model = shared_embedding_model()
        return self._model

    def __call__(self, input: Documents) -> Embeddings:
        vectors = self.model.encode(list(input), batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return list(vectors)

    @staticmethod
    def name() -> str:
        return "ragft-all-minilm-l6-v2"

    def get_config(self) -> dict[str, Any]:
        return {"model": "all-MiniLM-L6-v2", "normalize_embeddings": True,
                "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MiniLMEmbeddingFunction":
        return MiniLMEmbeddingFunction(batch_size=int(config.get("batch_size", 32)))

    def default_space(self) -> str:
        return "cosine"


@dataclass(frozen=True)
class IndexReport:
    """Chunk counts of one (re)index: ``added`` (embedded, from sources new to the index),
    ``updated`` (embedded, from sources already indexed), ``removed`` (deleted),
    ``unchanged`` (already indexed, not re-embedded)."""

    added: int
    updated: int
    removed: int
    unchanged: int
    seconds: float
    lexical_rebuilt: bool = False  # the BM25 index beside the collection was rebuilt

    @property
    def embedded(self) -> int:
        return self.added + self.updated


# ---- client and collection ---------------------------------------------------------------------

def persistent_path(settings: Settings) -> Path:
    return settings.cache_dir / "chroma"


def _chroma_settings() -> ChromaSettings:
    return ChromaSettings(anonymized_telemetry=False)


def writer_lock_path(settings: Settings) -> Path:
    """The lock file beside the persistent folder (outside it: Chroma and
    :func:`reset_index` own the folder's contents)."""
    folder = persistent_path(settings)
    return folder.with_name(folder.name + ".ragft-writer.lock")


_WRITER_LOCKS: dict[str, int] = {}  # folder -> descriptor of its lock file, held until exit


def _claim_writer_lock(settings: Settings) -> None:
    """Lock the persistent folder for this process, or warn when another process holds it."""
    folder = str(persistent_path(settings).resolve())
    if fcntl is None or folder in _WRITER_LOCKS:
        return
    try:
        fd = os.open(writer_lock_path(settings), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # no lock file, no check; opening the index reports real write problems
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"Another process (pid {holder})" if holder.isdigit() else "Another process"
        warnings.warn(
            f"{who} has the index folder {folder} open. Two processes writing one "
            "PersistentClient folder can corrupt it. Run one server instead (`make chroma` or "
            "`ragft serve-index`) and set RAGFT_CHROMA_URL=http://127.0.0.1:8000 in every "
            "process that uses the index.", ConcurrentWriterWarning, stacklevel=3)
        return
    except OSError:  # file systems without flock support
        os.close(fd)
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _WRITER_LOCKS[folder] = fd


def _server_hint(settings: Settings) -> str:
    return (f"Start one with `make chroma` or `ragft serve-index` (they run `chroma run --path "
            f"{settings.cache_dir / 'chroma-server'} --host 127.0.0.1 --port 8000`), or unset "
            f"RAGFT_CHROMA_URL to use the embedded index in {persistent_path(settings)}.")


def _corrupt(path: Path, err: Exception) -> CorruptIndexError:
    return CorruptIndexError(
        f"The index folder {path} cannot be read ({type(err).__name__}: {err}): it is corrupted "
        "or was written by an incompatible Chroma version. Call "
        "ragft_helpers.store.reset_index() to delete it and start again, then rebuild the index.")


def _server_address(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of a server URL such as ``http://127.0.0.1:8000``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(f"RAGFT_CHROMA_URL={url!r} is not a server address like "
                          "http://127.0.0.1:8000.")
    ssl = parts.scheme == "https"
    return parts.hostname, port or (443 if ssl else 8000), ssl


def make_client(settings: Settings | None = None):
    """A Chroma client: ``HttpClient`` for ``RAGFT_CHROMA_URL``, else a ``PersistentClient``.

    An unreachable server fails within ``SERVER_PROBE_TIMEOUT`` seconds with :class:`StoreError`;
    a persistent folder another process has open gives a :class:`ConcurrentWriterWarning`.
    """
    settings = settings or get_settings()
    if settings.chroma_url:
        host, port, ssl = _server_address(settings.chroma_url)
        url = f"{'https' if ssl else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
        # HttpClient waits without a time limit on a host that never answers: probe first.
        if heartbeat_status(url, timeout=SERVER_PROBE_TIMEOUT) is None:
            raise StoreError(f"Cannot reach the Chroma server at {settings.chroma_url} "
                             f"(RAGFT_CHROMA_URL): nothing answered within {SERVER_PROBE_TIMEOUT:.0f} s. "
                             f"{_server_hint(settings)}")
        try:
            return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_chroma_settings())
        except Exception as err:  # ValueError("Could not connect ..."), httpx errors
            raise StoreError(f"Cannot reach the Chroma server at {settings.chroma_url} "
                             f"(RAGFT_CHROMA_URL): {err} {_server_hint(settings)}") from err
    path = ensure_writable_dir(persistent_path(settings))
    _claim_writer_lock(settings)
    try:
        return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
    except ChromaError as err:  # e.g. InternalError "file is not a database"
        # Chroma keeps the half-started system of this path cached, and a later client would get
        # it. Its public reset drops every cached system: clients opened before in this process
        # must be opened again (restart the kernel if one misbehaves).
        SharedSystemClient.clear_system_cache()
        raise _corrupt(path, err) from err


def open_collection(settings: Settings | None = None, name: str = DEFAULT_COLLECTION,
                    client=None, embedding_function: EmbeddingFunction | None = None):
    """Get or create collection ``name`` with cosine distance and the MiniLM embedding function."""
    settings = settings or get_settings()
    owned = client is None
    client = client or make_client(settings)
    try:
        return client.get_or_create_collection(
            name, configuration={"hnsw": {"space": "cosine"}},
            embedding_function=embedding_function or MiniLMEmbeddingFunction())
    except InternalError as err:
        if owned and not settings.chroma_url:
            raise _corrupt(persistent_path(settings), err) from err
        raise


def existing_collection(settings: Settings | None = None, name: str = DEFAULT_COLLECTION, client=None):
    """Collection ``name`` as it is; :class:`MissingIndexError` naming how to build it when the
    index has no such collection (``open_collection`` would create an empty one)."""
    settings = settings or get_settings()
    client = client or make_client(settings)
    names = [getattr(c, "name", c) for c in client.list_collections()]
    if name not in names:
        known = f" The index has: {', '.join(sorted(names))}." if names else " The index is empty."
        raise MissingIndexError(f"No collection named {name!r}.{known} Index documents into it "
                                f"first: `ragft index PATH --collection {name}`.")
    return open_collection(settings, name, client)


def reset_index(settings: Settings | None = None, name: str = DEFAULT_COLLECTION, client=None,
                embedding_function: EmbeddingFunction | None = None):
    """Delete collection ``name`` and return it new and empty.

    When the persistent folder itself is unreadable, the whole folder is removed.
    """
    settings = settings or get_settings()
    try:
        client = client or make_client(settings)
        try:
            shutil.rmtree(lexical.lexical_dir(client.get_collection(name), settings), ignore_errors=True)
            client.delete_collection(name)
        except NotFoundError:
            pass
    except CorruptIndexError:
        shutil.rmtree(persistent_path(settings), ignore_errors=True)
        client = make_client(settings)
    return open_collection(settings, name, client, embedding_function)


def embed_query(question: str) -> list[float]:
    """The question's normalised MiniLM embedding, as the index embeds its chunks."""
    return embed_queries([question])[0]


def embed_queries(questions: Sequence[str]) -> list[list[float]]:
    """:func:`embed_query` of each of ``questions``, in one batch."""
    return [[float(x) for x in vector] for vector in MiniLMEmbeddingFunction()(list(questions))]


def require_index(collection) -> int:
    """The number of chunks in ``collection``; :class:`MissingIndexError` when there are none."""
    count = collection.count()
    if count == 0:
        raise MissingIndexError(f"The index '{collection.name}' is empty: {BUILD_HINT}.")
    return count


def index_stats(collection) -> dict[str, int]:
    """Number of chunks per source, sorted by source."""
    metadatas = collection.get(include=["metadatas"])["metadatas"]
    return dict(sorted(Counter(m["source"] for m in metadatas).items()))


# ---- indexing ----------------------------------------------------------------------------------

def _key(metadata: dict) -> tuple[str, str]:
    return metadata.get("folder", ""), metadata["source"]


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    return (items[i:i + size] for i in range(0, len(items), size))


def build_index(chunks: Iterable[Chunk], collection, *, replace_folder: str | None = None,
                batch_size: int = EMBED_BATCH_SIZE, progress: bool = True,
                settings: Settings | None = None, keep_lexical: bool = True) -> IndexReport:
    """Make ``collection`` hold exactly ``chunks`` for the sources they come from.

    Only new ids are embedded; ids of those sources that are no longer present are deleted, and
    chunks whose text is unchanged but whose offsets moved get their metadata updated without
    re-embedding. With ``replace_folder``, sources of that folder without chunks are removed too.
    Writes go in batches of ``batch_size`` chunks (Chroma's own limit is thousands per call).
    With ``keep_lexical`` the BM25 index beside the collection (:mod:`ragft_helpers.lexical`) is
    brought in step: rebuilt when the chunks changed, untouched when they did not.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    incoming = {chunk.id: chunk for chunk in chunks}
    existing = collection.get(include=["metadatas"])
    stored = dict(zip(existing["ids"], existing["metadatas"]))
    sources = {_key(chunk.metadata) for chunk in incoming.values()}
    stored_sources = {_key(metadata) for metadata in stored.values()}

    def is_stale(id_: str, metadata: dict) -> bool:
        if id_ in incoming:
            return False
        return _key(metadata) in sources or (
            replace_folder is not None and metadata.get("folder") == replace_folder)

    stale = [id_ for id_, metadata in stored.items() if is_stale(id_, metadata)]
    new = sorted((c for c in incoming.values() if c.id not in stored), key=lambda c: len(c.text))
    moved = [c for c in incoming.values() if c.id in stored and stored[c.id] != c.metadata]

    size = max(1, batch_size)
    for batch in _batches(stale, size):
        collection.delete(ids=list(batch))
    for batch in _batches(moved, size):
        collection.update(ids=[c.id for c in batch], metadatas=[c.metadata for c in batch])
    with tqdm(total=len(new), desc="Embedding chunks", unit="chunk",
              disable=not progress or not new) as bar:
        for batch in _batches(new, size):
            collection.add(ids=[c.id for c in batch], documents=[c.text for c in batch],
                           metadatas=[c.metadata for c in batch])
            bar.update(len(batch))
    added = sum(1 for c in new if _key(c.metadata) not in stored_sources)
    rebuilt = lexical.sync(collection, settings)[1] if keep_lexical else False
    return IndexReport(added=added, updated=len(new) - added, removed=len(stale),
                       unchanged=len(incoming) - len(new), seconds=time.perf_counter() - start,
                       lexical_rebuilt=rebuilt)


def remove_folder(folder_name: str, collection, *, settings: Settings | None = None) -> IndexReport:
    """Remove every chunk indexed from the folder named ``folder_name`` (e.g. the updates)."""
    return build_index([], collection, replace_folder=folder_name, progress=False, settings=settings)


def index_folder(folder: str | Path, collection=None, *, settings: Settings | None = None,
                 patterns: Sequence[str] = DEFAULT_PATTERNS, progress: bool = True,
                 **chunk_options) -> IndexReport:
    """Load, chunk and index every document under ``folder``; documents that left the folder
    are removed from the index. ``chunk_options`` go to :func:`ragft_helpers.corpus.chunk_document`.
    """
    collection = collection if collection is not None else open_collection(settings)
    documents = load_documents(folder, patterns)
    chunks = chunk_documents(documents, **chunk_options)
    return build_index(chunks, collection, replace_folder=documents[0].folder, progress=progress,
                       settings=settings)
