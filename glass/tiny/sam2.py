"""A tiny random-weight SAM 2 built from sam2's own hydra config.

:func:`build_tiny_sam2` composes the package's smallest config
(``configs/sam2.1/sam2.1_hiera_t.yaml``) with :data:`TINY_OVERRIDES`, which only shrink it,
instantiates it with seeded random weights and writes a folder laid out like a real release: the
resolved config (``sam2_tiny.yaml``), a checkpoint in the format sam2's loader reads
(``sam2_tiny.pt`` = ``{"model": state_dict}``) and a README.

``glass.sam2_model.load_sam2`` loads it like a real release (a folder with one config and one
checkpoint), so the tiny model runs the same code as the paper's.

Why the image size stays 1024: ``SAM2ImagePredictor`` (which the automatic mask generator uses)
hard-codes the backbone feature sizes of a 1024-px input (256², 128², 64²); a smaller
``image_size`` gives wrong feature shapes there. The size is cheap anyway: with 8 channels in the
first stage the whole image encoder takes ~0.1 s per image on a CPU.

Command line: ``python -m glass.tiny.sam2 OUT_DIR [--seed N]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from glass.sam2_model import CHECKPOINT_NAME, CONFIG_NAME
from glass.tiny.cli import run_builder_cli

SOURCE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"   # the package's smallest model

HIDDEN_DIM = 32   # neck / prompt encoder / mask decoder width (the mask decoder's 8 heads need % 8)
MEMORY_DIM = 16   # memory encoder output (video only, but part of the state dict)
TRUNK_EMBED_DIM = 8
# Hiera doubles the width at each of its 4 stages; the FPN neck must list them deepest first.
TRUNK_CHANNELS = [TRUNK_EMBED_DIM * 2**stage for stage in (3, 2, 1, 0)]

# Hydra overrides of the tiny config. Only sizes change; every flag (high-res features, object
# pointers, IoU sigmoid, ...) stays as in the released models so the same code paths run.
TINY_OVERRIDES = [
    f"model.image_encoder.trunk.embed_dim={TRUNK_EMBED_DIM}",
    # One block per stage, two in the third: a global-attention block must not be the first
    # (query-pooling) block of a stage, because Hiera divides by its window size there.
    "model.image_encoder.trunk.stages=[1,1,2,1]",
    "model.image_encoder.trunk.global_att_blocks=[3]",   # in the third stage, as in hiera_t
    f"model.image_encoder.neck.backbone_channel_list=[{','.join(map(str, TRUNK_CHANNELS))}]",
    f"model.image_encoder.neck.d_model={HIDDEN_DIM}",
    f"model.image_encoder.neck.position_encoding.num_pos_feats={HIDDEN_DIM}",
    # Memory attention / encoder are video-only, but SAM2Base builds them and they are in the
    # checkpoint; shrink them so the folder stays small.
    f"model.memory_attention.d_model={HIDDEN_DIM}",
    "model.memory_attention.num_layers=1",
    f"model.memory_attention.layer.d_model={HIDDEN_DIM}",
    f"model.memory_attention.layer.dim_feedforward={2 * HIDDEN_DIM}",
    f"model.memory_attention.layer.self_attention.embedding_dim={HIDDEN_DIM}",
    f"model.memory_attention.layer.cross_attention.embedding_dim={HIDDEN_DIM}",
    f"model.memory_attention.layer.cross_attention.kv_in_dim={MEMORY_DIM}",
    f"model.memory_encoder.out_dim={MEMORY_DIM}",
    # in_dim and the mask downsampler width default to 256 in code, not in the yaml: add them.
    f"++model.memory_encoder.in_dim={HIDDEN_DIM}",
    f"++model.memory_encoder.mask_downsampler.embed_dim={HIDDEN_DIM}",
    f"model.memory_encoder.position_encoding.num_pos_feats={MEMORY_DIM}",
    f"model.memory_encoder.fuser.layer.dim={HIDDEN_DIM}",
    "model.memory_encoder.fuser.num_layers=1",
]


def build_tiny_sam2(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny random-weight SAM 2 folder (config, checkpoint, README) and return it.

    The same ``seed`` always gives byte-identical files.
    """
    from hydra import compose
    from hydra.utils import instantiate

    import sam2  # noqa: F401  (importing sam2 points hydra at the package's configs)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = compose(config_name=SOURCE_CONFIG, overrides=TINY_OVERRIDES)
    OmegaConf.resolve(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(config.model, _recursive_=True)
    # "@package _global_" like sam2's own files, so compose() puts `model` at the top level.
    (out_dir / CONFIG_NAME).write_text("# @package _global_\n\n" + OmegaConf.to_yaml(config),
                                       encoding="utf-8")
    torch.save({"model": model.state_dict()}, out_dir / CHECKPOINT_NAME)
    write_readme(out_dir, model, seed)
    return out_dir


def write_readme(out_dir: Path, model: torch.nn.Module, seed: int) -> None:
    """Say plainly that the folder is a random-weight test model, not a segmenter."""
    num_params = sum(parameter.numel() for parameter in model.parameters())
    overrides = "\n".join(f"    {override}" for override in TINY_OVERRIDES)
    readme = (
        "# Tiny random-weight SAM 2\n\n"
        "Built by `glass.tiny.sam2.build_tiny_sam2` for CPU runs and tests.\n"
        f"The weights are RANDOM (torch seed {seed}); its masks are meaningless.\n"
        "Do not use it for real results.\n\n"
        f"- `{CONFIG_NAME}`: sam2's `{SOURCE_CONFIG}`, resolved, with these hydra overrides:\n\n"
        f"{overrides}\n\n"
        f"- `{CHECKPOINT_NAME}`: `{{\"model\": state_dict}}` as sam2's `build_sam2` reads it "
        f"({num_params:,} parameters)\n"
        "- image size 1024 as in the released models (SAM2ImagePredictor assumes it)\n\n"
        "Load it with `glass.sam2_model.load_sam2(folder)`.\n"
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    run_builder_cli(build_tiny_sam2, "SAM 2", argv)


if __name__ == "__main__":
    main()
