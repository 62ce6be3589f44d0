"""How slot reconstructions improve with the length of phase 2 (the UNet fine-tuned on the slots).

    python experiments/decoder_finetuning.py --steps 100 300 1000 2000

Continues the CPU configuration's phase 1 (``data/cpu/train/phase1/model``, its shards and models:
run ``dvc repro configs/cpu/dvc.yaml`` first) with phase 2 for each step count in turn — one run,
resumed from its last checkpoint, so 2000 steps cost 2000 steps, not 3400 — and after each one
scores the reconstructions exactly as the predict stage does (``run_generation``: the
evaluate.generation section's images, DDIM steps and seed; PSNR/SSIM at the decoder's size).
Everything else is configs/cpu/params.yaml's train section. Writes
reports/decoder_finetuning.{json,md} (one entry per ``--unet-lr``) and a grid per rate (real |
reconstruction after each step count).
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from glass.data.params import DataParams
from glass.eval.params import EvaluateParams
from glass.eval.predict import reader_settings, run_generation
from glass.eval.predictions import open_reader
from glass.io import write_json
from glass.model import GlassModel
from glass.model_reference import model_reference
from glass.params import load_params, read_section, read_seed
from glass.stage_runner import run_stage
from glass.train.params import TrainParams
from glass.train.trainer import train_phase
from glass.viz import save_grid

log = logging.getLogger("decoder_finetuning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--config-out", default="data/cpu",
                        help="the configuration's output folder (shards, models, prepared, train)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000, 2000])
    parser.add_argument("--unet-lr", type=float, default=None,
                        help="phase-2 UNet learning rate (default: the params')")
    parser.add_argument("--work-dir", default="scratch/decoder_finetuning")
    parser.add_argument("--report-dir", default="reports")
    args = parser.parse_args()
    params = load_params(args.params)
    train, seed = read_section(params, "train", TrainParams), read_seed(params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    out = Path(args.config_out)
    if args.unet_lr is not None:
        train = train.replace(phase2=train.phase2.replace(unet_lr=args.unet_lr))
    steps = sorted(set(args.steps))
    # checkpoints as often as the smallest gap, so each count resumes where the last one stopped
    gaps = np.diff([0] + steps)
    train = train.replace(logging=train.logging.replace(checkpoint_every=int(gaps.min()),
                                                        grid_every=steps[-1]))
    refs = {"encoder": model_reference(str(out / "models" / "dinov2")),
            "stable_diffusion": model_reference(str(out / "models" / "decoder"))}
    name = evaluate.generation.dataset
    reader = open_reader(reader_settings(evaluate, data, out / "prepared", name, out / "models",
                                         train.model.encoder_image_size))
    work = Path(args.work_dir) / f"unet_lr{train.phase2.unet_lr:g}"
    rows: list[dict] = []
    grid: list[list[np.ndarray]] = []
    for count in steps:
        config = train.replace(phase2=train.phase2.replace(steps=count))
        model_dir = work / f"model-{count}"
        if not model_dir.is_dir():   # a finished count (published whole) is only scored again
            train_phase(2, config, seed, refs, out / "shards", model_dir, work / "run",
                        work / "live", init_dir=out / "train" / "phase1" / "model")
        model = GlassModel.from_pretrained(model_dir, device=evaluate.device)
        result, pairs = run_generation(model, reader, evaluate.generation, evaluate.device,
                                       evaluate.seed)
        rows.append({"phase2_steps": count, "psnr": round(result["psnr"], 3),
                     "psnr_mean_colour": round(result["psnr_mean_colour"], 3),
                     "ssim": round(result["ssim"], 4), "images": result["images"]})
        log.info("phase 2, %d steps: %s", count, rows[-1])
        if not grid:
            grid = [[real] for real, _ in pairs]
        for row, (_, generated) in zip(grid, pairs):
            row.append(generated)
        write_report(rows, grid, train, evaluate, Path(args.report_dir))


def write_report(rows: list[dict], grid: list[list[np.ndarray]], train: TrainParams,
                 evaluate: EvaluateParams, report_dir: Path) -> None:
    """One entry per UNet learning rate in reports/decoder_finetuning.json (a run with another
    rate adds its own), the table over all of them and this rate's grid."""
    section = evaluate.generation
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "decoder_finetuning.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update({"dataset": section.dataset, "images": section.images,
                   "ddim_steps": section.num_inference_steps,
                   "phase1_steps": train.phase1.steps, "batch_size": train.data.batch_size})
    runs = record.setdefault("runs_by_unet_lr", {})
    runs[f"{train.phase2.unet_lr:g}"] = rows
    write_json(path, record)
    lines = [f"Slot reconstructions of {section.dataset} ({section.images} images, "
             f"{section.num_inference_steps} DDIM steps) after phase 2 of increasing length "
             f"(batch {train.data.batch_size}; phase 1: the CPU configuration's "
             f"{train.phase1.steps} steps)", "",
             "| UNet lr | phase-2 steps | PSNR (dB) | SSIM | PSNR of each image's mean colour |",
             "|---|---|---|---|---|"]
    for lr, lr_rows in sorted(runs.items(), key=lambda item: float(item[0])):
        lines += [f"| {lr} | {r['phase2_steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                  f"{r['psnr_mean_colour']:.2f} |" for r in lr_rows]
    (report_dir / "decoder_finetuning.md").write_text("\n".join(lines) + "\n")
    # columns: the real image, then the reconstruction after each step count of the table
    save_grid(report_dir / f"decoder_finetuning_lr{train.phase2.unet_lr:g}.png", grid)


if __name__ == "__main__":
    run_stage("decoder_finetuning", main)
