"""TokenCompose's token loss in the tiny SD's pretraining (glass.pretrain.token_grounding)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from glass.data.toy_world import ToyWorldConfig
from glass.errors import InvalidInput
from glass.pretrain.latent_diffusion import render_pool
from glass.pretrain.token_grounding import (GroundingAttnProcessor, class_maps, coarser_masks,
                                            grounded_layers, grounding_processors,
                                            pool_token_weights, pooled_class_masks,
                                            prompt_class_positions, token_grounding_loss)
from glass.tiny.stable_diffusion import build_tiny_clip_tokenizer, tiny_unet_config


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_clip_tokenizer()


def test_class_positions_in_the_prompt_decode_to_the_classes(tokenizer):
    pool = render_pool(ToyWorldConfig(image_size=64), seed=0, count=12, progress=False)
    for prompt, classes in zip(pool.prompts, pool.classes):
        ids = tokenizer(prompt).input_ids
        groups = prompt_class_positions(tokenizer, prompt, classes)
        assert [tokenizer.decode([ids[i] for i in group]).strip() for group in groups] == classes
        # the class part is the prompt's end: the last group ends just before the end token
        assert groups[-1][-1] == len(ids) - 2
    two_words = "A photo of a stop sign.; stop sign"
    assert prompt_class_positions(tokenizer, two_words, ["stop sign"]) == [[9, 10]]


def test_a_prompt_without_its_class_part_is_refused(tokenizer):
    with pytest.raises(InvalidInput, match="does not end with its class part"):
        prompt_class_positions(tokenizer, "A photo of a kite.", ["kite"])
    with pytest.raises(InvalidInput, match="longer than"):
        prompt_class_positions(tokenizer, "kite " * 80 + "; kite", ["kite"])


def test_class_maps_and_their_pooled_area_shares():
    instance_map = np.zeros((8, 8), dtype=np.int32)
    instance_map[:4, :4] = 1          # a kite in the top-left quarter
    instance_map[4:, 4:] = 2          # a pizza in the bottom-right quarter
    instance_map[4:, :2] = 3          # a second kite, half of the bottom-left quarter
    maps = class_maps(instance_map, ["kite", "pizza", "kite"], ["kite", "pizza"])
    assert set(np.unique(maps)) == {0, 1, 2}
    masks = pooled_class_masks(torch.from_numpy(maps)[None], num_classes=3, side=2)
    assert masks.shape == (1, 3, 4)
    assert masks[0, 0].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert masks[0, 1].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert masks[0, 2].sum() == 0                          # no third class in this scene
    fine = pooled_class_masks(torch.from_numpy(maps)[None], num_classes=2, side=4)
    assert torch.allclose(coarser_masks(fine, 4, 2), masks[:, :2])
    with pytest.raises(InvalidInput, match="do not pool"):
        pooled_class_masks(torch.from_numpy(maps)[None], num_classes=2, side=3)


def test_the_loss_is_zero_inside_the_mask_high_outside_and_ignores_missing_classes():
    # one sample, 4 cells, 3 tokens: token 1 is class 0, token 2 class 1; class 2 is absent
    weights = torch.zeros(1, 3, 3)
    weights[0, 1, 0] = 1.0
    weights[0, 2, 1] = 1.0
    masks = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]])
    inside = torch.zeros(1, 4, 3)
    inside[0, :, 0] = 1.0                       # every cell on the start token ...
    inside[0, 0] = torch.tensor([0.5, 0.5, 0.0])  # ... but class 0's only attention is in its cell
    inside[0, 1] = torch.tensor([0.5, 0.0, 0.5])  # and class 1's in its cell
    assert float(token_grounding_loss([(2, inside)], weights, {2: masks})) == pytest.approx(0.0)
    swapped = inside[:, [1, 0, 2, 3]]           # each class attends to the other's cell
    assert float(token_grounding_loss([(2, swapped)], weights, {2: masks})) == pytest.approx(1.0)
    half = inside.clone()
    half[0, 2] = torch.tensor([0.5, 0.5, 0.0])  # class 0 gets as much outside as inside
    # class 0: share 0.5 -> 0.25; class 1: 0; mean 0.125
    assert float(token_grounding_loss([(2, half)], weights, {2: masks})) == pytest.approx(0.125)
    assert float(token_grounding_loss([(2, half)], torch.zeros_like(weights), {2: masks})) == 0.0


def test_the_grounding_processor_computes_the_default_attention_and_records_probabilities():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config()).eval()
    latents = torch.randn(2, 4, 16, 16)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    timesteps = torch.tensor([10, 500])
    with torch.no_grad():
        expected = unet(latents, timesteps, encoder_hidden_states=context).sample
    default = dict(unet.attn_processors)
    layers = grounded_layers(unet, 16, (16, 8))
    assert {layer.side for layer in layers} == {16, 8}
    with grounding_processors(unet, layers) as processors:
        assert all(isinstance(unet.attn_processors[p.layer.name], GroundingAttnProcessor)
                   for p in processors)
        records = []
        for processor in processors:
            processor.records = records
        with torch.no_grad():
            got = unet(latents, timesteps, encoder_hidden_states=context).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert sorted(side for side, _ in records) == sorted(layer.side for layer in layers)
    for side, probs in records:
        assert probs.shape == (2, side * side, 77)
        assert torch.allclose(probs.sum(-1), torch.ones(2, side * side), atol=1e-5)
    assert {name: type(p) for name, p in unet.attn_processors.items()} == \
        {name: type(p) for name, p in default.items()}
    with pytest.raises(InvalidInput, match="no cross-attention layer at sides"):
        grounded_layers(unet, 16, (32,))


def test_training_with_grounding_lowers_the_loss_and_leaves_default_processors(tokenizer):
    """A few steps at a high weight on one scene: the grounding loss falls, the denoising loss
    is logged apart from it, and the returned (EMA) UNet runs diffusers' own processors."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from glass.pretrain.latent_diffusion import train_denoiser
    from glass.pretrain.params import LatentDiffusionSettings
    from glass.tiny.stable_diffusion import tiny_text_config, tiny_vae_config

    pool = render_pool(ToyWorldConfig(image_size=64), seed=0, count=2, progress=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).requires_grad_(False)
    unet = UNet2DConditionModel(**tiny_unet_config())
    text = CLIPTextModel(tiny_text_config(tokenizer))
    default = {name: type(p) for name, p in unet.attn_processors.items()}
    settings = replace(LatentDiffusionSettings(), unet_steps=30, unet_batch_size=2, warmup_steps=1,
                       caption_dropout=0.0, token_grounding_weight=10.0)
    ema, _, history = train_denoiser(unet, text, tokenizer, vae, pool, settings, seed=0)
    assert {"loss", "grounding", "lr"} <= set(history[0])
    assert np.mean([r["grounding"] for r in history[-5:]]) < 0.8 * np.mean(
        [r["grounding"] for r in history[:5]])
    assert {name: type(p) for name, p in ema.attn_processors.items()} == default
    assert {name: type(p) for name, p in unet.attn_processors.items()} == default
    plain = replace(settings, unet_steps=1, token_grounding_weight=0.0)
    _, _, plain_history = train_denoiser(UNet2DConditionModel(**tiny_unet_config()), text,
                                         tokenizer, vae, pool, plain, seed=0)
    assert "grounding" not in plain_history[0]


def test_pool_token_weights_average_each_class_positions(tokenizer):
    prompts = ["A photo of a stop sign and a kite.; stop sign kite", "Two kites.; kite"]
    weights = pool_token_weights(tokenizer, prompts, [["stop sign", "kite"], ["kite"]], 77)
    assert weights.shape == (2, 77, 2)
    assert torch.allclose(weights.sum(1), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert weights[0, :, 0].nonzero().flatten().tolist() == \
        prompt_class_positions(tokenizer, prompts[0], ["stop sign", "kite"])[0]
