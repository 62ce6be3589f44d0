"""BLIP-2 captioning on CPU with the tiny random-weight BLIP-2, loaded through from_pretrained."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from glass.errors import MissingInput
from glass.caption.blip2 import Blip2Captioner
from glass.tiny.blip2 import build_tiny_blip2, build_tiny_tokenizer

SAMPLE_SENTENCE = "A man riding a red bike past 3 parked cars, next to a café!"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_blip2(tmp_path_factory.mktemp("tiny_blip2"), seed=0)


@pytest.fixture(scope="session")
def captioner(tiny_dir):
    return Blip2Captioner(str(tiny_dir), device="cpu", batch_size=3)


@pytest.fixture(scope="session")
def images():
    """Three RGB images of different sizes and content."""
    noise = np.random.default_rng(0).integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    gradient = np.tile(np.linspace(0, 255, 33, dtype=np.uint8)[:, None, None], (1, 21, 3))
    return [
        Image.fromarray(noise),
        Image.fromarray(gradient),
        Image.new("RGB", (64, 64), (200, 30, 30)),
    ]


@pytest.fixture
def offline(monkeypatch):
    """Force hub offline mode even if the environment variable was not set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_one_caption_string_per_image(captioner, images):
    captions = captioner.caption_batch(images)
    assert len(captions) == len(images)
    assert all(isinstance(caption, str) for caption in captions)
    # The tiny model's output head only scores word pieces, so captions are non-empty text.
    assert all(caption and caption == caption.strip() for caption in captions)
    assert all(caption.isprintable() for caption in captions)


def test_captions_are_deterministic(captioner, tiny_dir, images):
    first = captioner.caption_batch(images)
    assert captioner.caption_batch(images) == first
    reloaded = Blip2Captioner(str(tiny_dir), device="cpu", batch_size=3)
    assert reloaded.caption_batch(images) == first


@pytest.mark.parametrize("settings", [{}, {"prompt": "a photo of", "num_beams": 2}])
def test_captions_do_not_depend_on_batch_composition(tiny_dir, images, settings):
    one_by_one = Blip2Captioner(str(tiny_dir), device="cpu", batch_size=1, **settings)
    all_at_once = Blip2Captioner(str(tiny_dir), device="cpu", batch_size=3, **settings)
    assert list(one_by_one.caption(images)) == list(all_at_once.caption(images))
    # A batch of 2 + a batch of 1, fed from a generator.
    in_pairs = Blip2Captioner(str(tiny_dir), device="cpu", batch_size=2, **settings)
    assert list(in_pairs.caption(iter(images))) == all_at_once.caption_batch(images)


def test_non_rgb_images_and_empty_batch(captioner, images):
    gray = images[1].convert("L")
    assert len(captioner.caption_batch([gray])) == 1
    assert captioner.caption_batch([]) == []
    assert list(captioner.caption([])) == []


def test_cpu_replaces_half_precision_with_float32(captioner):
    assert captioner.dtype == torch.float32
    assert captioner.model.dtype == torch.float32


def test_prompt_is_not_part_of_the_caption(tiny_dir, images):
    prompted = Blip2Captioner(str(tiny_dir), device="cpu", prompt="a photo of", max_new_tokens=4)
    inputs = prompted._encode(images[:1])
    with torch.inference_mode():
        full_ids = prompted.model.generate(**inputs, **prompted.generate_kwargs)[0]
    new_ids = full_ids[inputs["input_ids"].shape[1] :]
    expected = prompted.processor.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
    assert prompted.caption_batch(images[:1]) == [expected]


def test_saved_folder_reloads_identical_weights(tiny_dir):
    saved = load_file(str(tiny_dir / "model.safetensors"))
    model, loading_info = Blip2ForConditionalGeneration.from_pretrained(
        tiny_dir, output_loading_info=True
    )
    assert not loading_info["missing_keys"] and not loading_info["unexpected_keys"]
    reloaded = model.state_dict()
    assert set(saved) == set(reloaded)
    for name, tensor in saved.items():
        assert torch.equal(tensor, reloaded[name]), name


def test_saved_tokenizer_encodes_like_the_built_one(tiny_dir):
    built = build_tiny_tokenizer()
    processor = Blip2Processor.from_pretrained(tiny_dir)
    reloaded_ids = processor.tokenizer(SAMPLE_SENTENCE).input_ids
    assert reloaded_ids == built(SAMPLE_SENTENCE).input_ids
    assert reloaded_ids[0] == processor.tokenizer.bos_token_id  # OPT prepends BOS ("</s>")
    assert processor.tokenizer.decode(reloaded_ids, skip_special_tokens=True) == SAMPLE_SENTENCE
    assert processor.num_query_tokens == 4


def test_saved_folder_is_small_and_documented(tiny_dir):
    total_bytes = sum(path.stat().st_size for path in tiny_dir.iterdir())
    assert total_bytes < 5 * 1024 * 1024
    assert "random" in (tiny_dir / "README.md").read_text().lower()


def test_same_seed_gives_identical_safetensors_bytes(tmp_path, tiny_dir):
    again = build_tiny_blip2(tmp_path / "again", seed=0)
    other_seed = build_tiny_blip2(tmp_path / "other", seed=1)
    original_bytes = (tiny_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == original_bytes
    assert (other_seed / "model.safetensors").read_bytes() != original_bytes


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("kind", ["missing_local_folder", "unknown_hub_id"])
def test_unavailable_model_raises_missing_input_naming_it(tmp_path, kind):
    if kind == "missing_local_folder":
        model_id = str(tmp_path / "no_such_model")
    else:
        model_id = "glass-tests/no-such-blip2"
    with pytest.raises(MissingInput) as error:
        Blip2Captioner(model_id, device="cpu")
    message = str(error.value)
    assert model_id in message
    if kind == "missing_local_folder":
        assert "does not exist" in message and "models stage" in message
    else:
        assert f"hf download {model_id}" in message
