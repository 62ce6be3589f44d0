"""DVC stage ``synthesize``: prompts → WebDataset shards of generated images with pseudo masks
(glass.synth.run), sharded over Ray workers."""

import argparse
import os

import glass.synth.backends  # noqa: F401  (declared dependencies: built inside the workers)
import glass.synth.sam2_masks  # noqa: F401
import glass.synth.stable_diffusion  # noqa: F401
import glass.synth.toy_generator  # noqa: F401
from glass.devices import check_gpu_setting
from glass.errors import MissingInput
from glass.model_reference import model_problem, model_reference
from glass.params import load_params, read_section, read_seed
from glass.stage_runner import run_stage
from glass.synth.params import SynthParams
from glass.synth.run import run_synthesize
from glass.synth.sharded_run import check_ray_address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--prompts", required=True, help="prompts JSONL from the prompts stage")
    parser.add_argument("--models", required=True, help="output folder of the models stage")
    parser.add_argument("--out", required=True, help="shard folder to write")
    parser.add_argument("--scratch", required=True, help="folder for resumable partial work")
    parser.add_argument("--metrics", required=True, help="synthesis metrics JSON")
    parser.add_argument("--grid", required=True, help="PNG grid of images and pseudo masks")
    args = parser.parse_args()
    params = load_params(args.params)
    # reading the section checks it, attention resolutions included, before any model loads
    synth, seed = read_section(params, "synth", SynthParams), read_seed(params)
    models = {role: model_reference(f"{args.models}/{role}") for role in synth.needed_models()}
    # before Ray starts a worker: every model must be loadable here, and GPU settings need a
    # GPU (on an existing cluster, RAY_ADDRESS, the workers' machines decide that)
    problems = [problem for role, reference in models.items()
                if (problem := model_problem(reference, f"models.{role}"))]
    if synth.backend == "stable_diffusion" and not os.environ.get("RAY_ADDRESS"):
        sd = synth.stable_diffusion
        if problem := check_gpu_setting(sd.device, sd.dtype, "synth.stable_diffusion"):
            problems.append(problem)
    if problems:
        raise MissingInput("synthesize cannot start:\n  - " + "\n  - ".join(problems))
    if os.environ.get("RAY_ADDRESS") and synth.num_workers != 0:
        check_ray_address(os.environ["RAY_ADDRESS"], synth.ray_connect_timeout_s)
    run_synthesize(args.prompts, synth, models, seed, args.out, args.scratch, args.metrics,
                   args.grid)


if __name__ == "__main__":
    run_stage("synthesize", main)
