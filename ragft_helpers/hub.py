"""Decide quickly whether the Hugging Face Hub is reachable, before any HF library is imported.

``huggingface_hub`` and ``datasets`` read ``HF_HUB_OFFLINE`` once, at import, and a download
with no network retries for about 45 s. One short probe here sets the offline variables instead.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_ENDPOINT = "https://huggingface.co"
SOURCE_HUB = "Hugging Face Hub"  # provenance source of anything loaded from the hub
PROBE_TIMEOUT_S = 3.0
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubStatus:
    reachable: bool
    endpoint: str
    reason: str  # one line: why it is (un)reachable


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


def offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def probe(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> HubStatus:
    """One short HTTP request; any HTTP answer (even an error status) means reachable."""
    url = url or endpoint()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return HubStatus(False, url, f"{url} unreachable ({type(reason).__name__}: {reason})")
    return HubStatus(True, url, f"{url} answered")


_status: HubStatus | None = None


def status(refresh: bool = False) -> HubStatus:
    """The hub status for this process: ``HF_HUB_OFFLINE=1`` is honoured, otherwise probe once."""
    global _status
    if _status is None or refresh:
        if offline_requested():
            _status = HubStatus(False, endpoint(), "HF_HUB_OFFLINE=1 is set")
        else:
            _status = probe()
    return _status


def prepare_offline_mode() -> HubStatus:
    """Probe the hub and, when it is unreachable, switch the HF libraries to offline mode."""
    result = status()
    if not result.reachable:
        for name in _OFFLINE_VARIABLES:
            os.environ[name] = "1"
        _patch_imported_libraries()
    return result


def _patch_imported_libraries() -> None:
    # Libraries imported before this call have already read the environment.
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
