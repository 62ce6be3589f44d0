"""Where a slot reconstruction's colour comes from — the slots or the sampler's initial noise —
and whether the decoder's noise schedule decides it.

    python experiments/decoder_noise_schedule.py                # phase 2 of 1,000 steps, lr 8e-4
    python experiments/decoder_noise_schedule.py --steps 300 --seeds 3

SD 2.1's noise schedule (the toy SD keeps it) never reaches pure noise: at t = 999 the latents keep
sqrt(alpha_bar) = 0.068 of the image. On 16x16 latents the per-channel mean of the noise has a std
of only 1/16, so a noisy latent still says much of the image's overall colour, the UNet learns to
read it there instead of from its conditioning, and a sample takes its colour from its initial
noise (Lin et al., "Common Diffusion Noise Schedules and Sample Steps Are Flawed", WACV 2024).

Reads the CPU graph's outputs (run ``dvc repro configs/cpu/dvc.yaml`` first). For each row, the
evaluate.generation section's toy-val images are reconstructed from their slots as the predict
stage does (sampler, steps), once per noise seed, and ``glass.eval.reconstruction_error.colour_source``
compares the reconstructions' mean colours across seeds, across images and with the real ones;
the PSNR is the first seed's (the predict stage's seed). Rows:

1. the CPU graph's phase-2 model (``data/cpu/train/phase2/model``);
2. phase 2 retrained from the CPU graph's phase 1 for ``--steps`` at ``--unet-lr``, its decoder
   UNet from ``--sd-decoder`` (default the epsilon-trained continued tiny SD) with the SD
   schedule (epsilon prediction);
3. the same with zero terminal SNR (diffusers' ``rescale_betas_zero_snr``), v-prediction and
   ``trailing`` timesteps, Lin et al.'s fix, set in a copy of that decoder's scheduler config:
   the UNet, pretrained for epsilon, learns v-prediction within phase 2.

The committed report was measured before the CPU configuration's decoder moved to the
zero-terminal-SNR model of configs/toy-pretrain (stage zero_snr_stable_diffusion), so its phase
1 had been trained through the epsilon decoder.

Phase 2 runs in ``--work-dir`` (resumable). Writes reports/decoder_noise_schedule.{json,md}.
"""

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glass.data.params import DataParams
from glass.eval.discovery import image_tensor
from glass.eval.params import EvaluateParams
from glass.eval.predict import limited, reader_settings, reconstruction_target
from glass.eval.predictions import open_reader
from glass.eval.reconstruction_error import colour_source, psnr
from glass.io import atomic_open, write_json
from glass.model import GlassModel
from glass.model_reference import model_reference
from glass.params import load_params, read_section, read_seed
from glass.pretrain.stable_diffusion_continued import ZERO_TERMINAL_SNR
from glass.stage_runner import run_stage
from glass.train.params import TrainParams
from glass.train.trainer import train_phase

log = logging.getLogger("decoder_noise_schedule")

ROWS = {"graph": "the CPU graph's phase-2 model (the params' decoder, steps and lr)",
        "sd_schedule": "phase 2 retrained, SD schedule (epsilon)",
        "zero_terminal_snr": "phase 2 retrained, zero terminal SNR + v-prediction + trailing"}


def zero_terminal_snr_copy(decoder: str, target: Path) -> Path:
    """A copy of the SD folder ``decoder`` whose scheduler config has Lin et al.'s settings."""
    if not target.is_dir():
        staged = target.with_name(target.name + ".partial")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(decoder, staged)
        config_path = staged / "scheduler" / "scheduler_config.json"
        config = json.loads(config_path.read_text())
        write_json(config_path, config | ZERO_TERMINAL_SNR)
        staged.rename(target)
    return target


