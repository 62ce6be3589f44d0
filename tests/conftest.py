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


@pytest.fixture(scope="session")
def random_trained_model(tmp_path_factory, tiny_sd_path):
    """A phase-2-style trained folder (``glass.json``, ``slot_attention/``, ``mlp_decoder/``,
    ``unet/``) with seeded random modules: tests of the read-back and evaluation paths need no
    training. Encoder input 64 px (8x8 tokens), decoder 48 px, 4 slots; the saved UNet differs
    from the reference Stable Diffusion's, as a fine-tuned one would."""
    import numpy as np
    import torch

    from glass.model.diffusion_decoder import DiffusionDecoder
    from glass.model.encoder import FrozenDinov2Encoder
    from glass.model.glass import GlassModel
    from glass.model.mlp_decoder import MLPDecoder
    from glass.model.slot_attention import SlotAttention
    from glass.tiny.dinov2 import build_tiny_dinov2

    root = tmp_path_factory.mktemp("trained")
    refs = {"encoder": str(build_tiny_dinov2(root / "dinov2")), "stable_diffusion": str(tiny_sd_path)}
    encoder = FrozenDinov2Encoder(refs["encoder"], image_size=64)
    decoder = DiffusionDecoder.from_pretrained(refs["stable_diffusion"], image_size=48)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        slot_attention = SlotAttention(
            input_dim=encoder.feature_dim, grid_size=list(encoder.grid_size), num_slots=4,
            num_iterations=2, slot_size=16, mlp_hidden_size=16, output_dim=decoder.conditioning_dim)
        mlp_decoder = MLPDecoder(slot_size=16, feature_dim=encoder.feature_dim,
                                 num_tokens=int(np.prod(encoder.grid_size)), hidden_size=16,
                                 num_hidden_layers=3)
    with torch.no_grad():
        next(decoder.unet.parameters()).add_(1.0)
    GlassModel(encoder, slot_attention, mlp_decoder, decoder).save_pretrained(
        root / "model", phase=2, references=refs, encoder_image_size=64, decoder_image_size=48)
    return root / "model"
