"""Test environment: offline hubs, no analytics, NLTK data from ../shared when not set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
_shared_nltk = REPO_ROOT.parent / "shared" / "nltk_data"
if "NLTK_DATA" not in os.environ and _shared_nltk.is_dir():
    os.environ["NLTK_DATA"] = str(_shared_nltk)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny random-weight Stable Diffusion folder, built once per test session."""
    from glass.tiny.stable_diffusion import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """On small shared CPUs torch's default threads spin against other processes and tiny-SD
    steps take seconds instead of milliseconds; one thread keeps such tests fast and steady."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
