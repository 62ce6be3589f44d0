"""Import the authors' released GLASS checkpoints into a folder ``GlassModel.from_pretrained`` loads.

    python -m glass.convert official <checkpoint_dir> <out_dir> [--encoder ID] [--stable-diffusion ID]

The official release (docs/paper-facts.md "Official checkpoints") holds, under a checkpoint folder
such as ``glass/glass_st1/glass/checkpoint``:

- ``multiheadstevesa/``: LSD's slot-attention module saved by diffusers (``config.json`` and
  ``diffusion_pytorch_model.safetensors`` or ``.bin``);
- ``unet2dconditionmodel/``: the fine-tuned decoder UNet (a plain diffusers folder), present in
  the phase-2 release; without it the folder is a phase-1 model whose decoder is the Stable
  Diffusion reference's UNet.

There is no MLP decoder in the release, so the converted model has only slot-attention masks.
Parameter names map one to one except for the positional embedding: the official module adds a
1×1 convolution of a stored 4-channel grid whose channels are (row, column, 1−row, 1−column);
ours is a Linear over (column, row, 1−column, 1−row) computed from the grid size, so its weight is
the convolution's with channels 0↔1 and 2↔3 swapped, and the stored grid is checked to be the
standard one instead of being loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from glass.errors import InvalidInput, MissingInput
from glass.model.slot_attention import SlotAttention, cartesian_grid

log = logging.getLogger(__name__)

OFFICIAL_SLOT_ATTENTION = "multiheadstevesa"
OFFICIAL_UNET = "unet2dconditionmodel"
OFFICIAL_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# the models the official evaluation uses (docs/paper-facts.md "Official checkpoints"): DINOv2
# ViT-B/14 (torch hub dinov2_vitb14 = facebook/dinov2-base) at 448 px and SD 2.1's VAE
PAPER_ENCODER = "facebook/dinov2-base"
PAPER_STABLE_DIFFUSION = "stabilityai/stable-diffusion-2-1"
PAPER_ENCODER_IMAGE_SIZE = 448
PAPER_DECODER_IMAGE_SIZE = 256

# official name → ours, for every tensor but the positional embedding's
RENAMED = {
    "slot_mu": "slot_mu", "slot_log_sigma": "slot_log_sigma",
    "in_layer_norm.weight": "input_norm.weight", "in_layer_norm.bias": "input_norm.bias",
    "in_mlp.0.weight": "input_mlp.0.weight", "in_mlp.0.bias": "input_mlp.0.bias",
    "in_mlp.2.weight": "input_mlp.2.weight", "in_mlp.2.bias": "input_mlp.2.bias",
    "norm_inputs.weight": "attention_input_norm.weight",
    "norm_inputs.bias": "attention_input_norm.bias",
    "norm_slots.weight": "slot_norm.weight", "norm_slots.bias": "slot_norm.bias",
    "norm_mlp.weight": "update_norm.weight", "norm_mlp.bias": "update_norm.bias",
    "project_q.weight": "project_q.weight", "project_k.weight": "project_k.weight",
    "project_v.weight": "project_v.weight",
    "gru.weight_ih": "gru.weight_ih", "gru.weight_hh": "gru.weight_hh",
    "gru.bias_ih": "gru.bias_ih", "gru.bias_hh": "gru.bias_hh",
    "mlp.0.weight": "update_mlp.0.weight", "mlp.0.bias": "update_mlp.0.bias",
    "mlp.2.weight": "update_mlp.2.weight", "mlp.2.bias": "update_mlp.2.bias",
    "out_layer_norm.weight": "output_norm.weight", "out_layer_norm.bias": "output_norm.bias",
    "out_linear.weight": "output_projection.weight", "out_linear.bias": "output_projection.bias",
}
POSITION_KEYS = ("pos.pe", "pos.projection.weight", "pos.projection.bias")
# the official grid's channels are (row, col, 1-row, 1-col); ours (col, row, 1-col, 1-row)
CHANNEL_ORDER = [1, 0, 3, 2]
# options of the official module this conversion does not support (the release has them off)
UNSUPPORTED_OPTIONS = {"learnable_slot_init": False, "bi_level": False, "init_mlp": False}


def slot_attention_config(official: dict[str, Any], where: str) -> dict[str, Any]:
    """Our ``SlotAttention`` config for the official module's ``config.json``."""
    for option, supported in UNSUPPORTED_OPTIONS.items():
        if official.get(option, supported) != supported:
            raise InvalidInput(f"{where}: {option}={official[option]!r} is not supported (the "
                               f"released GLASS checkpoints have {option}={supported})")
    try:
        side = int(official["input_resolution"])
        return {"input_dim": int(official["input_size"]), "grid_size": [side, side],
                "num_slots": int(official["num_slots"]),
                "num_iterations": int(official["num_iterations"]),
                "slot_size": int(official["slot_size"]),
                "mlp_hidden_size": int(official["mlp_hidden_size"]),
                "num_heads": int(official["num_heads"]),
                "epsilon": float(official.get("epsilon", 1e-8)),   # the module's default
                "output_dim": int(official["out_size"])}
    except KeyError as error:
        raise InvalidInput(f"{where}: key {error} missing; is this the official "
                           "MultiHeadSTEVESA config.json?") from None


def official_grid(side: int) -> torch.Tensor:
    """(1, 4, side, side): the grid the official module stores, channels (row, col, 1-row,
    1-col) at the token centres."""
    ours = cartesian_grid(side, side).reshape(side, side, 4).permute(2, 0, 1)
    return ours[CHANNEL_ORDER][None]


