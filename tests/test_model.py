"""The GLASS model modules: slot attention, MLP decoder, semantic guidance, encoder, diffusion
decoder and the assembled loss, on tiny random-weight models (CPU, a few seconds)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from glass.errors import MissingInput
from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.glass import GlassModel, LossWeights
from glass.model.guidance import (
    hungarian_match,
    pseudo_mask_segments,
    semantic_guidance_loss,
    soft_iou,
)
from glass.model.mlp_decoder import MLPDecoder, instance_guidance_loss
from glass.model.slot_attention import SlotAttention
from glass.tiny.dinov2 import build_tiny_dinov2
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion

GRID = (4, 4)
SD_CROSS_ATTENTION_DIM = 32  # the tiny SD UNet's cross_attention_dim
DECODER_IMAGE_SIZE = 32      # tiny SD: VAE factor 4 → 8×8 latents, UNet levels 8/4/2


def small_slot_attention(**overrides) -> SlotAttention:
    config = dict(input_dim=24, grid_size=GRID, num_slots=5, num_iterations=3, slot_size=16,
                  mlp_hidden_size=16, output_dim=SD_CROSS_ATTENTION_DIM)
    config.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SlotAttention(**config)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_dinov2_path(tmp_path_factory):
    return str(build_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2"), seed=0))


@pytest.fixture(scope="module")
def tiny_sd_path(tmp_path_factory):
    return str(build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd"), seed=0))


@pytest.fixture(scope="module")
def decoder(tiny_sd_path) -> DiffusionDecoder:
    return DiffusionDecoder.from_pretrained(tiny_sd_path, DECODER_IMAGE_SIZE)


# ---------------------------------------------------------------------------------------------
# Slot attention and MLP decoder


@pytest.mark.parametrize("num_heads", [1, 2])
def test_slot_attention_shapes_and_softmax_over_slots(num_heads):
    model = small_slot_attention(num_heads=num_heads)
    features = torch.randn(3, 16, 24)
    output = model(features, generator=seeded(0))
    assert output.slots.shape == (3, 5, 16)
    assert output.conditioning.shape == (3, 5, SD_CROSS_ATTENTION_DIM)
    assert output.attention.shape == (3, 5, 16)
    assert (output.attention >= 0).all()
    torch.testing.assert_close(output.attention.sum(dim=1), torch.ones(3, 16))
    with pytest.raises(ValueError, match="expects features"):
        model(torch.randn(3, 9, 24))


def test_slot_attention_is_deterministic_with_a_generator():
    model = small_slot_attention()
    features = torch.randn(2, 16, 24)
    first = model(features, generator=seeded(7))
    again = model(features, generator=seeded(7))
    other = model(features, generator=seeded(8))
    assert torch.equal(first.slots, again.slots)
    assert torch.equal(first.attention, again.attention)
    assert not torch.allclose(first.slots, other.slots)


def test_slot_attention_round_trip(tmp_path):
    model = small_slot_attention(num_heads=2)
    model.save_pretrained(tmp_path)
    loaded = SlotAttention.from_pretrained(tmp_path)
    assert tuple(loaded.config.grid_size) == GRID
    features = torch.randn(2, 16, 24)
    expected, actual = model(features, generator=seeded(1)), loaded(features, generator=seeded(1))
    assert torch.equal(expected.conditioning, actual.conditioning)
    assert torch.equal(expected.attention, actual.attention)


def test_mlp_decoder_round_trip_and_masks(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLPDecoder(slot_size=16, feature_dim=24, num_tokens=16, hidden_size=32)
    # 3 hidden layers = 4 Linear with zero biases, as the official build_mlp (docs/paper-facts.md)
    linears = [layer for layer in model.mlp if isinstance(layer, torch.nn.Linear)]
    assert len(linears) == 4 and all(bool((layer.bias == 0).all()) for layer in linears)
    slots = torch.randn(2, 5, 16)
    output = model(slots)
    assert output.reconstruction.shape == (2, 16, 24)
    assert output.masks.shape == (2, 5, 16)
    torch.testing.assert_close(output.masks.sum(dim=1), torch.ones(2, 16))
    # DINOSAUR's definition: MLP of (slot broadcast + position), alpha softmax over slots
    naive = model.mlp(slots.unsqueeze(2) + model.position_embedding)
    alpha = naive[..., -1].softmax(dim=1)
    torch.testing.assert_close(output.masks, alpha)
    torch.testing.assert_close(output.reconstruction,
                               (alpha.unsqueeze(-1) * naive[..., :-1]).sum(dim=1))
    model.save_pretrained(tmp_path)
    loaded = MLPDecoder.from_pretrained(tmp_path)
    assert torch.equal(loaded(slots).reconstruction, output.reconstruction)
    features = torch.randn(2, 16, 24, requires_grad=True)
    loss = instance_guidance_loss(output.reconstruction, features)
    loss.backward()
    assert features.grad is None  # the target is detached


# ---------------------------------------------------------------------------------------------
# Semantic guidance


def test_pseudo_mask_segments():
    mask = torch.tensor([[0, 0, 3, 3],
                         [0, 255, 3, 1],
                         [255, 255, 1, 1]], dtype=torch.uint8)
    segments, valid = pseudo_mask_segments(mask)
    assert segments.shape == (3, 3, 4)  # background, class 1, class 3
    assert torch.equal(segments[0], mask == 0)
    assert torch.equal(segments[1], mask == 1)
    assert torch.equal(segments[2], mask == 3)
    assert torch.equal(valid, mask != 255)
    only_foreground, _ = pseudo_mask_segments(np.full((2, 2), 4, dtype=np.uint8))
    assert only_foreground.shape[0] == 1  # no empty background segment
    nothing, nothing_valid = pseudo_mask_segments(torch.full((2, 2), 255, dtype=torch.uint8))
    assert nothing.shape[0] == 0 and not nothing_valid.any()


def brute_force_best_iou(iou: np.ndarray) -> float:
    num_slots, num_segments = iou.shape
    if num_segments <= num_slots:
        return max(sum(iou[slot, segment] for segment, slot in enumerate(slots))
                   for slots in itertools.permutations(range(num_slots), num_segments))
    return max(sum(iou[slot, segment] for slot, segment in enumerate(segments))
               for segments in itertools.permutations(range(num_segments), num_slots))


@pytest.mark.parametrize("num_slots,num_segments", [(4, 4), (5, 2), (2, 5), (3, 6), (6, 3)])
def test_hungarian_match_agrees_with_brute_force(num_slots, num_segments):
    generator = seeded(100 * num_slots + num_segments)
    for _ in range(3):
        slot_masks = torch.rand(num_slots, 6, 6, generator=generator)
        labels = torch.randint(0, num_segments, (6, 6), generator=generator)
        segments = labels.unsqueeze(0) == torch.arange(num_segments).view(-1, 1, 1)
        valid = torch.rand(6, 6, generator=generator) > 0.2
        matches = hungarian_match(slot_masks, segments, valid)
        assert len(matches) == min(num_slots, num_segments)
        assert len({slot for slot, _ in matches}) == len(matches)
        assert len({segment for _, segment in matches}) == len(matches)
        iou = soft_iou(slot_masks, segments, valid).double().numpy()
        total = sum(iou[slot, segment] for slot, segment in matches)
        assert total == pytest.approx(brute_force_best_iou(iou), abs=1e-9)
    assert hungarian_match(slot_masks, segments[:0], valid) == []


def attention_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, N) softmax over slots."""
    return logits.softmax(dim=1)


