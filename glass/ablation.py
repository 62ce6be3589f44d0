"""The miniature guidance ablation (the paper's Table 6a in small) on the toy world.

Four settings with the same step budget — full guidance, semantic-only, instance-only and
recon-only — each trained (phase 1) for several seeds on toy-world synthesis shards, evaluated on
held-out toy-world images with instance ground truth: mIoU_i and mBO_i (Hungarian-matched IoU and
best overlap against instance masks, background counted as a region, per-image averaging) and the
share of images where two same-class instances fall mostly into one slot (``same_class_merged``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.toy_world import write_coco_dataset
from glass.eval.datasets import Preprocess, ToyInstances
from glass.eval.discovery import image_tensor
from glass.eval.object_discovery import mean_metrics, object_discovery, same_class_merged
from glass.model import GlassModel
from glass.io import atomic_open, write_json
from glass.seeding import sample_rng
from glass.synth.params import GeneratorSettings, SynthToyParams
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis
from glass.train.params import LossParams, TrainParams
from glass.train.trainer import train_phase

log = logging.getLogger(__name__)

# Loss weights (recon, semantic, instance) per setting; "full" is the paper's 1 / 0.7 / 0.9.
SETTINGS: dict[str, tuple[float, float, float]] = {
    "full": (1.0, 0.7, 0.9),
    "semantic_only": (1.0, 0.7, 0.0),
    "instance_only": (1.0, 0.0, 0.9),
    "recon_only": (1.0, 0.0, 0.0),
}


def toy_prompt_records(count: int, seed: int, classes: tuple[str, ...]) -> list[dict]:
    """Prompt-like records for the toy generator: 1–3 classes per sample, seeded per key (the toy
    generator adds further instances of those classes, so same-class pairs are frequent)."""
    records = []
    for index in range(count):
        key = f"ablation-{index:06d}"
        rng = sample_rng(seed, key, "ablation-prompt")
        chosen = list(rng.choice(classes, size=int(rng.integers(1, 4)), replace=False))
        records.append({"key": key, "prompt": "; " + " ".join(chosen), "caption": "",
                        "classes": chosen})
    return records


def prepare_data(work_dir: Path, synth_toy: SynthToyParams, train_samples: int,
                 eval_images: int, seed: int) -> tuple[Path, Path]:
    """Training shards (toy generator) and a held-out COCO-format toy split with instance GT."""
    shard_dir, eval_dir = work_dir / "shards", work_dir / "eval"
    config = synth_toy.world
    if not (shard_dir / "manifest.json").exists():
        run_sharded_synthesis(toy_prompt_records(train_samples, seed, config.classes),
                              GeneratorSpec("toy", GeneratorSettings(backend="toy", toy=synth_toy)),
                              shard_dir, shard_size=100, seed=seed, batch_size=8, num_workers=0,
                              jpeg_quality=95, store_attention=False, progress=False)
    if not (eval_dir / "annotations" / "instances_val.json").exists():
        # a different seed from the training data: held-out scenes
        write_coco_dataset(eval_dir, config, {"val": eval_images}, seed=seed + 10_000, progress=False)
    return shard_dir, eval_dir


def evaluate(model_dir: Path, eval_dir: Path, seed: int) -> dict[str, float]:
    model = GlassModel.from_pretrained(model_dir)
    per_image, merged = [], []
    # full resolution: the toy images are already the encoder's size
    for sample in ToyInstances(eval_dir, split="val", preprocess=Preprocess(resolution=None)):
        pred = model.predict_labels(image_tensor(sample), [sample.key], seed)[0].numpy()
        per_image.append(object_discovery(pred, sample.instances, ignore=sample.ignore,
                                          include_background=True))
        verdict = same_class_merged(pred, sample.instances, sample.instance_classes,
                                    ignore=sample.ignore)
        if verdict is not None:
            merged.append(verdict)
    means = mean_metrics(per_image)
    return {"miou_i": float(means["miou"]), "mbo_i": float(means["mbo"]),
            "same_class_merged": float(np.mean(merged)) if merged else float("nan"),
            "images": len(per_image), "images_with_same_class_pair": len(merged)}


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """mean ± standard deviation over seeds, per setting."""
    table = {}
    for setting, results in runs.items():
        row: dict[str, Any] = {"seeds": len(results)}
        for metric in ("miou_i", "mbo_i", "same_class_merged"):
            values = np.array([r[metric] for r in results], dtype=float)
            row[metric] = round(float(np.nanmean(values)), 4)
            row[f"{metric}_std"] = round(float(np.nanstd(values)), 4)
        row["per_seed"] = results
        table[setting] = row
    return table


def markdown_table(table: dict[str, dict[str, Any]], steps: int) -> str:
    lines = [f"Miniature guidance ablation (toy world, phase 1, {steps} steps, mean ± std over seeds)",
             "", "| setting | mIoU_i | mBO_i | same-class merged |", "|---|---|---|---|"]
    for setting, row in table.items():
        lines.append(f"| {setting} | {row['miou_i']:.3f} ± {row['miou_i_std']:.3f} | "
                     f"{row['mbo_i']:.3f} ± {row['mbo_i_std']:.3f} | "
                     f"{row['same_class_merged']:.2f} ± {row['same_class_merged_std']:.2f} |")
    return "\n".join(lines) + "\n"


def write_report(runs: dict[str, list[dict[str, float]]], train: TrainParams,
                 report_dir: Path, *, steps: int, seeds: list[int], train_samples: int,
                 eval_images: int) -> dict:
    """``ablation_toy.json`` (one key per setting) and ``ablation_toy.md``, written atomically."""
    table = summarise({setting: results for setting, results in runs.items() if results})
    report = {"steps": steps, "seeds": seeds, "train_samples": train_samples,
              "eval_images": eval_images,
              "train_config": {key: train.as_dict()[key] for key in ("model", "data", "phase1")},
              **table}
    write_json(report_dir / "ablation_toy.json", report)
    with atomic_open(report_dir / "ablation_toy.md") as handle:
        handle.write(markdown_table(table, steps))
    return report


def run_ablation(train: TrainParams, refs: dict[str, str], synth_toy: SynthToyParams, *,
                 work_dir: str | Path, report_dir: str | Path, steps: int, seeds: list[int],
                 settings: list[str], train_samples: int, eval_images: int) -> dict:
    work_dir, report_dir = Path(work_dir), Path(report_dir)
    shard_dir, eval_dir = prepare_data(work_dir, synth_toy, train_samples, eval_images, seed=0)
    runs: dict[str, list[dict[str, float]]] = {setting: [] for setting in settings}
    # seed-major order, with the report rewritten after every run: an interrupted ablation still
    # leaves a table over every setting, and a rerun resumes each run from its last checkpoint
    for seed in seeds:
        for setting in settings:
            recon, semantic, instance = SETTINGS[setting]
            config = train.replace(
                loss=LossParams(recon=recon, semantic=semantic, instance=instance),
                phase1=train.phase1.replace(steps=steps))
            run_dir = work_dir / "runs" / f"{setting}-seed{seed}"
            train_phase(1, config, seed, refs, shard_dir, run_dir / "model", run_dir / "scratch",
                        run_dir / "live")
            result = evaluate(run_dir / "model", eval_dir, seed)
            log.info("%s seed %d: %s", setting, seed, result)
            runs[setting].append(dict(result, seed=seed))
            report = write_report(runs, train, report_dir, steps=steps, seeds=seeds,
                                  train_samples=train_samples, eval_images=eval_images)
    return report
