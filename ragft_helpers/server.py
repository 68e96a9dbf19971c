"""One Chroma server for many processes: ``ragft serve-index`` (``make chroma``).

Runs the ``chroma run`` command that the chromadb package installs, on a folder of its own
(``RAGFT_CACHE_DIR/chroma-server`` by default), listening on loopback. Every process that sets
``RAGFT_CHROMA_URL`` to its address then shares one index through ``chromadb.HttpClient``
(:func:`ragft_helpers.store.make_client`), instead of several processes writing one
``PersistentClient`` folder.
"""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ragft_helpers.config import Settings, ensure_writable_dir, get_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HEARTBEAT_PATH = "/api/v2/heartbeat"
READY_TIMEOUT = 120.0  # seconds; the server needs several before its heartbeat answers
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ServerError(RuntimeError):
    """The Chroma server cannot be started or did not become ready; the message says why."""


def default_path(settings: Settings | None = None) -> Path:
    """The server's index folder: ``RAGFT_CACHE_DIR/chroma-server``."""
    return (settings or get_settings()).cache_dir / "chroma-server"


def server_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """``http://host:port``, the value for ``RAGFT_CHROMA_URL``."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def find_chroma() -> str:
    """The ``chroma`` executable: next to this Python (its environment's bin), else on PATH."""
    bin_dir = Path(sys.executable).parent
    for name in ("chroma", "chroma.exe"):
        candidate = bin_dir / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("chroma")
    if found:
        return found
    raise ServerError(f"The `chroma` command is neither in {bin_dir} nor on PATH. It comes with "
                      "the chromadb package: run `make setup`, or `pip install -c constraints.txt "
                      "chromadb` in this environment.")


def heartbeat_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of ``url``'s heartbeat, or None when nothing answers within ``timeout``.

    Any HTTP answer counts, even an error status (e.g. 401 from a proxy that wants a token), and
    so does a TLS handshake failure: in both cases something is listening.
    """
    try:
        with urllib.request.urlopen(url.rstrip("/") + HEARTBEAT_PATH, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError as err:
        return 0 if isinstance(err.reason, ssl.SSLError) else None
    except (OSError, ValueError):  # timeouts, resets, malformed replies
        return None


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def start_server(path: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 log: str | Path | None = None) -> subprocess.Popen:
    """Start ``chroma run --path PATH --host HOST --port PORT`` and return the process at once.

    Output goes to ``log`` (stdout and stderr together) or, without one, to this terminal.
    Call :func:`wait_until_ready` before using it and :func:`stop_server` to stop it.
    """
    if port_in_use(host, port):
        raise ServerError(f"Something already listens on {host}:{port}. If it is a Chroma "
                          f"server, use it (RAGFT_CHROMA_URL={server_url(host, port)}); otherwise "
                          "choose another port with --port.")
    folder = ensure_writable_dir(Path(path).expanduser())
    command = [find_chroma(), "run", "--path", str(folder), "--host", host, "--port", str(port)]
    if log is None:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


def _tail(log: str | Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.strip().splitlines()[-lines:])
    return f"\nLast lines of the server's output ({log}):\n{tail}" if tail else ""


def wait_until_ready(url: str, timeout: float = READY_TIMEOUT, *,
                     proc: subprocess.Popen | None = None, log: str | Path | None = None,
                     interval: float = 0.25) -> float:
    """Poll ``url``'s heartbeat until it answers 200; return the seconds waited.

    Raises :class:`ServerError`, with the tail of ``log``, when ``proc`` exits first or nothing
    answers within ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"The Chroma server exited with code {proc.returncode} before "
                              f"answering at {url}.{_tail(log)}")
        if heartbeat_status(url, timeout=min(2.0, max(timeout, 0.1))) == 200:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise ServerError(f"No heartbeat from the Chroma server at {url} after {timeout:.0f} "
                              f"s.{_tail(log)}")
        time.sleep(interval)


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def serve(path: str | Path | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          timeout: float = READY_TIMEOUT) -> int:
    """Run a server in the foreground until Ctrl-C or until it exits; return its exit code."""
    folder = Path(path).expanduser() if path else default_path()
    url = server_url(host, port)
    if host not in LOOPBACK:
        print(f"warning: listening on {host} exposes the index to the network without any "
              "authentication; see 'Scaling out' in README.md.", file=sys.stderr)
    proc = start_server(folder, host, port)
    try:
        seconds = wait_until_ready(url, timeout, proc=proc)
        print(f"\nChroma server ready at {url} after {seconds:.1f} s, index folder {folder}.\n"
              f"In every process that uses the index: export RAGFT_CHROMA_URL={url}\n"
              "Ctrl-C stops the server.", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)