def test_semantic_loss_ignores_unsure_pixels():
    # Grid == pseudo-mask resolution, so the bilinear resize is the identity and each token is
    # one pixel.
    generator = seeded(3)
    masks = torch.randint(0, 3, (2, 4, 4), generator=generator).to(torch.uint8)
    masks[:, 1:3, 1:3] = 255
    logits = torch.randn(2, 5, 16, generator=generator)
    unsure = (masks == 255).view(2, 1, 16).expand_as(logits)
    changed = torch.where(unsure, torch.randn(2, 5, 16, generator=generator) * 5, logits)

    live = logits.clone().requires_grad_(True)
    loss, matches = semantic_guidance_loss(attention_from_logits(live), GRID, masks)
    other, other_matches = semantic_guidance_loss(attention_from_logits(changed), GRID, masks)
    assert torch.isfinite(loss)
    assert matches == other_matches
    torch.testing.assert_close(loss, other)
    loss.backward()
    assert (live.grad[unsure] == 0).all()
    assert live.grad[~unsure].abs().sum() > 0


def test_semantic_loss_is_bce_of_matched_pairs():
    masks = torch.zeros(1, 4, 4, dtype=torch.uint8)
    masks[0, :2] = 1
    logits = torch.randn(1, 3, 16, generator=seeded(5))
    attention = attention_from_logits(logits)
    loss, matches = semantic_guidance_loss(attention, GRID, masks)
    segments, _ = pseudo_mask_segments(masks[0])
    pixels = attention[0].view(3, 4, 4)
    expected = torch.stack([
        torch.nn.functional.binary_cross_entropy(pixels[slot], segments[segment].float())
        for slot, segment in matches[0]]).mean()
    assert len(matches[0]) == 2
    torch.testing.assert_close(loss, expected)


