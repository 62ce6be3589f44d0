import inspect

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from glass.synth.attention import (
    AttentionStore,
    CapturingAttnProcessor,
    capture_attention,
    select_capture_layers,
    unet_attention_levels,
    validate_attention_resolutions,
)
from glass.synth.class_tokens import class_token_groups, encode_class_texts

LATENT = 16                       # tiny SD: 64 px images, VAE scale factor 4
CROSS, SELF = 4, 8                # DD's ratios (latent/4, latent/2)
CLASSES = [["dog", "hot dog"], ["refrigerator"]]
PROMPTS = ["a dog next to a hot dog; dog hot dog", "a refrigerator; refrigerator"]




pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(tiny_sd_path):
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    # DDIM: one UNet call per step, so loop indices are step numbers
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def make_store(pipe, classes=CLASSES, **window):
    groups = [class_token_groups(pipe.tokenizer, names) for names in classes]
    embeddings = encode_class_texts(pipe, classes, "cpu")
    return AttentionStore(len(classes), CROSS, SELF, embeddings, groups, **window)


def generate(pipe, steps=3, store=None, layers=None, seeds=(11, 12)):
    arguments = {"prompt": PROMPTS, "height": 64, "width": 64, "num_inference_steps": steps,
                 "guidance_scale": 7.5, "output_type": "np",
                 "generator": [torch.Generator().manual_seed(seed) for seed in seeds]}
    if store is None:
        return pipe(**arguments).images
    with capture_attention(pipe.unet, store, layers):
        return pipe(**arguments, callback_on_step_end=store.on_step_end).images


def test_validate_attention_resolutions():
    assert validate_attention_resolutions(512, 8, 16, 32) == 64
    assert validate_attention_resolutions(64, 4, 4, 8) == 16
    with pytest.raises(ValueError) as error:
        validate_attention_resolutions(768, 8, 16, 32)
    message = str(error.value)
    assert "768" in message and "96" in message and "SD 2.1-base" in message
    assert "cross 24, self 48" in message           # the scaled alternative
    with pytest.raises(ValueError, match="self-attention resolution 32"):
        validate_attention_resolutions(768, 8, 24, 32)
    with pytest.raises(ValueError, match="multiple of the VAE scale factor"):
        validate_attention_resolutions(500, 8, 16, 32)
    with pytest.raises(ValueError, match="does not exist"):
        validate_attention_resolutions(512, 8, 12, 32)
    # SD 2.1's UNet has attention down to 8x8 at 512 px (4 levels): 4x4 does not exist
    validate_attention_resolutions(512, 8, 4, 32)
    with pytest.raises(ValueError, match="64, 32, 16, 8"):
        validate_attention_resolutions(512, 8, 4, 32, attention_levels=4)


def test_pipeline_orders_the_guidance_batch_uncond_then_cond():
    # The cond-half selection relies on this line of the installed pipeline.
    source = inspect.getsource(StableDiffusionPipeline.__call__)
    assert "torch.cat([negative_prompt_embeds, prompt_embeds])" in source
    assert "noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)" in source


def test_processors_only_on_chosen_layers_and_restored(pipe):
    layers = select_capture_layers(pipe.unet, LATENT, CROSS, SELF)
    assert unet_attention_levels(pipe.unet) == 3
    names = {layer.name: layer.kind for layer in layers}
    block = "attentions.{}.transformer_blocks.0.attn{}.processor"
    assert names == {
        "down_blocks.2." + block.format(0, 2): "cross", "mid_block." + block.format(0, 2): "cross",
        "up_blocks.0." + block.format(0, 2): "cross", "up_blocks.0." + block.format(1, 2): "cross",
        "down_blocks.1." + block.format(0, 1): "self", "up_blocks.1." + block.format(0, 1): "self",
        "up_blocks.1." + block.format(1, 1): "self",
    }
    originals = dict(pipe.unet.attn_processors)
    store = make_store(pipe)
    with capture_attention(pipe.unet, store, layers):
        inside = pipe.unet.attn_processors
        for name, processor in inside.items():
            if name in names:
                assert isinstance(processor, CapturingAttnProcessor)
            else:
                assert processor is originals[name]
    assert all(pipe.unet.attn_processors[name] is p for name, p in originals.items())
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(pipe.unet, store, layers):
            raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[name] is p for name, p in originals.items())
    with pytest.raises(ValueError, match=r"has them at \[16, 8, 4\]"):
        select_capture_layers(pipe.unet, LATENT, 2, SELF)


def test_capture_leaves_the_images_bit_identical(pipe):
    layers = select_capture_layers(pipe.unet, LATENT, CROSS, SELF)
    plain = generate(pipe)
    store = make_store(pipe)
    captured = generate(pipe, store=store, layers=layers)
    assert np.array_equal(plain, captured)
    assert store.cross_updates == 3 * 4 and store.self_updates == 3 * 3


