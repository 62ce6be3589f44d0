"""Which attention maps make the best pseudo masks on the trained tiny SD? Generates the same
prompts with each (cross-attention, self-attention) resolution pair and scores the pseudo masks
against the judge (glass.synth.mask_quality):

    python experiments/attention_resolutions.py                 # 48 prompts, every pair
    python experiments/attention_resolutions.py --prompts 8 --pairs 16,16

Dataset Diffusion reads cross-attention at latent/4 and self-attention at latent/2 (16 and 32
for SD's 64×64 latent). The tiny SD's latent is 16×16, where latent/4 would be a 4×4 map for
objects of 2–4 latent pixels radius. Everything else (steps, guidance, refinement thresholds)
comes from configs/cpu/params.yaml; prompts are held-out toy-world scenes, written as the
prompts stage writes them. Writes reports/attention_resolutions.{json,md}.
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

from glass.ablation import scene_prompt_records
from glass.io import atomic_open, write_json
from glass.models import ModelsParams
from glass.params import load_params, read_section
from glass.pretrain.judge import ToySegmenter
from glass.stage_runner import run_stage
from glass.synth.mask_quality import judge_shards
from glass.synth.params import GeneratorSettings, SynthParams
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis

PROMPT_SEED = 77      # held-out prompts: neither the pretraining pool nor the ablation's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--pairs", nargs="+", default=["16,16", "8,16", "8,8", "4,8"],
                        help="cross,self resolution pairs")
    parser.add_argument("--report-dir", default="reports")
    args = parser.parse_args()
    params = load_params(args.params)
    synth = read_section(params, "synth", SynthParams)
    models = read_section(params, "models", ModelsParams)
    judge = ToySegmenter.from_pretrained(synth.judge.model).eval()
    records = scene_prompt_records(args.prompts, PROMPT_SEED, synth.toy.world)
    rows = {}
    for pair in args.pairs:
        cross, self_res = (int(side) for side in pair.split(","))
        settings = GeneratorSettings(
            backend="stable_diffusion",
            stable_diffusion=dataclasses.replace(synth.stable_diffusion, cross_attention_res=cross,
                                                 self_attention_res=self_res),
            models={"stable_diffusion": models.stable_diffusion.id})
        with tempfile.TemporaryDirectory() as work:
            run_sharded_synthesis(records, GeneratorSpec("stable_diffusion", settings),
                                  Path(work) / "shards", shard_size=100, seed=PROMPT_SEED,
                                  batch_size=8, num_workers=0, jpeg_quality=95,
                                  store_attention=False, progress=True)
            rows[pair] = judge_shards(judge, Path(work) / "shards", synth.judge.min_presence)
        print(pair, {k: rows[pair][k] for k in ("miou_vs_judge", "class_presence",
                                                 "unsure_fraction")})
    report = {"prompts": args.prompts, "model": models.stable_diffusion.id,
              "settings": {k: v for k, v in synth.stable_diffusion.as_dict().items()
                           if k not in ("cross_attention_res", "self_attention_res")},
              "pairs": rows}
    report_dir = Path(args.report_dir)
    write_json(report_dir / "attention_resolutions.json", report)
    lines = [f"Pseudo masks of the trained tiny SD against the judge ({args.prompts} held-out "
             "prompts; latent 16x16)", "",
             "| cross | self | mIoU vs judge | class presence | unsure share |", "|---|---|---|---|---|"]
    for pair, row in rows.items():
        cross, self_res = pair.split(",")
        lines.append(f"| {cross} | {self_res} | {row['miou_vs_judge']:.3f} | "
                     f"{row['class_presence']:.3f} | {row['unsure_fraction']:.3f} |")
    with atomic_open(report_dir / "attention_resolutions.md") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    run_stage("attention_resolutions", main)