def test_semantic_loss_with_more_segments_than_slots():
    masks = torch.arange(16, dtype=torch.uint8).view(1, 4, 4) % 6  # 6 segments
    attention = attention_from_logits(torch.randn(1, 3, 16, generator=seeded(6)))
    loss, matches = semantic_guidance_loss(attention, GRID, masks)
    assert len(matches[0]) == 3
    assert torch.isfinite(loss)


def test_semantic_loss_without_foreground_or_valid_pixels():
    logits = torch.randn(3, 4, 16, generator=seeded(9)).requires_grad_(True)
    masks = torch.zeros(3, 8, 8, dtype=torch.uint8)  # resized 4×4 → 8×8
    masks[1] = 255                                   # nothing certain: contributes nothing
    loss, matches = semantic_guidance_loss(attention_from_logits(logits), GRID, masks)
    assert [len(image_matches) for image_matches in matches] == [1, 0, 1]
    alone, _ = semantic_guidance_loss(attention_from_logits(logits[[0, 2]]), GRID, masks[[0, 2]])
    torch.testing.assert_close(loss, alone)

    empty = torch.full((2, 8, 8), 255, dtype=torch.uint8)
    loss, matches = semantic_guidance_loss(attention_from_logits(logits[:2]), GRID, empty)
    assert loss.item() == 0.0 and matches == [[], []]
    loss.backward()  # still attached to the graph
    assert logits.grad is not None and (logits.grad == 0).all()


# ---------------------------------------------------------------------------------------------
# Encoder


def test_tiny_dinov2_is_deterministic(tiny_dinov2_path, tmp_path):
    again = build_tiny_dinov2(tmp_path / "again", seed=0)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (again / name).read_bytes() == (Path(tiny_dinov2_path) / name).read_bytes()


def test_encoder_is_frozen(tiny_dinov2_path):
    encoder = FrozenDinov2Encoder(tiny_dinov2_path, image_size=128)
    assert encoder.grid_size == (16, 16) and encoder.feature_dim == 64
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.backbone.training
    images = torch.rand(2, 3, 96, 96, requires_grad=True)
    features = encoder(images)
    assert features.shape == (2, 256, 64)
    assert features.grad_fn is None
    # after the final LayerNorm (weight 1, bias 0 at init): zero mean, unit variance per token
    torch.testing.assert_close(features.mean(-1), torch.zeros(2, 256), atol=1e-4, rtol=0)


def test_encoder_missing_model_names_the_id():
    with pytest.raises(MissingInput, match="facebook/dinov2-missing-for-test.*hf download"):
        FrozenDinov2Encoder("facebook/dinov2-missing-for-test", image_size=448)


