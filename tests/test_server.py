"""A real Chroma server (`ragft serve-index`): shared index over HTTP, crash recovery, errors."""
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import server, store, retrieval, cli
from ragft_helpers.config import get_settings

FILES = {
    "tern-card.md": "# Tern Card\n\n## Cost\n\nThe Tern Card costs £25.00 a year.\n\n"
                    "## Benefits\n\nHolders get 15% off foot-passenger fares.\n",
    "pets.md": "# Travelling with Pets\n\n## Dogs\n\nDogs travel free on a lead. "
               "Each passenger may bring up to two dogs.\n",
    "catering.md": "# Onboard Catering\n\n## Café\n\nThe Gull's Nest Café serves soup, "
                   "sandwiches and hot drinks.\n",
}
QUESTION = "Can I bring my dog on board?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningServer:
    """A `chroma run` process on one folder and port that can be crashed and started again."""

    def __init__(self, folder: Path, log: Path):
        self.folder, self.log, self.port = folder, log, free_port()
        self.url = server.server_url("127.0.0.1", self.port)
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.proc = server.start_server(self.folder, "127.0.0.1", self.port, log=self.log)
        return server.wait_until_ready(self.url, 120, proc=self.proc, log=self.log)

    def crash(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            server.stop_server(self.proc)


@pytest.fixture
def chroma_server(tmp_path):
    running = RunningServer(tmp_path / "server-index", tmp_path / "server.log")
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _write(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_a_server_index_is_shared_and_survives_a_crash(chroma_server, tmp_path):
    settings = get_settings({"RAGFT_CHROMA_URL": chroma_server.url, "RAGFT_PROFILE": "smoke",
                             "RAGFT_CACHE_DIR": str(tmp_path / "cache")})
    folder = _write(tmp_path / "kb")
    collection = store.open_collection(settings)
    report = store.index_folder(folder, collection, progress=False, settings=settings)
    count = collection.count()
    assert report.added == count == 4 and report.lexical_rebuilt
    hits = retrieval.retrieve(QUESTION, k=2, settings=settings)  # a second client, opened from settings
    assert hits[0].metadata["source"] == "pets.md"
    for method in retrieval.METHODS:  # the BM25 side works the same beside a server
        assert retrieval.retrieve(QUESTION, 1, settings=settings, method=method)[0].metadata["source"] == "pets.md"
    typo = retrieval.retrieve("wher can I buy sandwhiches", 1, settings=settings)  # corrected, then fused
    assert typo[0].metadata["source"] == "catering.md"
    assert not store.persistent_path(settings).exists()  # nothing went to the embedded index

    chroma_server.crash()
    assert chroma_server.proc.returncode == -signal.SIGKILL
    assert server.heartbeat_status(chroma_server.url, timeout=1) is None
    chroma_server.start()

    reopened = store.open_collection(settings)
    assert reopened.count() == count
    after = retrieval.retrieve(QUESTION, k=2, collection=reopened, settings=settings)
    assert [h.id for h in after] == [h.id for h in hits]
    again = store.index_folder(folder, reopened, progress=False, settings=settings)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, count)
    assert not again.lexical_rebuilt
    assert reopened.count() == count


def test_an_unreachable_server_fails_fast_naming_the_url_and_the_start_command(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # closed: nothing listens
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path), "RAGFT_CHROMA_URL": url})
    start = time.monotonic()
    with pytest.raises(store.StoreError) as info:
        store.open_collection(settings)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and "make chroma" in message and "ragft serve-index" in message


def test_a_server_that_never_answers_fails_within_the_probe_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SERVER_PROBE_TIMEOUT", 1.0)
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path), "RAGFT_CHROMA_URL": url})
        outcome = []

        def open_client():
            try:
                outcome.append(store.make_client(settings))
            except Exception as err:
                outcome.append(err)

        opener = threading.Thread(target=open_client, daemon=True)  # a hang fails, not blocks
        opener.start()
        opener.join(4)
        assert not opener.is_alive(), "make_client waited on a server that never answers"
    assert isinstance(outcome[0], store.StoreError)
    assert "nothing answered within 1 s" in str(outcome[0]) and url in str(outcome[0])


def test_a_busy_port_is_refused_before_starting(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve-index", "--path", str(tmp_path / "index"),
                         "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "--port" in err
    assert not (tmp_path / "index").exists()


def test_a_server_that_exits_early_is_reported_with_its_output(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; print('bind failed: boom', "
                                 "file=sys.stderr); sys.exit(3)"], stderr=out)
    with pytest.raises(server.ServerError) as info:
        server.wait_until_ready(f"http://127.0.0.1:{free_port()}", 30, proc=proc, log=log)
    assert "exited with code 3" in str(info.value) and "bind failed: boom" in str(info.value)


def test_the_chroma_command_is_found_next_to_python_or_reported(tmp_path, monkeypatch):
    assert Path(server.find_chroma()).parent == Path(sys.executable).parent
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(server.ServerError, match="pip install -c constraints.txt chromadb"):
        server.find_chroma()


def test_the_readme_token_settings_reach_a_token_checking_proxy(tmp_path, monkeypatch):
    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        """Stands in for the reverse proxy of README's 'Scaling out': records, then refuses."""

        def do_GET(self):
            seen.append((self.path, self.headers.get("X-Chroma-Token")))
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Unauthorized", "message": "token required"}')

        def log_message(self, *args):
            pass

    proxy = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name, value in {
                "CHROMA_CLIENT_AUTH_PROVIDER": "chromadb.auth.token_authn.TokenAuthClientProvider",
                "CHROMA_CLIENT_AUTH_CREDENTIALS": "a-long-random-token",
                "CHROMA_AUTH_TOKEN_TRANSPORT_HEADER": "X-Chroma-Token"}.items():
            monkeypatch.setenv(name, value)
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path), "RAGFT_CHROMA_URL": url})
        with pytest.raises(store.StoreError, match="Unauthorized"):
            store.make_client(settings)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert seen[0] == (server.HEARTBEAT_PATH, None)  # the reachability probe carries no token
    assert "a-long-random-token" in {token for _, token in seen[1:]}