def test_maps_come_from_the_conditional_half(pipe):
    """One UNet call on a [uncond, cond] batch whose halves differ; the stored maps equal a
    manual computation on the cond half's inputs of one layer, not the uncond half's."""
    unet = pipe.unet
    layers = select_capture_layers(unet, LATENT, CROSS, SELF)
    self_layer = next(layer for layer in layers if layer.kind == "self")
    cross_layer = next(layer for layer in layers if layer.kind == "cross")
    single = [layer for layer in layers if layer in (self_layer, cross_layer)]
    store = make_store(pipe)
    inputs = {}

    def keep_input(name):
        def hook(module, args, kwargs):
            inputs[name] = (module, args[0] if args else kwargs["hidden_states"])
        return hook

    modules = dict(unet.named_modules())
    handles = [modules[layer.name.removesuffix(".processor")].register_forward_pre_hook(
        keep_input(layer.kind), with_kwargs=True) for layer in single]
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, LATENT, LATENT, generator=generator)
    text = torch.randn(4, 77, 32, generator=generator)
    try:
        with torch.no_grad(), capture_attention(unet, store, single):
            unet(latents, 500, encoder_hidden_states=text)
    finally:
        for handle in handles:
            handle.remove()

    def head_mean_probs(attn, hidden, keys_from):
        heads, dim = attn.heads, attn.to_q.out_features // attn.heads
        q = attn.to_q(hidden).view(hidden.shape[0], -1, heads, dim).transpose(1, 2)
        k = attn.to_k(keys_from).view(keys_from.shape[0], -1, heads, dim).transpose(1, 2)
        return ((q @ k.transpose(-1, -2)) * dim**-0.5).softmax(-1).mean(1)

    with torch.no_grad():
        attn, hidden = inputs["self"]
        cond = head_mean_probs(attn, hidden[2:], hidden[2:])
        uncond = head_mean_probs(attn, hidden[:2], hidden[:2])
        for sample in range(2):
            stored = store.self_attention(sample)
            torch.testing.assert_close(stored, cond[sample], rtol=1e-4, atol=1e-6)
            assert not torch.allclose(stored, uncond[sample], atol=1e-4)
            torch.testing.assert_close(stored.sum(-1), torch.ones(SELF * SELF))

        attn, hidden = inputs["cross"]
        for keys_from, expected_equal in ((hidden[2:], True), (hidden[:2], False)):
            probs = head_mean_probs(attn, keys_from, store.class_embeddings)  # (B, 16, 77)
            for sample, groups in enumerate([class_token_groups(pipe.tokenizer, names)
                                             for names in CLASSES]):
                manual = torch.stack([probs[sample][:, group].mean(-1) for group in groups])
                stored = store.cross_maps(sample).reshape(len(groups), -1)
                assert torch.allclose(stored, manual, rtol=1e-4, atol=1e-6) == expected_equal


def test_running_sums_do_not_grow_with_steps_and_window_selects_steps(pipe):
    layers = select_capture_layers(pipe.unet, LATENT, CROSS, SELF)

    def store_bytes(store):
        tensors = [value for value in vars(store).values() if isinstance(value, torch.Tensor)]
        tensors += list(store.class_keys.values())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    short, long = make_store(pipe), make_store(pipe)
    generate(pipe, steps=2, store=short, layers=layers)
    generate(pipe, steps=6, store=long, layers=layers)
    assert store_bytes(short) == store_bytes(long)
    assert long.cross_updates == 3 * short.cross_updates
    for store in (short, long):
        rows = store.self_attention(1).sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows))
        maps = store.cross_maps(0)
        assert maps.shape == (2, CROSS, CROSS) and (maps >= 0).all() and (maps <= 1).all()
        assert store.cross_maps(1).shape == (1, CROSS, CROSS)

    windowed = make_store(pipe, start_step=1, end_step=3)
    generate(pipe, steps=4, store=windowed, layers=layers)
    assert windowed.cross_updates == 2 * 4 and windowed.self_updates == 2 * 3
    empty = make_store(pipe, start_step=5)
    generate(pipe, steps=2, store=empty, layers=layers)
    with pytest.raises(RuntimeError, match="no attention was captured"):
        empty.cross_maps(0)


def test_capture_refuses_non_default_processors(pipe):
    from diffusers.models.attention_processor import AttnProcessor

    layers = select_capture_layers(pipe.unet, LATENT, CROSS, SELF)
    pipe.unet.set_attn_processor(AttnProcessor())
    try:
        with pytest.raises(TypeError, match="AttnProcessor2_0"):
            with capture_attention(pipe.unet, make_store(pipe), layers):
                pass
    finally:
        pipe.unet.set_attn_processor(AttnProcessor2_0())


def test_paper_setting_selects_five_cross_and_five_self_layers_of_sd21_base():
    # SD 2.1-base's UNet architecture (no weights: meta device), 512 px → 64x64 latent.
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True)
    assert unet_attention_levels(unet) == 4
    layers = select_capture_layers(unet, 64, 16, 32)
    assert len(unet.attn_processors) == 32
    cross = sorted(layer.name.split(".attentions")[0] for layer in layers if layer.kind == "cross")
    self_ = sorted(layer.name.split(".attentions")[0] for layer in layers if layer.kind == "self")
    assert cross == ["down_blocks.2"] * 2 + ["up_blocks.1"] * 3
    assert self_ == ["down_blocks.1"] * 2 + ["up_blocks.2"] * 3