def colour_row(model: GlassModel, reader, evaluate: EvaluateParams, seeds: int) -> dict:
    """PSNR (seed ``evaluate.seed``) and ``colour_source`` over ``seeds`` noise seeds."""
    section = evaluate.generation
    side = model.index.decoder_image_size
    generated, real, scores = [], [], []
    samples, count = limited(reader, section.images)
    for sample in tqdm(samples, total=count, desc="reconstructions per seed"):
        slots = model.infer_slots(image_tensor(sample), [sample.key], evaluate.seed)
        target = reconstruction_target(sample, side)
        colours = []
        for offset in range(seeds):
            image = model.generate(slots.conditioning, [sample.key], evaluate.seed + offset,
                                   section.num_inference_steps, sampler=section.sampler,
                                   guidance_scale=section.guidance_scale).cpu()
            if offset == 0:
                scores.append(psnr(target, image))
            colours.append(image[0].mean(dim=(1, 2)).numpy())
        generated.append(colours)
        real.append(target[0].mean(dim=(1, 2)).numpy())
    return {"psnr": round(float(np.mean(scores)), 3),
            **{key: round(value, 5) for key, value in
               colour_source(np.asarray(generated), np.asarray(real)).items()}}


def markdown(report: dict) -> str:
    keys = ("psnr", "variance_across_seeds", "variance_across_images", "correlation_with_real",
            "colour_error")
    lines = ["# Where a reconstruction's colour comes from", "",
             f"`python experiments/decoder_noise_schedule.py`: {report['images']} toy-val images, "
             f"{report['sampler']} {report['sampler_steps']} steps, {report['seeds']} noise seeds "
             f"per image; phase 2 retrained for {report['phase2_steps']} steps at UNet lr "
             f"{report['unet_lr']:g}. Mean colours in [0, 1]; the real images' variance across "
             f"images is {report['rows']['graph']['variance_real']:.5f}, and answering each image "
             f"with their average colour errs by "
             f"{report['rows']['graph']['colour_error_dataset_mean']:.4f}.", "",
             "| decoder | PSNR (dB) | colour variance across seeds | across images "
             "| correlation with the real colour | colour error |",
             "|---|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        lines.append(f"| {ROWS[name]} | {row['psnr']:.2f} | " + " | ".join(
            f"{row[key]:.5f}" if key.startswith("variance") else f"{row[key]:.3f}"
            for key in keys[1:]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--config-out", default="data/cpu")
    parser.add_argument("--steps", type=int, default=1000, help="phase-2 steps of rows 2 and 3")
    parser.add_argument("--unet-lr", type=float, default=8e-4)
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds per image")
    parser.add_argument("--sd-decoder", default="models/toy/stable_diffusion_continued",
                        help="the epsilon-trained SD folder rows 2 and 3 start their UNet from")
    parser.add_argument("--work-dir", default="scratch/decoder_noise_schedule")
    parser.add_argument("--out", default="reports/decoder_noise_schedule")
    args = parser.parse_args()
    params = load_params(args.params)
    train, seed = read_section(params, "train", TrainParams), read_seed(params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    out, work = Path(args.config_out), Path(args.work_dir)
    train = train.replace(phase2=train.phase2.replace(steps=args.steps, unet_lr=args.unet_lr),
                          logging=train.logging.replace(grid_every=args.steps))
    reader = open_reader(reader_settings(evaluate, data, out / "prepared",
                                         evaluate.generation.dataset, out / "models",
                                         train.model.encoder_image_size))
    decoder = args.sd_decoder
    work.mkdir(parents=True, exist_ok=True)
    decoders = {"sd_schedule": decoder,
                "zero_terminal_snr": str(zero_terminal_snr_copy(decoder, work / "decoder_ztsnr"))}
    models = {"graph": out / "train" / "phase2" / "model"}
    for name, decoder_path in decoders.items():
        refs = {"encoder": model_reference(str(out / "models" / "dinov2")),
                "stable_diffusion": decoder_path}
        models[name] = work / name / "model"
        if not models[name].is_dir():   # a finished run (published whole) is only scored again
            train_phase(2, train, seed, refs, out / "shards", models[name], work / name / "run",
                        work / name / "live", init_dir=out / "train" / "phase1" / "model")
    rows = {}
    for name, folder in models.items():
        rows[name] = colour_row(GlassModel.from_pretrained(folder, device=evaluate.device),
                                reader, evaluate, args.seeds)
        log.info("%s: %s", name, rows[name])
    section = evaluate.generation
    report = {"images": section.images, "sampler": section.sampler,
              "sampler_steps": section.num_inference_steps, "seeds": args.seeds,
              "phase2_steps": args.steps, "unet_lr": args.unet_lr,
              "zero_terminal_snr": ZERO_TERMINAL_SNR, "rows": rows}
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))


if __name__ == "__main__":
    run_stage("decoder_noise_schedule", main)
