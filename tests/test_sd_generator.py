import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from glass.errors import MissingInput
from glass.synth.generator import SkipSample, SynthSample, synthesis_seed
from glass.synth.stable_diffusion import StableDiffusionGenerator
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion

# The tiny model's paper-like setting: 64 px, VAE factor 4 → 16x16 latent; DD's ratios give
# cross 4x4 (latent/4) and self 8x8 (latent/2), as 16/32 are for SD's 64x64 latent.
TINY = {"image_size": 64, "vae_scale_factor": 4, "cross_attention_res": 4,
        "self_attention_res": 8, "steps": 3}
RECORDS = [
    {"key": "coco-1", "caption": "A dog on a bed.", "prompt": "A dog on a bed.; dog bed",
     "classes": ["dog", "bed"]},
    {"key": "coco-2", "caption": "A hot dog.", "prompt": "A hot dog.; hot dog refrigerator",
     "classes": ["hot dog", "refrigerator"]},
    {"key": "coco-3", "caption": "A teddy bear.", "prompt": "A teddy bear.; teddy bear",
     "classes": ["teddy bear"]},
]




pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator(tiny_sd_path):
    return StableDiffusionGenerator(str(tiny_sd_path), device="cpu", store_attention=True, **TINY)


def test_tiny_model_is_deterministic_small_and_says_it_is_random(tiny_sd_path, tmp_path):
    again = build_tiny_stable_diffusion(tmp_path / "again", seed=0)
    files = sorted(p.relative_to(tiny_sd_path) for p in tiny_sd_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (tiny_sd_path / name).read_bytes() == (again / name).read_bytes(), name
    assert sum((tiny_sd_path / name).stat().st_size for name in files) < 10 * 2**20
    assert "RANDOM" in (tiny_sd_path / "README.md").read_text()


def seeds_of(records):
    return [synthesis_seed(0, record["key"]) for record in records]


def test_batch_gives_samples_with_masks_and_metadata(generator, tiny_sd_path):
    results = generator.generate_batch(RECORDS, seeds_of(RECORDS))
    assert [sample.key for sample in results] == ["coco-1", "coco-2", "coco-3"]
    for record, sample in zip(RECORDS, results):
        assert isinstance(sample, SynthSample)
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (64, 64) and sample.mask.dtype == np.uint8
        classes = len(record["classes"])
        assert set(np.unique(sample.mask).tolist()) <= set(range(classes + 1)) | {255}
        assert sample.attention.shape == (classes, 8, 8)
        assert sample.attention.dtype == np.float16
        metadata = sample.metadata
        assert metadata["classes"] == record["classes"]
        assert metadata["prompt"] == record["prompt"] and metadata["model"] == str(tiny_sd_path)
        assert metadata["generator"] == "stable_diffusion"
        settings = metadata["settings"]
        assert settings["dtype"] == "float32"              # CPU: float16 switched to float32
        assert settings["resolutions"]["cross"] == 4 and settings["resolutions"]["self"] == 8
        assert len(settings["resolutions"]["cross_layers"]) == 4
        assert settings["scheduler"] == "PNDMScheduler"     # the checkpoint's own (SD 2.1-base)
        # PNDM (PLMS) runs steps + 1 UNet calls; the window counts loop iterations
        assert settings["window"]["captured_steps"] == TINY["steps"] + 1
    assert results[1].metadata["label_to_coco_id"] == {"1": 58, "2": 82}


def assert_same_image_up_to_float_noise(image, other):
    """CPU float reductions differ with the batch shape (UNet outputs by ~1e-6), which can move
    a pixel across a rounding boundary: allow one grey level on under 1% of the values."""
    difference = np.abs(image.astype(int) - other.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_image_does_not_depend_on_batch_size_or_position(generator, monkeypatch):
    import glass.synth.stable_diffusion as backend

    # Record the averaged maps handed to pseudo_mask: with random weights they are nearly flat,
    # so the min-max normalised refined maps (and the mask) amplify float noise and cannot be
    # compared across batch shapes; the maps themselves can.
    maps = []

    def recording_pseudo_mask(cross_maps, self_attn, *args, **kwargs):
        maps.append((cross_maps, self_attn))
        return pseudo_mask(cross_maps, self_attn, *args, **kwargs)

    pseudo_mask = backend.pseudo_mask
    monkeypatch.setattr(backend, "pseudo_mask", recording_pseudo_mask)
    record = RECORDS[2]
    alone = generator.generate_batch([record], seeds_of([record]))[0]
    in_batch = generator.generate_batch(RECORDS, seeds_of(RECORDS))[2]
    swapped = generator.generate_batch(RECORDS[::-1], seeds_of(RECORDS[::-1]))[0]
    for other in (in_batch, swapped):
        assert_same_image_up_to_float_noise(alone.image, other.image)
    (cross, self_attn), batch_maps = maps[0], [maps[3], maps[4]]
    for other_cross, other_self in batch_maps:
        np.testing.assert_allclose(other_cross, cross, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(other_self, self_attn, rtol=1e-5, atol=1e-8)


def test_unusable_records_are_skipped_or_unmasked_in_their_slot(generator):
    too_long = {"key": "long", "prompt": "things", "classes": ["refrigerator"] * 20}
    no_classes = {"key": "none", "prompt": "a quiet street", "classes": []}
    results = generator.generate_batch([too_long, RECORDS[0], no_classes], [1, 2, 3])
    assert isinstance(results[0], SkipSample) and "refrigerator" in str(results[0])
    assert isinstance(results[1], SynthSample) and results[1].mask is not None
    assert isinstance(results[2], SynthSample) and results[2].mask is None
    with pytest.raises(SkipSample):
        generator.generate(too_long, 1)
    only_empty = generator.generate_batch([no_classes], [3])[0]
    assert only_empty.mask is None
    assert_same_image_up_to_float_noise(only_empty.image, results[2].image)


def test_paper_resolutions_at_768_fail_before_loading_anything(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("from_pretrained was called before the resolutions were checked")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", must_not_load)
    with pytest.raises(ValueError) as error:
        StableDiffusionGenerator("stabilityai/stable-diffusion-2-1", image_size=768,
                                 cross_attention_res=16, self_attention_res=32)
    assert "768" in str(error.value) and "SD 2.1-base" in str(error.value)


def test_unavailable_model_is_a_missing_input_naming_it_and_the_fix(tmp_path):
    missing = "glass-tests/no-such-stable-diffusion"
    with pytest.raises(MissingInput, match=missing) as error:
        StableDiffusionGenerator(missing, device="cpu", **TINY)
    assert f"hf download {missing}" in str(error.value)
    with pytest.raises(MissingInput, match="not-here does not exist.*models stage"):
        StableDiffusionGenerator(str(tmp_path / "not-here"), device="cpu", **TINY)


def test_other_scheduler_and_window(tiny_sd_path):
    generator = StableDiffusionGenerator(str(tiny_sd_path), device="cpu", scheduler="ddim",
                                         start_step=1, end_step=3, **TINY)
    sample = generator.generate(RECORDS[0], 5)
    settings = sample.metadata["settings"]
    assert settings["scheduler"] == "DDIMScheduler"
    assert generator.pipeline.scheduler.config.clip_sample is False  # latents are unbounded
    assert settings["window"] == {"start_step": 1, "end_step": 3, "captured_steps": 2}
    assert sample.attention is None and sample.mask.shape == (64, 64)
