"""DVC stage ``synthesize``: prompts → WebDataset shards of generated images with pseudo masks
(glass.synth.run), sharded over Ray workers."""

import argparse

import glass.synth.backends  # noqa: F401  (declared dependencies: built inside the workers)
import glass.synth.sam2_masks  # noqa: F401
import glass.synth.stable_diffusion  # noqa: F401
import glass.synth.toy_generator  # noqa: F401
from glass.model_reference import model_reference
from glass.params import load_params
from glass.stage_runner import run_stage
from glass.synth.attention import validate_attention_resolutions
from glass.synth.run import run_synthesize


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
    synth = params["synth"]
    if synth["backend"] == "stable_diffusion":
        # before any model is loaded: the chosen attention maps must exist at this image size
        sd = synth["stable_diffusion"]
        validate_attention_resolutions(sd["image_size"], sd["vae_scale_factor"],
                                       sd["cross_attention_res"], sd["self_attention_res"])
    needed = {"stable_diffusion": synth["backend"] == "stable_diffusion",
              "sam2": synth.get("mask_source") == "sam2"}
    models = {role: model_reference(f"{args.models}/{role}") for role, used in needed.items() if used}
    run_synthesize(args.prompts, synth, models, int(params["seed"]), args.out, args.scratch,
                   args.metrics, args.grid)


if __name__ == "__main__":
    run_stage("synthesize", main)
