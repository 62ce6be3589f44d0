"""Does a Stable Diffusion folder's cross-attention find the objects its prompt names? A probe
that needs no sampling: held-out toy-world scenes are encoded by the VAE, noised to timestep t
with the training noise schedule, and denoised once with their prompt (written as the prompts
stage writes it); at every cross-attention layer, the attention of each class's tokens is
compared inside and outside that class's ground-truth mask:

    python experiments/cross_attention_localization.py                      # models/toy/stable_diffusion
    python experiments/cross_attention_localization.py --model OTHER_FOLDER --scenes 16

Two class-token lookups are probed:

- ``in_prompt``: the class tokens after the prompt's ``"; "`` (keys from the prompt's own
  encoding, as the UNet sees them);
- ``class_text``: Dataset Diffusion's lookup, which the synthesize stage uses: keys from the class
  text encoded alone (glass.synth.class_tokens), queries from the prompt-conditioned pass.

Per layer: ``inside_share`` = the share of a class's attention map (summed over the map's
pixels) that falls inside the class's mask, averaged over (scene, class) pairs, beside
``mask_area``, the masks' mean share of the image (what attention spread evenly would give);
``class_mass`` / ``padding_mass``: the share of attention on the class tokens / on the tokens after
the end token (in_prompt only). Several ``--model`` folders go into one report. Prints a table and
writes ``<report-dir>/cross_attention_localization.json``.
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from glass.data.toy_world import render_scene, scene_for_image
from glass.io import write_json
from glass.params import load_params, read_section
from glass.pretrain.latent_diffusion import scene_prompt, tokenize, training_noise_scheduler
from glass.pretrain.params import PretrainParams
from glass.seeding import sample_rng
from glass.stage_runner import run_stage
from glass.synth.class_tokens import class_token_groups, encode_class_texts
from glass.text.prompts import CLASS_SEPARATOR

SCENE_SEED = 1234          # held out: neither the pretraining pool's seed nor its split
SPLIT = "val"


def cross_attention_probabilities(unet, latents, timesteps, context, class_context):
    """{layer: (in_prompt probs (B, N, T), class_text probs (B, N, T))}, head-averaged."""
    captured = {}
    handles = []
    for name, module in unet.named_modules():
        if not name.endswith("attn2"):
            continue

        def hook(module, args, kwargs, output, name=name):
            hidden = args[0]
            batch, tokens, _ = hidden.shape
            heads = module.heads
            query = module.to_q(hidden).view(batch, tokens, heads, -1).transpose(1, 2)

            def probs(encoder_states):
                key = module.to_k(encoder_states).view(batch, -1, heads, query.shape[-1])
                scores = query @ key.transpose(1, 2).transpose(-1, -2) * module.scale
                return scores.softmax(-1).mean(1)
            captured[name] = (probs(kwargs["encoder_hidden_states"]), probs(class_context))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        unet(latents, timesteps, encoder_hidden_states=context)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def class_masks(rendered, classes: list[str], side: int) -> list[torch.Tensor]:
    masks = []
    for name in classes:
        ids = [index + 1 for index, cls in enumerate(rendered.instance_classes) if cls == name]
        mask = torch.from_numpy(np.isin(rendered.instance_map, ids)).float()[None, None]
        masks.append(F.adaptive_avg_pool2d(mask, side)[0, 0] > 0.5)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["models/toy/stable_diffusion"])
    parser.add_argument("--params", default="configs/toy-pretrain/params.yaml")
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--report-dir", default="reports")
    args = parser.parse_args()
    pretrain = read_section(load_params(args.params), "pretrain", PretrainParams)
    report = {"scenes": args.scenes, "models": {}}
    for model in args.model:
        report["models"][model] = probe(model, pretrain, args.scenes, args.timesteps)
    write_json(Path(args.report_dir) / "cross_attention_localization.json", report)


def probe(model: str, pretrain: PretrainParams, scene_count: int, timesteps: list[int]) -> dict:
    pipeline = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    tokenizer, unet, vae = pipeline.tokenizer, pipeline.unet.eval(), pipeline.vae.eval()
    world = dataclasses.replace(pretrain.world, image_size=pipeline.vae.config.sample_size)
    scheduler = training_noise_scheduler()
    scenes = [scene_for_image(world, SCENE_SEED, SPLIT, index) for index in range(scene_count)]
    rendered = [render_scene(scene, world) for scene in scenes]
    prompts = [scene_prompt(scene, sample_rng(SCENE_SEED, f"probe-{index}", "prompt"))
               for index, scene in enumerate(scenes)]
    classes = [list(dict.fromkeys(scene.class_names)) for scene in scenes]
    ids = tokenize(tokenizer, prompts)
    separator = tokenizer(CLASS_SEPARATOR.strip(), add_special_tokens=False).input_ids[-1]
    images = torch.from_numpy(np.stack([r.image for r in rendered])).permute(0, 3, 1, 2)
    with torch.no_grad():
        latents = vae.encode(images.float() / 127.5 - 1).latent_dist.mean
        latents = latents * vae.config.scaling_factor
        context = pipeline.text_encoder(ids).last_hidden_state
        class_context = encode_class_texts(pipeline, classes, "cpu")
        report = {}
        for t in timesteps:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(t))
            steps = torch.full((len(scenes),), t)
            noisy = scheduler.add_noise(latents, noise, steps)
            layers = {}
            for name, (in_prompt, by_class_text) in cross_attention_probabilities(
                    unet, noisy, steps, context, class_context).items():
                side = int(in_prompt.shape[1] ** 0.5)
                shares = {"in_prompt": [], "class_text": []}
                class_mass, padding_mass, areas = [], [], []
                for b in range(len(scenes)):
                    row = ids[b].tolist()
                    end = row.index(tokenizer.eos_token_id)
                    # the class tokens follow the prompt's last separator
                    start = max(j for j in range(end) if row[j] == separator) + 1
                    mean_attention = in_prompt[b].mean(0)
                    class_mass.append(float(mean_attention[start:end].sum()))
                    padding_mass.append(float(mean_attention[end + 1:].sum()))
                    groups = class_token_groups(tokenizer, classes[b])
                    for name_k, mask, group in zip(classes[b], class_masks(rendered[b], classes[b], side),
                                                   groups):
                        if mask.all() or not mask.any():
                            continue
                        areas.append(float(mask.float().mean()))
                        word = tokenizer(name_k, add_special_tokens=False).input_ids
                        positions = [j for j in range(start, end) if row[j] in word]
                        for lookup, probs, cols in (("in_prompt", in_prompt, positions),
                                                    ("class_text", by_class_text, group)):
                            heat = probs[b][:, cols].mean(1).reshape(side, side)
                            shares[lookup].append(float(heat[mask].sum() / heat.sum()))
                layers[name] = {"side": side, "class_mass": round(float(np.mean(class_mass)), 4),
                                "padding_mass": round(float(np.mean(padding_mass)), 4),
                                "mask_area": round(float(np.mean(areas)), 4),
                                **{f"inside_share_{k}": round(float(np.mean(v)), 4)
                                   for k, v in shares.items()}}
                print(f"{model} t={t:4d} {side:2d}x{side:<2d} {name:48s} "
                      + " ".join(f"{k}={v}" for k, v in layers[name].items() if k != "side"))
            report[str(t)] = layers
    return report


if __name__ == "__main__":
    run_stage("cross_attention_localization", main)
