"""The miniature guidance ablation (the paper's Table 6a in small) on the toy world.

Four settings with the same step budget — full guidance, semantic-only, instance-only and
recon-only — each trained (phase 1) for several seeds on synthesis shards of one generator (the
trained tiny SD with attention pseudo masks: the method's own data path; or the oracle ``toy``
renderer with exact masks), evaluated on held-out toy-world images with instance ground truth:
mIoU_i and mBO_i (Hungarian-matched IoU and best overlap against instance masks, background
counted as a region, per-image averaging) and the share of images where two same-class instances
fall mostly into one slot (``same_class_merged``). The optional ``oracle_full`` row is full
guidance on the oracle renderer's shards: the upper bound of what better pseudo masks could give.

Prompts are those of toy-world scenes, as the pipeline writes them (labels caption; classes),
so both generators get the same prompts; the oracle renderer reads only the class list.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.toy_world import ToyWorldConfig, scene_for_image, write_coco_dataset
from glass.eval.datasets import Preprocess, ToyInstances
from glass.eval.discovery import image_tensor
from glass.eval.object_discovery import mean_metrics, object_discovery, same_class_merged
from glass.model import GlassModel
from glass.errors import InvalidInput
from glass.io import atomic_open, file_sha256, fingerprint, folder_digest, write_json
from glass.model_reference import model_contents
from glass.seeding import sample_rng
from glass.pretrain.latent_diffusion import scene_prompt
from glass.synth.params import GeneratorSettings
from glass.text.prompts import CLASS_SEPARATOR
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


ORACLE_ROW = "oracle_full"
PROMPT_SPLIT = "ablation"       # toy-world scenes of their own, never the evaluation's
RUN_INPUTS_NAME = "inputs.json"  # per run: what it was trained on (shards and model folders)


def scene_prompt_records(count: int, seed: int, world: ToyWorldConfig) -> list[dict]:
    """Prompt records of ``count`` toy-world scenes, as the prompts stage writes them."""
    records = []
    for index in range(count):
        key = f"ablation-{index:06d}"
        scene = scene_for_image(world, seed, PROMPT_SPLIT, index)
        prompt = scene_prompt(scene, sample_rng(seed, key, "ablation-prompt"))
        caption, _, classes = prompt.rpartition(CLASS_SEPARATOR)
        records.append({"key": key, "prompt": prompt, "caption": caption,
                        "classes": list(dict.fromkeys(scene.class_names))})
    return records


def prepare_data(work_dir: Path, generator: GeneratorSettings, world: ToyWorldConfig,
                 train_samples: int, eval_images: int, seed: int) -> tuple[Path, Path]:
    """Training shards of ``generator`` and a held-out COCO-format toy split with instance GT.

    Synthesis runs every time: it resumes, skips shards that are complete for these prompts,
    settings and model weights, and redoes the others (a retrained generator's old shards are
    stale, so its weights' digest is part of every shard's inputs)."""
    shard_dir, eval_dir = work_dir / f"shards-{generator.backend}", work_dir / "eval"
    needed = {role: generator.models[role] for role in generator.needed_models()}
    run_sharded_synthesis(scene_prompt_records(train_samples, seed, world),
                          GeneratorSpec(generator.backend, generator),
                          shard_dir, shard_size=100, seed=seed, batch_size=8, num_workers=0,
                          jpeg_quality=95, store_attention=False, progress=True,
                          fingerprint=fingerprint(model_contents(needed)))
    if not (eval_dir / "annotations" / "instances_val.json").exists():
        # a different seed from the training data: held-out scenes
        write_coco_dataset(eval_dir, world, {"val": eval_images}, seed=seed + 10_000, progress=False)
    return shard_dir, eval_dir


def check_run_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    """Record what a run trains on, or, for a run already there, check that it is the same: a
    run resumes from its checkpoints (and a finished one is only evaluated), which is right only
    on the shards and models it started with. Trained work is never deleted here."""
    path = run_dir / RUN_INPUTS_NAME
    if path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded != inputs:
            changed = sorted(key for key in inputs if recorded.get(key) != inputs[key])
            raise InvalidInput(f"{run_dir}: this run was trained on other {', '.join(changed)} "
                               f"(see {path}); give the ablation a new --work-dir, or delete "
                               f"{run_dir} to retrain it")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InvalidInput(f"{run_dir} holds a run without {RUN_INPUTS_NAME}, so what it was "
                           "trained on is unknown; give the ablation a new --work-dir, or "
                           f"delete {run_dir} to retrain it")
    write_json(path, inputs)


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


def markdown_table(table: dict[str, dict[str, Any]], steps: int, generator: str) -> str:
    lines = [f"Miniature guidance ablation (toy world, phase 1, {steps} steps, mean ± std over "
             f"seeds; shards: {generator}, {ORACLE_ROW}: the oracle renderer's)",
             "", "| setting | generator | mIoU_i | mBO_i | same-class merged |",
             "|---|---|---|---|---|"]
    for setting, row in table.items():
        lines.append(f"| {setting} | {row['generator']} | {row['miou_i']:.3f} ± {row['miou_i_std']:.3f} | "
                     f"{row['mbo_i']:.3f} ± {row['mbo_i_std']:.3f} | "
                     f"{row['same_class_merged']:.2f} ± {row['same_class_merged_std']:.2f} |")
    return "\n".join(lines) + "\n"


def write_report(runs: dict[str, list[dict[str, float]]], train: TrainParams,
                 report_dir: Path, *, steps: int, seeds: list[int], train_samples: int,
                 eval_images: int, generator: str, encoder: str) -> dict:
    """``ablation_toy.json`` (one key per setting) and ``ablation_toy.md``, written atomically."""
    table = summarise({setting: results for setting, results in runs.items() if results})
    for setting, row in table.items():
        row["generator"] = "toy" if setting == ORACLE_ROW else generator
    report = {"steps": steps, "seeds": seeds, "train_samples": train_samples,
              "eval_images": eval_images, "generator": generator, "encoder": encoder,
              "train_config": {key: train.as_dict()[key] for key in ("model", "data", "phase1")},
              **table}
    write_json(report_dir / "ablation_toy.json", report)
    with atomic_open(report_dir / "ablation_toy.md") as handle:
        handle.write(markdown_table(table, steps, generator))
    return report


def run_ablation(train: TrainParams, refs: dict[str, str], generator: GeneratorSettings,
                 world: ToyWorldConfig, *, work_dir: str | Path, report_dir: str | Path,
                 steps: int, seeds: list[int], settings: list[str], train_samples: int,
                 eval_images: int, oracle: GeneratorSettings | None = None) -> dict:
    """``refs``: the encoder and decoder folders; ``generator``: the shards' generator;
    ``oracle``: the oracle renderer's settings for the ``oracle_full`` row (None: no row)."""
    work_dir, report_dir = Path(work_dir), Path(report_dir)
    shard_dirs = {}
    shard_dirs["main"], eval_dir = prepare_data(work_dir, generator, world, train_samples,
                                                eval_images, seed=0)
    rows = [(setting, setting, "main") for setting in settings]
    if oracle is not None:
        shard_dirs["oracle"], _ = prepare_data(work_dir, oracle, world, train_samples,
                                               eval_images, seed=0)
        rows.append((ORACLE_ROW, "full", "oracle"))
    runs: dict[str, list[dict[str, float]]] = {row: [] for row, _, _ in rows}
    # what each run trains on, digested once: the shard folders and the encoder/decoder folders
    run_inputs = {name: {"shards": file_sha256(folder / "manifest.json"),
                         "models": model_contents(refs)} for name, folder in shard_dirs.items()}
    # seed-major order, with the report rewritten after every run: an interrupted ablation still
    # leaves a table over every setting, and a rerun resumes each run from its last checkpoint
    for seed in seeds:
        for row, setting, shards in rows:
            recon, semantic, instance = SETTINGS[setting]
            config = train.replace(
                loss=LossParams(recon=recon, semantic=semantic, instance=instance),
                phase1=train.phase1.replace(steps=steps))
            run_dir = work_dir / "runs" / f"{row}-seed{seed}"
            check_run_inputs(run_dir, run_inputs[shards])
            train_phase(1, config, seed, refs, shard_dirs[shards], run_dir / "model",
                        run_dir / "scratch", run_dir / "live")
            result = evaluate(run_dir / "model", eval_dir, seed)
            log.info("%s seed %d: %s", row, seed, result)
            runs[row].append(dict(result, seed=seed))
            report = write_report(runs, train, report_dir, steps=steps, seeds=seeds,
                                  train_samples=train_samples, eval_images=eval_images,
                                  generator=generator.backend, encoder=refs["encoder"])
    return report
