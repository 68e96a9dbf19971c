"""Helpers for the RAG vs fine-tuning workbook.

Importing the package probes the Hugging Face Hub once (a few seconds at most) and switches the
HF libraries to offline mode when it cannot be reached, so that no later call hangs on retries.
"""
from ragft_helpers import hub as _hub
from ragft_helpers.config import PROFILES, Settings, get_settings, set_seed

__version__ = "0.1.0"
HUB_STATUS = _hub.prepare_offline_mode()

__all__ = ["HUB_STATUS", "PROFILES", "Settings", "get_settings", "set_seed", "__version__"]
