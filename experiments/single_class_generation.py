"""Which classes the toy world's tiny Stable Diffusion can draw alone, and why donuts fail.

    python experiments/single_class_generation.py
    python experiments/single_class_generation.py --samples 8 --model models/toy/stable_diffusion

The synthesize stage's metrics find donuts in only about 40 % of the images prompted with one
(``data/cpu/metrics/pseudo_masks.json``). For every class, ``--samples`` images are generated
from the labels captioner's one-object prompt (``"A photo of a donut.; donut"``) with the CPU
configuration's synthesize settings (its steps, guidance, negative prompt and the model's own
scheduler), one seed per sample, and the judge (``synth.judge``) segments them:

- **present**: the judge finds the prompted class (its ``min_presence`` share of the image);
- **empty**: the judge finds no object of any class;
- **class share**: the median share of the image the judge gives the prompted class (one toy
  object covers about 3-20 % of its image);
- **latent std**: the final latents' standard deviation (median): a sample that never formed an
  object ends near the latents' mean, with a low std, and decodes to a washed-out texture.

Beside it, the denoising MSE of real one-object toy scenes under their own prompt and under the
empty prompt (the training noise schedule, t = 100…900, shared noise): a class whose prompt
lowers the MSE as much as the others' has been learned as a condition of denoising, even if the
sampler cannot start one from noise. A grid shows, per class, the decoded latents along the
sampling of four samples. Writes reports/single_class_generation.{json,md,png}.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from tqdm import tqdm

from glass.caption.labels import caption_from_labels
from glass.data.toy_world import DEFAULT_TOY_CLASSES, class_counts, render_scene, scene_for_image
from glass.io import atomic_open, write_json
from glass.models import ModelsParams
from glass.params import load_params, read_section
from glass.pretrain.judge import ToySegmenter
from glass.pretrain.latent_diffusion import tokenize, training_noise_scheduler
from glass.stage_runner import run_stage
from glass.synth.mask_quality import judge_images
from glass.synth.params import SynthParams
from glass.text.prompts import build_prompt
from glass.viz import save_grid

PROBE_SPLIT = "single_class_probe"     # scenes of their own: neither pretraining nor val scenes
TIMESTEPS = (100, 300, 500, 700, 900)
GRID_SAMPLES = 4


def one_object_prompt(name: str) -> str:
    return build_prompt(caption_from_labels([name], {name: 1}), [name])


@torch.no_grad()
def generate(pipeline, prompt: str, seeds: list[int], settings) -> tuple[np.ndarray, torch.Tensor,
                                                                         list[np.ndarray]]:
    """Images (N, H, W, 3) uint8, final latents, and the decoded latents of the first
    ``GRID_SAMPLES`` samples at every other sampling step (one row each)."""
    steps_seen: list[torch.Tensor] = []

    def keep(pipe, index, timestep, state):
        if index % 2 == 1 or index == settings.steps - 1:
            steps_seen.append(state["latents"][:GRID_SAMPLES].clone())
        return state

    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    latents = pipeline([prompt] * len(seeds), num_inference_steps=settings.steps,
                       guidance_scale=settings.guidance_scale,
                       negative_prompt=[settings.negative_prompt] * len(seeds),
                       generator=generators, output_type="latent",
                       callback_on_step_end=keep).images
    scale = pipeline.vae.config.scaling_factor

    def decoded(batch: torch.Tensor) -> np.ndarray:
        pixels = pipeline.vae.decode(batch / scale).sample.clamp(-1, 1)
        return ((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    images = decoded(latents)
    trajectory = [decoded(batch) for batch in steps_seen]
    rows = [[step[sample] for step in trajectory] for sample in range(min(GRID_SAMPLES, len(seeds)))]
    return images, latents, rows


@torch.no_grad()
def denoising_gain(pipeline, world, name: str, scenes: int, seed: int) -> dict[str, float]:
    """Mean denoising MSE of ``scenes`` real one-object scenes of ``name`` under their prompt and
    under the empty prompt (same noise and timesteps)."""
    chosen, index = [], 0
    while len(chosen) < scenes:
        scene = scene_for_image(world, seed, PROBE_SPLIT, index)
        index += 1
        if [(n, c) for n, c in class_counts(scene)] == [(name, 1)]:
            chosen.append(scene)
        if index > 1000 * (scenes + 4):   # about 1 toy scene in 80 holds one object of a class
            raise RuntimeError(f"no {scenes} one-{name} scenes among {index} toy scenes")
    pixels = torch.from_numpy(np.stack([render_scene(s, world).image for s in chosen]))
    pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = pipeline.vae.encode(pixels).latent_dist.mean * pipeline.vae.config.scaling_factor
    scheduler = training_noise_scheduler()
    result = {}
    for label, prompt in (("own_prompt", one_object_prompt(name)), ("empty_prompt", "")):
        context = pipeline.text_encoder(tokenize(pipeline.tokenizer, [prompt] * len(chosen)))[0]
        losses = []
        for t in TIMESTEPS:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(t))
            steps = torch.full((len(chosen),), t)
            predicted = pipeline.unet(scheduler.add_noise(latents, noise, steps), steps,
                                      encoder_hidden_states=context).sample
            losses.append(float(((predicted - noise) ** 2).mean()))
        result[label] = float(np.mean(losses))
    result["gain"] = 1 - result["own_prompt"] / result["empty_prompt"]
    return {key: round(value, 4) for key, value in result.items()}


def markdown(report: dict) -> str:
    lines = ["# One-object prompts of the toy world's tiny Stable Diffusion", "",
             f"`python experiments/single_class_generation.py`: {report['samples']} samples per "
             f"class of `\"A photo of a <class>.; <class>\"`, {report['settings']['steps']} "
             f"steps, guidance {report['settings']['guidance_scale']}; the judge's presence "
             f"threshold {report['min_presence']}. Denoising MSE of {report['scenes']} real "
             "one-object scenes per class, t = 100…900. Trajectories: "
             "`reports/single_class_generation.png` (a row per sample, decoded latents every "
             "other step).", "",
             "| class | present | empty | class share (median) | latent std (median) "
             "| MSE own prompt | MSE empty prompt | gain |", "|---|---|---|---|---|---|---|---|"]
    for name, row in report["classes"].items():
        lines.append(f"| {name} | {row['present']:.2f} | {row['empty']:.2f} | "
                     f"{row['class_share']:.3f} | "
                     f"{row['latent_std']:.2f} | {row['own_prompt']:.4f} | "
                     f"{row['empty_prompt']:.4f} | {row['gain']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--model", default=None, help="default: the params' models.stable_diffusion")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--seed", type=int, default=91)
    parser.add_argument("--out", default="reports/single_class_generation")
    args = parser.parse_args()
    params = load_params(args.params)
    synth = read_section(params, "synth", SynthParams)
    model = args.model or read_section(params, "models", ModelsParams).stable_diffusion.id
    settings = synth.stable_diffusion
    pipeline = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    judge = ToySegmenter.from_pretrained(synth.judge.model).eval()
    names = tuple(judge.config.class_names)
    world = dataclasses.replace(synth.toy.world, image_size=settings.image_size)
    classes, grid = {}, []
    for index, name in enumerate(tqdm(DEFAULT_TOY_CLASSES, desc="classes")):
        seeds = [args.seed * 1000 + index * 100 + k for k in range(args.samples)]
        images, latents, rows = generate(pipeline, one_object_prompt(name), seeds, settings)
        judged = judge_images(judge, list(images), [image.shape[:2] for image in images])
        label = 1 + names.index(name)
        share = [np.mean(j == label) for j in judged]
        objects = [np.mean(j > 0) for j in judged]
        classes[name] = {
            "present": float(np.mean([s >= synth.judge.min_presence for s in share])),
            "empty": float(np.mean([o < synth.judge.min_presence for o in objects])),
            "class_share": float(np.median(share)),
            "latent_std": float(latents.flatten(1).std(dim=1).median()),
            **denoising_gain(pipeline, world, name, args.scenes, args.seed)}
        grid.extend(rows)
    report = {"model": model, "samples": args.samples, "scenes": args.scenes,
              "min_presence": synth.judge.min_presence,
              "settings": {"steps": settings.steps, "guidance_scale": settings.guidance_scale,
                           "negative_prompt": settings.negative_prompt},
              "classes": classes}
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))
    save_grid(Path(f"{args.out}.png"), grid, tile=48)


if __name__ == "__main__":
    run_stage("single_class_generation", main)
