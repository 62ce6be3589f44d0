"""A tiny random-weight DINOv2 that ``Dinov2Model.from_pretrained`` loads.

The folder written by :func:`build_tiny_dinov2` has the layout of a hub checkpoint such as
``facebook/dinov2-base`` (config.json, model.safetensors, preprocessor_config.json for a
``BitImageProcessor``), so the encoder code runs on CPU exactly as it does with the real model. Its
features are meaningless: the weights are random.

Sizes: the paper feeds 448×448 images to DINOv2 ViT-B/14 (768-d) → 32×32 patch tokens
(docs/paper-facts.md "Model"); here 128×128 images, patch 8 → 16×16 patch tokens, hidden 64, 2 layers,
2 heads, no register tokens.

Command line: ``python -m glass.tiny.dinov2 OUT_DIR [--seed N]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

from glass.io import strip_library_fields
from glass.tiny.cli import run_builder_cli

IMAGE_SIZE = 128
PATCH_SIZE = 8                 # 128 / 8 = 16×16 patch tokens
HIDDEN_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 2                  # head dim 32
# ImageNet statistics, as in facebook/dinov2-base's preprocessor config.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_tiny_dinov2(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the random-weight tiny DINOv2 and its image processor, save both to ``out_dir`` and
    return the path.

    The same ``seed`` always gives byte-identical files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(tiny_dinov2_config()).eval()
    save_dinov2_folder(model, out_dir)
    write_readme(out_dir, seed)
    return out_dir


def save_dinov2_folder(model: Dinov2Model, out_dir: str | Path) -> Path:
    """``model`` and the tiny image processor as a folder ``Dinov2Model.from_pretrained`` (and
    ``FrozenDinov2Encoder``) loads, the same bytes whatever the library versions."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tiny_image_processor().save_pretrained(out_dir)
    strip_library_fields(out_dir)
    return out_dir


def tiny_dinov2_config() -> Dinov2Config:
    return Dinov2Config(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        mlp_ratio=4,
        layer_norm_eps=1e-6,       # DINOv2's
        layerscale_value=1.0,
        use_swiglu_ffn=False,      # as ViT-B (only ViT-g uses SwiGLU)
    )


def tiny_image_processor() -> BitImageProcessor:
    """dinov2-base's processor (resize shortest edge, centre crop, rescale, ImageNet normalise)
    at the tiny image size. ``glass.model.encoder`` does its own resizing and normalisation; the
    processor is saved so that ``AutoImageProcessor.from_pretrained`` works on the folder too."""
    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        resample=3,                # bicubic, as dinov2-base
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def write_readme(out_dir: Path, seed: int) -> None:
    """Say plainly that the folder is a random-weight test model, not a feature extractor."""
    grid = IMAGE_SIZE // PATCH_SIZE
    readme = (
        "# Tiny random-weight DINOv2\n\n"
        "Built by `glass.tiny.dinov2.build_tiny_dinov2` for CPU runs and tests.\n"
        f"The weights are RANDOM (torch seed {seed}); its features are meaningless.\n"
        "Do not use it for real results (the paper uses facebook/dinov2-base at 448 px).\n\n"
        f"- images {IMAGE_SIZE} px, patch {PATCH_SIZE} → {grid}x{grid} patch tokens, no register "
        "tokens\n"
        f"- hidden {HIDDEN_SIZE}, {NUM_LAYERS} layers, {NUM_HEADS} heads, MLP ratio 4\n"
        "- BitImageProcessor with ImageNet mean/std at the tiny size\n"
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    run_builder_cli(build_tiny_dinov2, "DINOv2", argv)


if __name__ == "__main__":
    main()
