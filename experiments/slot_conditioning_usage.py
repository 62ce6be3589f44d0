"""How much the decoder UNet uses the slots: its denoising loss on toy-val scenes conditioned on
the scene's own slots, against conditionings that carry less (or wrong) information.

    python experiments/slot_conditioning_usage.py

For each trained folder (default: the CPU graph's phase 1, whose UNet is the frozen toy-world SD,
and phase 2, its fine-tuned UNet; run ``dvc repro configs/cpu/dvc.yaml`` first), the same VAE
latents, noise and timesteps are denoised by the folder's UNet under six conditionings:

- ``own_slots``: the scene's projected slots (what the recon loss trains and the decoder samples
  from);
- ``other_slots``: the slots of another scene of the batch (a scene-independent decoder scores
  them as ``own_slots``);
- ``empty_prompt``: the SD text encoder's embedding of the empty prompt (what its classifier-free
  guidance learned as unconditional);
- ``own_caption`` / ``other_caption``: the text encoder's embedding of the scene's / another
  scene's caption in the prompts stage's style (``"<caption>; <class> <class>"``): what the
  generator learned to use;
- ``zeros``: all-zero tokens.

The MSE is against the scheduler's target (epsilon for the toy SD), per timestep. If
``own_slots`` is no better than ``empty_prompt`` the slots do not steer the decoder, and slot
reconstructions can only be as good as an unconditional sample. Writes
reports/slot_conditioning_usage.{json,md}.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from glass.eval.datasets.sample import read_rgb
from glass.io import write_json
from glass.model import GlassModel
from glass.params import load_params, read_seed
from glass.seeding import sample_seed
from glass.text.prompts import build_prompt

CONDITIONINGS = ("own_slots", "other_slots", "empty_prompt", "own_caption", "other_caption",
                 "zeros")


def text_embeddings(stable_diffusion: str, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), max_length, width) last hidden states of the SD text encoder."""
    tokenizer = CLIPTokenizer.from_pretrained(stable_diffusion, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(stable_diffusion, subfolder="text_encoder").eval()
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


@torch.no_grad()
def denoising_losses(folder: Path, records: list[dict], timesteps: list[int],
                     seed: int) -> dict[str, dict[str, float]]:
    model = GlassModel.from_pretrained(folder, with_decoder=True)
    decoder = model.decoder
    images = torch.stack([torch.from_numpy(read_rgb(r["file"])).permute(2, 0, 1)
                          for r in records]).float() / 255
    keys = [r["image_id"] for r in records]
    slots = model.infer_slots(images, keys, seed=seed).conditioning
    stable_diffusion = str(model.index.stable_diffusion.resolve(folder))
    # the prompts stage's format for each scene's first ground-truth caption, and the empty
    # prompt last: one text-encoder load for both
    texts = text_embeddings(stable_diffusion,
                            [build_prompt(r["captions"][0], r["classes"]) for r in records] + [""])
    captions, empty = texts[:-1], texts[-1:].expand(len(records), -1, -1)
    conditionings = {"own_slots": slots, "other_slots": slots.roll(1, 0),
                     "empty_prompt": empty, "own_caption": captions,
                     "other_caption": captions.roll(1, 0), "zeros": torch.zeros_like(slots)}
    generator = torch.Generator().manual_seed(sample_seed(seed, "slot-conditioning", "noise"))
    latents = decoder.encode_latents(images, generator=generator)
    losses: dict[str, dict[str, float]] = {}
    for step in timesteps:
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.full((len(records),), step)
        noisy = decoder.noise_scheduler.add_noise(latents, noise, t)
        target = decoder.loss_target(latents, noise, t)
        losses[str(step)] = {
            name: round(F.mse_loss(decoder.unet(noisy, t, encoder_hidden_states=c).sample,
                                   target).item(), 5)
            for name, c in conditionings.items()}
        print(folder, step, losses[str(step)], flush=True)
    return losses


def markdown(report: dict) -> str:
    lines = ["# How much the decoder UNet uses the slots", "",
             "`python experiments/slot_conditioning_usage.py`: denoising MSE on "
             f"{report['images']} toy-val scenes (same latents, noise, timesteps per row).", ""]
    for folder, losses in report["folders"].items():
        lines += [f"## {folder}", "", "| t | " + " | ".join(CONDITIONINGS) + " |",
                  "|---|" + "---|" * len(CONDITIONINGS)]
        lines += [f"| {t} | " + " | ".join(f"{row[c]:.4f}" for c in CONDITIONINGS) + " |"
                  for t, row in losses.items()]
        mean = {c: float(np.mean([row[c] for row in losses.values()])) for c in CONDITIONINGS}
        lines += ["| mean | " + " | ".join(f"{mean[c]:.4f}" for c in CONDITIONINGS) + " |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--models", nargs="+", default=["data/cpu/train/phase1/model",
                                                         "data/cpu/train/phase2/model"])
    parser.add_argument("--index", default="data/cpu/prepared/index_eval.jsonl")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 400, 600, 800, 950])
    parser.add_argument("--report-dir", default="reports")
    args = parser.parse_args()
    seed = read_seed(load_params(args.params))
    with open(args.index) as handle:
        records = [json.loads(line) for line in handle][:args.images]
    report = {"images": len(records), "seed": seed, "timesteps": args.timesteps,
              "folders": {folder: denoising_losses(Path(folder), records, args.timesteps, seed)
                          for folder in args.models}}
    out = Path(args.report_dir)
    write_json(out / "slot_conditioning_usage.json", report)
    (out / "slot_conditioning_usage.md").write_text(markdown(report) + "\n")


if __name__ == "__main__":
    main()