# ---------------------------------------------------------------------------------------------
# Diffusion decoder


def test_decoder_loss_reaches_the_conditioning_through_a_frozen_unet(decoder):
    decoder.unet.requires_grad_(False)  # phase 1: slots are trained THROUGH the frozen UNet
    try:
        conditioning = torch.randn(2, 5, SD_CROSS_ATTENTION_DIM, requires_grad=True)
        loss = decoder.loss(torch.rand(2, 3, 48, 48), conditioning, generator=seeded(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert conditioning.grad is not None and conditioning.grad.abs().sum() > 0
        assert not any(parameter.requires_grad for parameter in decoder.vae.parameters())
    finally:
        decoder.unet.requires_grad_(True)
    again = decoder.loss(torch.rand(2, 3, 48, 48, generator=seeded(1)),
                         conditioning.detach(), generator=seeded(0))
    same = decoder.loss(torch.rand(2, 3, 48, 48, generator=seeded(1)),
                        conditioning.detach(), generator=seeded(0))
    assert torch.equal(again, same)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        decoder.loss(torch.rand(2, 3, 32, 32), torch.randn(2, 5, 16))


def test_decoder_reconstruct_samples_images_from_the_slots(decoder):
    conditioning = torch.randn(2, 5, SD_CROSS_ATTENTION_DIM, generator=seeded(3))
    images = decoder.reconstruct(conditioning, num_inference_steps=3, generator=seeded(0))
    side = decoder.image_size
    assert images.shape == (2, 3, side, side)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.equal(images, decoder.reconstruct(conditioning, num_inference_steps=3,
                                                   generator=seeded(0)))
    # the same noise under other slots gives other images: the slots condition the UNet
    other = decoder.reconstruct(conditioning.flip(0), num_inference_steps=3, generator=seeded(0))
    assert not torch.allclose(images, other)
    with pytest.raises(ValueError, match="num_inference_steps"):
        decoder.reconstruct(conditioning, num_inference_steps=0)


def test_decoder_sampling_never_clips_the_latents(decoder):
    """DDIM's pixel-space default clips the predicted clean sample to [-1, 1]; scaled latents
    are not bounded so, and the tiny SD's scheduler config (like the toy SD's) does not say
    clip_sample false. A UNet that predicts zero noise keeps x0 = x_T / sqrt(alpha_bar_T), far
    outside [-1, 1] (x_T ~ N(0, 1), sqrt(alpha_bar_T) ~ 0.07), unless the sampler clips it."""
    assert decoder.noise_scheduler.config.clip_sample  # the config this guards against
    conv_out = decoder.unet.conv_out
    saved = conv_out.weight.detach().clone(), conv_out.bias.detach().clone()
    try:
        with torch.no_grad():
            conv_out.weight.zero_()
            conv_out.bias.zero_()
        conditioning = torch.randn(1, 5, SD_CROSS_ATTENTION_DIM, generator=seeded(3))
        latents = decoder.sample_latents(conditioning, num_inference_steps=3,
                                         generator=seeded(0))
        assert float(latents.abs().max()) > 5.0
    finally:
        with torch.no_grad():
            conv_out.weight.copy_(saved[0])
            conv_out.bias.copy_(saved[1])


@pytest.mark.parametrize("sampler, guidance_scale", [("dpm++", 1.3), ("dpm++", 1.0),
                                                     ("ddim", 3.0)])
def test_decoder_sampling_matches_the_stable_diffusion_pipeline(decoder, tiny_sd_path, sampler,
                                                                guidance_scale):
    """The official evaluation samples with diffusers' StableDiffusionPipeline, the slots given
    as prompt_embeds (guidance against the empty prompt it encodes at the slots' length): our
    decoder gives the same images from the same noise, with and without guidance."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(str(tiny_sd_path), safety_checker=None,
                                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    if sampler == "dpm++":
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    else:
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config,
                                                       clip_sample=False)
    conditioning = torch.randn(2, 5, SD_CROSS_ATTENTION_DIM, generator=seeded(3))
    side = decoder.image_size
    expected = pipeline(prompt_embeds=conditioning, guidance_scale=guidance_scale,
                        num_inference_steps=4, generator=seeded(0), height=side, width=side,
                        output_type="pt").images
    ours = decoder.reconstruct(conditioning, num_inference_steps=4, generator=seeded(0),
                               sampler=sampler, guidance_scale=guidance_scale)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected.float(), atol=1e-5, rtol=0)
    if guidance_scale > 1.0:   # the guidance is not a no-op
        unguided = decoder.reconstruct(conditioning, num_inference_steps=4, generator=seeded(0),
                                       sampler=sampler)
        assert not torch.allclose(ours, unguided, atol=1e-3)
    with pytest.raises(ValueError, match="sampler"):
        decoder.reconstruct(conditioning, num_inference_steps=2, sampler="euler")
    with pytest.raises(ValueError, match="guidance_scale"):
        decoder.reconstruct(conditioning, num_inference_steps=2, guidance_scale=0.5)


def test_decoder_targets_follow_the_prediction_type(decoder):
    from diffusers import DDPMScheduler

    original = decoder.noise_scheduler
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([0, 500, 999])
    alphas = original.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    try:
        assert decoder.prediction_type == "epsilon"  # the tiny SD copies SD 2.1-base's settings
        assert torch.equal(decoder.loss_target(latents, noise, timesteps), noise)

        decoder.noise_scheduler = DDPMScheduler.from_config(original.config,
                                                            prediction_type="v_prediction")
        velocity = alphas.sqrt() * noise - (1 - alphas).sqrt() * latents
        torch.testing.assert_close(decoder.loss_target(latents, noise, timesteps), velocity)

        # The loss itself trains towards v: recompute it step by step from the same generator.
        images, conditioning = torch.rand(2, 3, 32, 32), torch.randn(2, 3, SD_CROSS_ATTENTION_DIM)
        with torch.no_grad():
            loss = decoder.loss(images, conditioning, generator=seeded(4))
            generator = seeded(4)
            clean = decoder.encode_latents(images, generator=generator)
            drawn_noise = torch.randn(clean.shape, generator=generator)
            drawn_t = torch.randint(0, 1000, (2,), generator=generator)
            a = original.alphas_cumprod[drawn_t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * clean + (1 - a).sqrt() * drawn_noise
            prediction = decoder.unet(noisy, drawn_t, encoder_hidden_states=conditioning).sample
            expected = torch.mean((prediction - (a.sqrt() * drawn_noise - (1 - a).sqrt() * clean))
                                  ** 2)
        torch.testing.assert_close(loss, expected)

        decoder.noise_scheduler = DDPMScheduler.from_config(original.config,
                                                            prediction_type="sample")
        assert torch.equal(decoder.loss_target(latents, noise, timesteps), latents)
    finally:
        decoder.noise_scheduler = original


def test_decoder_missing_model_names_the_id():
    with pytest.raises(MissingInput, match="stabilityai/sd-missing-for-test.*hf download"):
        DiffusionDecoder.from_pretrained("stabilityai/sd-missing-for-test", 256)


# ---------------------------------------------------------------------------------------------
# The assembled model and its loss


@pytest.fixture(scope="module")
def glass_model(tiny_dinov2_path, decoder) -> GlassModel:
    encoder = FrozenDinov2Encoder(tiny_dinov2_path, image_size=64)  # 8×8 tokens of 64 dims
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        slot_attention = SlotAttention(input_dim=64, grid_size=(8, 8), num_slots=4,
                                       num_iterations=3, slot_size=32, mlp_hidden_size=32,
                                       output_dim=SD_CROSS_ATTENTION_DIM)
        mlp_decoder = MLPDecoder(slot_size=32, feature_dim=64, num_tokens=64, hidden_size=32)
    return GlassModel(encoder, slot_attention, mlp_decoder, decoder)


def batch(seed: int = 0):
    generator = seeded(seed)
    images = torch.rand(2, 3, 32, 32, generator=generator)
    masks = torch.randint(0, 3, (2, 32, 32), generator=generator).to(torch.uint8)
    masks[:, :4] = 255
    return images, masks


def test_glass_loss_is_the_weighted_sum_of_its_terms(glass_model):
    images, masks = batch()
    weights = LossWeights()
    assert (weights.recon, weights.semantic, weights.instance) == (1.0, 0.7, 0.9)  # paper
    output = glass_model(images, masks, weights=weights, generator=seeded(1))
    terms = output.terms
    assert set(terms) == {"recon", "semantic", "instance", "total"}
    assert all(terms[name] > 0 for name in ("recon", "semantic", "instance"))
    expected = terms["recon"] + 0.7 * terms["semantic"] + 0.9 * terms["instance"]
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(terms["total"], expected)
    assert output.slot_attention.shape == (2, 4, 64)
    assert output.mlp_masks.shape == (2, 4, 64)
    again = glass_model(images, masks, weights=weights, generator=seeded(1))
    assert torch.equal(again.loss, output.loss)  # deterministic given the generator


def test_glass_terms_with_weight_zero_are_skipped(glass_model):
    images, masks = batch(1)
    weights = LossWeights(recon=0.0, semantic=0.0, instance=1.0)
    glass_model.zero_grad()
    output = glass_model(images, None, weights=weights, generator=seeded(2))
    assert output.terms["recon"] == 0 and output.terms["semantic"] == 0
    torch.testing.assert_close(output.loss, output.terms["instance"])
    output.loss.backward()
    # The output projection feeds only the diffusion decoder: no reconstruction, no gradient.
    assert glass_model.slot_attention.output_projection.weight.grad is None
    assert glass_model.mlp_decoder.position_embedding.grad is not None
    assert all(parameter.grad is None for parameter in glass_model.decoder.unet.parameters())

    only_semantic = glass_model(images, masks, weights=LossWeights(0.0, 1.0, 0.0),
                                generator=seeded(2))
    assert only_semantic.mlp_masks is None and only_semantic.terms["instance"] == 0
    torch.testing.assert_close(only_semantic.loss, only_semantic.terms["semantic"])
    with pytest.raises(ValueError, match="pseudo_masks"):
        glass_model(images, None, weights=LossWeights(), generator=seeded(2))


def test_glass_uses_precomputed_features_and_keeps_the_encoder_frozen(glass_model):
    images, masks = batch(2)
    features = glass_model.encoder(images)
    weights = LossWeights(recon=0.0)
    direct = glass_model(images, masks, weights=weights, generator=seeded(3))
    cached = glass_model(images, masks, weights=weights, features=features, generator=seeded(3))
    torch.testing.assert_close(direct.loss, cached.loss)
    torch.testing.assert_close(direct.features, features)  # what a feature cache stores
    glass_model.train()
    assert not glass_model.encoder.backbone.training and not glass_model.decoder.vae.training
    assert glass_model.slot_attention.training


def test_glass_rejects_a_conditioning_width_the_unet_cannot_take(glass_model):
    slot_attention = SlotAttention(input_dim=64, grid_size=(8, 8), num_slots=4, slot_size=32,
                                   mlp_hidden_size=32, output_dim=16)
    with pytest.raises(ValueError, match="cross_attention_dim 32"):
        GlassModel(glass_model.encoder, slot_attention, glass_model.mlp_decoder,
                   glass_model.decoder)


def test_paper_defaults():
    config = SlotAttention(input_dim=768, grid_size=(32, 32)).config
    assert (config.num_slots, config.num_iterations, config.slot_size, config.mlp_hidden_size,
            config.num_heads, config.epsilon, config.output_dim) == (7, 5, 768, 768, 1, 1e-6, 1024)
    decoder_config = MLPDecoder(slot_size=8, feature_dim=8, num_tokens=4).config
    assert (decoder_config.hidden_size, decoder_config.num_hidden_layers) == (1536, 3)
    assert math.isclose(LossWeights().semantic, 0.7) and math.isclose(LossWeights().instance, 0.9)
