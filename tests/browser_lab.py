"""Support for tests/test_browser.py: a private JupyterLab server and a cache it can use.

Everything the server and its kernel write (notebook autosaves, settings, workspaces, kernel
runtime files, the Chroma index) goes under one temporary folder; the repository is only read.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = ("install Debian's Chromium: sudo apt-get update && "
                "sudo apt-get install -y --no-install-recommends chromium")
# Chromium runs with the network closed: no sandbox (CI runs as root), no GPU, nothing fetched.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Builds the index into the cache the server's kernel will use, and loads the language model once
# there (converting the bundled GGUF file when no converted copy was linked in).
PREPARE = """
import json
from ragft_helpers import config, assets, store
from ragft_helpers.config import get_settings
settings = get_settings()
collection = store.open_collection(settings)
store.index_folder(config.KNOWLEDGE_DIR, collection, progress=False)
resolved = assets.load_causal_lm(settings)
print(json.dumps({"chunks": collection.count(), "model": resolved.provenance.name}))
"""

# JupyterLab's news and update checks would reach for the closed network and pop up toasts.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False}}


def prepare_cache(cache_dir: Path, env: dict[str, str], timeout: float) -> dict:
    """Fill ``cache_dir`` with what notebook 04 needs: the Chroma index and the model.

    A model already converted in the user's cache is linked, not converted again (a converted
    checkpoint is only ever read).
    """
    from ragft_helpers import assets
    from ragft_helpers.config import get_settings

    cache_dir.mkdir(parents=True, exist_ok=True)
    user_settings = get_settings()
    converted = assets.bundled_checkpoint_dir(user_settings)
    ours = assets.bundled_checkpoint_dir(get_settings({**env, "RAGFT_CACHE_DIR": str(cache_dir)}))
    if (converted / "config.json").is_file() and not ours.exists():
        ours.parent.mkdir(parents=True, exist_ok=True)
        ours.symlink_to(converted, target_is_directory=True)
    done = subprocess.run([sys.executable, "-c", PREPARE], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=cache_dir)
    if done.returncode != 0:
        raise RuntimeError(f"preparing {cache_dir} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def isolated_env(base: Path, cache_dir: Path) -> dict[str, str]:
    """The environment of the server and the preparation step: private Jupyter/IPython folders."""
    env = dict(os.environ)
    for variable, name in (("JUPYTER_CONFIG_DIR", "jupyter-config"),
                           ("JUPYTER_DATA_DIR", "jupyter-data"),
                           ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("IPYTHONDIR", "ipython"),
                           ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
                           ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces")):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        env[variable] = str(folder)
    for relative, values in LAB_SETTINGS.items():
        path = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env["RAGFT_CACHE_DIR"] = str(cache_dir)
    env.pop("RAGFT_CHROMA_URL", None)  # the index lives in cache_dir, not on a shared server
    env.setdefault("RAGFT_PROFILE", "smoke")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    log: Path

    def page_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def rejects_anonymous(self) -> bool:
        """True when the API refuses a request without the token."""
        try:
            urllib.request.urlopen(f"{self.url}/api/contents", timeout=10).close()
        except urllib.error.HTTPError as err:
            return err.code == 403
        return False

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def jupyter_lab(notebook_dir: Path, env: dict[str, str], log: Path, start_timeout: float = 180):
    """Run JupyterLab on 127.0.0.1 with a random token; always stop it and its kernels."""
    token = secrets.token_hex(16)
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
               "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
               f"--ServerApp.root_dir={notebook_dir}",
               "--expose-app-in-browser", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    lab = Lab(f"http://127.0.0.1:{port}", token, log)
    env = {**env, "JUPYTER_TOKEN": token}  # not on the command line, where `ps` shows it
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=notebook_dir, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n"
                                   f"{lab.log_tail()}")
            try:
                lab.api("status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab did not answer within {start_timeout:.0f} s:\n"
                                       f"{lab.log_tail()}") from None
                time.sleep(0.5)
        yield lab
    finally:
        _stop(process, lab, Path(env["JUPYTER_RUNTIME_DIR"]))


def _stop(process: subprocess.Popen, lab: Lab, runtime_dir: Path) -> None:
    if process.poll() is None:
        try:  # a clean shutdown stops the kernels too
            lab.api("shutdown", method="POST")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:  # the server's own process group
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # Kernels run in sessions of their own; ours are the ones whose connection file is in our
    # private runtime folder.
    for pid in _processes_mentioning(str(runtime_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def copy_notebook(name: str, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(ROOT / "notebooks" / name, target / name))