def convert_slot_attention_state(official: dict[str, torch.Tensor], side: int,
                                 where: str) -> dict[str, torch.Tensor]:
    """Our state dict for the official module's. Every official tensor must be used and every
    one of ours given; the stored positional grid must be the standard one."""
    expected = set(RENAMED) | set(POSITION_KEYS)
    missing, unexpected = sorted(expected - set(official)), sorted(set(official) - expected)
    if missing or unexpected:
        raise InvalidInput(f"{where}: not the official MultiHeadSTEVESA state dict (missing "
                           f"{missing or 'none'}, unexpected {unexpected or 'none'})")
    grid = official["pos.pe"].float()
    if grid.shape != (1, 4, side, side) or not torch.allclose(grid, official_grid(side),
                                                              atol=1e-6):
        raise InvalidInput(f"{where}: pos.pe is not the standard {side}x{side} Cartesian grid; "
                           "this conversion computes the grid and cannot carry another one")
    state = {ours: official[name] for name, ours in RENAMED.items()}
    projection = official["pos.projection.weight"]
    state["position_embedding.weight"] = projection[:, :, 0, 0][:, CHANNEL_ORDER].contiguous()
    state["position_embedding.bias"] = official["pos.projection.bias"]
    return state


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in OFFICIAL_WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
    raise MissingInput(f"{folder}: none of {', '.join(OFFICIAL_WEIGHT_FILES)} found; is the "
                       "checkpoint unzipped completely?")


def load_official_slot_attention(checkpoint_dir: str | Path) -> SlotAttention:
    """Our ``SlotAttention`` with the weights of ``<checkpoint_dir>/multiheadstevesa``."""
    folder = Path(checkpoint_dir) / OFFICIAL_SLOT_ATTENTION
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MissingInput(f"{config_path} not found: give the official checkpoint folder that "
                           f"holds {OFFICIAL_SLOT_ATTENTION}/ (e.g. glass/glass_st1/glass/"
                           "checkpoint of the released models)")
    official_config = json.loads(config_path.read_text(encoding="utf-8"))
    config = slot_attention_config(official_config, str(config_path))
    state = convert_slot_attention_state(_read_weights(folder), config["grid_size"][0],
                                         str(folder))
    module = SlotAttention(**config)
    module.load_state_dict(state, strict=True)
    return module.eval()


def convert_official(checkpoint_dir: str | Path, out_dir: str | Path, *,
                     encoder: str = PAPER_ENCODER, stable_diffusion: str = PAPER_STABLE_DIFFUSION,
                     encoder_image_size: int = PAPER_ENCODER_IMAGE_SIZE,
                     decoder_image_size: int = PAPER_DECODER_IMAGE_SIZE) -> Path:
    """Write ``out_dir``, a trained folder of the official checkpoint (phase 2 when it has the
    fine-tuned UNet, else phase 1)."""
    from glass.model.glass import GlassModel

    checkpoint_dir = Path(checkpoint_dir)
    slot_attention = load_official_slot_attention(checkpoint_dir)
    unet = None
    if (checkpoint_dir / OFFICIAL_UNET / "config.json").is_file():
        from diffusers import UNet2DConditionModel

        from glass.model_reference import load_pretrained

        unet = load_pretrained(UNet2DConditionModel, checkpoint_dir / OFFICIAL_UNET,
                               "official decoder UNet",
                               rebuild="unzip the released checkpoint again")
        if unet.config.cross_attention_dim != slot_attention.config.output_dim:
            raise InvalidInput(f"{checkpoint_dir / OFFICIAL_UNET}: cross_attention_dim "
                               f"{unet.config.cross_attention_dim} != slot output "
                               f"{slot_attention.config.output_dim}")
    model = GlassModel(None, slot_attention, None, None)
    model.save_pretrained(
        out_dir, phase=2 if unet is not None else 1,
        references={"encoder": encoder, "stable_diffusion": stable_diffusion},
        encoder_image_size=encoder_image_size, decoder_image_size=decoder_image_size,
        origin="official", unet=unet)
    log.info("converted %s (phase %d) to %s", checkpoint_dir, 2 if unet is not None else 1,
             out_dir)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glass.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    official = commands.add_parser("official", help="the authors' released checkpoint")
    official.add_argument("checkpoint_dir", help="folder holding multiheadstevesa/ (and "
                                                 "unet2dconditionmodel/)")
    official.add_argument("out_dir", help="trained GLASS folder to write")
    official.add_argument("--encoder", default=PAPER_ENCODER,
                          help=f"DINOv2 hub id or folder (default {PAPER_ENCODER})")
    official.add_argument("--stable-diffusion", default=PAPER_STABLE_DIFFUSION,
                          help=f"Stable Diffusion hub id or folder for the VAE and scheduler "
                               f"(default {PAPER_STABLE_DIFFUSION})")
    official.add_argument("--encoder-image-size", type=int, default=PAPER_ENCODER_IMAGE_SIZE)
    official.add_argument("--decoder-image-size", type=int, default=PAPER_DECODER_IMAGE_SIZE)
    args = parser.parse_args(argv)
    convert_official(args.checkpoint_dir, args.out_dir, encoder=args.encoder,
                     stable_diffusion=args.stable_diffusion,
                     encoder_image_size=args.encoder_image_size,
                     decoder_image_size=args.decoder_image_size)
    print(f"wrote {args.out_dir}; evaluate it with evaluate.model: {args.out_dir} "
          "(README \"Evaluating the released checkpoints\")")


if __name__ == "__main__":
    from glass.stage_runner import run_stage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_stage("convert", main)
