"""Why the CPU configuration's slot reconstructions stay far below the 18 dB of issue #12: is it
what the slots know, or what the decoder does with it?

    python experiments/reconstruction_error.py

Reads the CPU graph's outputs (run ``dvc repro configs/cpu/dvc.yaml`` first): the trained model
(default ``data/cpu/train/phase2/model``) and the predict stage's stored slots and slot maps.

1. **Where the error lies.** The evaluate.generation section's images are reconstructed exactly
   as the predict stage does (same slots, noise, sampler, steps), so the first row is
   ``generation.json``'s PSNR. Each is scored per image (``glass.eval.reconstruction_error``)
   over its background and its object pixels (ground-truth instance map at the decoder's size),
   and again with one region repaired (real pixels pasted in) or flat (the region's real mean
   colour), beside a flat image of each real image's own mean colour
   (``psnr_mean_colour``). A last row replaces the sampled latents' per-channel means by the real
   image's (VAE-encoded): the overall colour, and nothing else, made right.
2. **Which sampler, and does its background follow the slots?** The same slots and initial
   noise, sampled with each ``--samplers`` setting (sampler, steps, guidance scale): PSNR, and
   the correlation (``colour_correlation``) of the reconstruction's mean background colour with
   the real one over the images. One DDIM step with the zero-terminal-SNR decoder's trailing
   timesteps is the UNet's prediction of the clean latents from pure noise: its estimate of the
   image's expected value given the slots alone, the MSE-optimal reconstruction if the decoder
   were exact, so a decoder that used what the slots know would score at least the flat mean
   colour's PSNR there.
3. **What the slots say about colour.** Closed-form ridge probes
   (``glass.pretrain.position_information.ridge_probe``, against always answering the fit set's
   mean) on the stored slots, fitted on toy_train and scored on toy_val: the slot that covers
   most of the background → the background's mean colour, and each slot Hungarian-matched to an
   object (as the property probe) → that object's mean colour.

Writes reports/reconstruction_error.{json,md}.
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from glass.data.params import DataParams
from glass.errors import InvalidInput
from glass.eval.discovery import image_tensor
from glass.eval.params import EvaluateParams
from glass.eval.predict import limited, reader_settings, reconstruction_target
from glass.eval.predictions import Predictions, open_reader
from glass.eval.property_probe import match_slots_to_objects
from glass.eval.reconstruction_error import (colour_correlation, covering_slot, latent_mean_from,
                                             psnr, with_flat_region, with_real_region)
from glass.eval.run import CLASS_INDEX, open_readers, paired
from glass.io import atomic_open, write_json
from glass.model import GlassModel
from glass.params import load_params, read_section
from glass.pretrain.position_information import ridge_probe
from glass.stage_runner import run_stage

log = logging.getLogger("reconstruction_error")

# row name → what it scores, in the report's order
ROWS = {
    "reconstruction": "the reconstruction (generation.json's PSNR)",
    "background_pixels": "the reconstruction, background pixels only",
    "object_pixels": "the reconstruction, object pixels only",
    "background_repaired": "the reconstruction with the real background pasted in",
    "objects_repaired": "the reconstruction with the real objects pasted in",
    "background_flat": "the reconstruction with the background painted its real mean colour",
    "mean_colour": "a flat image of the real image's mean colour (psnr_mean_colour)",
    "latent_mean_from_real": "the sampled latents with the real image's per-channel latent means",
}


def background_at(sample, side: int) -> torch.Tensor:
    """(side, side) bool: ground-truth background (instance 0), nearest-resized."""
    instances = torch.from_numpy(sample.instances)[None, None].float()
    return F.interpolate(instances, size=(side, side), mode="nearest")[0, 0] == 0


def error_rows(model: GlassModel, reader, evaluate: EvaluateParams) -> dict[str, float]:
    section, seed = evaluate.generation, evaluate.seed
    decoder = model.load_decoder()
    side = model.index.decoder_image_size
    scores: dict[str, list[float]] = {name: [] for name in ROWS}
    samples, count = limited(reader, section.images)
    for sample in tqdm(samples, total=count, desc="reconstruction error"):
        slots = model.infer_slots(image_tensor(sample), [sample.key], seed)
        latents = decoder.sample_latents(
            slots.conditioning, section.num_inference_steps,
            model.noise_generator(seed, sample.key, "generate"), sampler=section.sampler,
            guidance_scale=section.guidance_scale)
        generated = decoder.decode_latents(latents).cpu()
        real = reconstruction_target(sample, side)
        background = background_at(sample, side)
        objects = ~background
        real_latents = decoder.encode_latents(
            real.to(model.device), generator=model.noise_generator(seed, sample.key, "vae"))
        row = {
            "reconstruction": psnr(real, generated),
            "background_pixels": psnr(real, generated, background),
            "object_pixels": psnr(real, generated, objects),
            "background_repaired": psnr(real, with_real_region(real, generated, background)),
            "objects_repaired": psnr(real, with_real_region(real, generated, objects)),
            "background_flat": psnr(real, with_flat_region(real, generated, background)),
            "mean_colour": psnr(real, real.mean(dim=(2, 3), keepdim=True).expand_as(real)),
            "latent_mean_from_real": psnr(real, decoder.decode_latents(
                latent_mean_from(latents, real_latents)).cpu()),
        }
        for name, value in row.items():
            if np.isfinite(value):   # an image without objects has no object-pixel PSNR
                scores[name].append(value)
    return {name: round(float(np.mean(values)), 3) for name, values in scores.items()}


def parse_sampler(text: str) -> tuple[str, int, float]:
    """``"ddim:10:1.0"`` → (sampler, steps, guidance scale)."""
    try:
        sampler, steps, guidance = text.split(":")
        return sampler, int(steps), float(guidance)
    except ValueError as error:
        raise InvalidInput(f"--samplers {text!r}: expected sampler:steps:guidance, e.g. "
                           "ddim:10:1.0") from error


def sampler_rows(model: GlassModel, reader, evaluate: EvaluateParams,
                 samplers: list[tuple[str, int, float]]) -> list[dict]:
    """PSNR and background-colour correlation of the same slots and noise per sampler."""
    section, seed = evaluate.generation, evaluate.seed
    decoder = model.load_decoder()
    side = model.index.decoder_image_size
    scores = {setting: [] for setting in samplers}
    backgrounds = {setting: [] for setting in samplers}
    real_backgrounds = []
    samples, count = limited(reader, section.images)
    for sample in tqdm(samples, total=count, desc="samplers"):
        slots = model.infer_slots(image_tensor(sample), [sample.key], seed)
        real = reconstruction_target(sample, side)
        background = background_at(sample, side)
        if not bool(background.any()):
            continue
        real_backgrounds.append(real[0][:, background].mean(-1).numpy())
        for setting in samplers:
            sampler, steps, guidance = setting
            latents = decoder.sample_latents(
                slots.conditioning, steps, model.noise_generator(seed, sample.key, "generate"),
                sampler=sampler, guidance_scale=guidance)
            generated = decoder.decode_latents(latents).cpu()
            scores[setting].append(psnr(real, generated))
            backgrounds[setting].append(generated[0][:, background].mean(-1).numpy())
    return [{"sampler": sampler, "steps": steps, "guidance_scale": guidance,
             "psnr": round(float(np.mean(scores[(sampler, steps, guidance)])), 3),
             "background_colour_correlation": round(colour_correlation(
                 np.asarray(backgrounds[(sampler, steps, guidance)]),
                 np.asarray(real_backgrounds)), 3)}
            for sampler, steps, guidance in samplers]


def colour_rows(reader, predictions: Predictions, name: str, mask_source: str):
    """(background slot, background colour), (matched slot, object colour) rows of ``name``,
    and the mean share of the background its covering slot holds."""
    num_slots = predictions.dataset(name).num_slots
    background_x, background_y, object_x, object_y, shares = [], [], [], [], []
    for sample, slot_map, image in paired(reader, predictions, name, mask_source, None):
        pixels = sample.image.astype(np.float64) / 255.0
        background = sample.instances == 0
        if slot_map.shape != background.shape:
            raise InvalidInput(f"{name} {sample.key}: slot map {slot_map.shape} but image "
                               f"{background.shape}; rerun the predict stage, whose maps are at "
                               "the image size")
        if background.any():
            index, share = covering_slot(slot_map, background, num_slots)
            background_x.append(image.slots[index])
            background_y.append(pixels[background].mean(axis=0))
            shares.append(share)
        classes = {iid: CLASS_INDEX[c] for iid, c in sample.instance_classes.items()}
        for match in match_slots_to_objects(slot_map, sample.instances, classes,
                                            ignore=sample.ignore, num_slots=num_slots):
            object_x.append(image.slots[match.slot_index])
            object_y.append(pixels[sample.instances == match.object_id].mean(axis=0))
    return ((np.asarray(background_x), np.asarray(background_y)),
            (np.asarray(object_x), np.asarray(object_y)), float(np.mean(shares)))


def colour_probes(evaluate: EvaluateParams, predictions_dir: str, ridge: float) -> dict:
    predictions = Predictions(predictions_dir)
    readers = open_readers(evaluate, predictions, {"toy_train", "toy_val"})
    source = evaluate.metrics.conventions.mask_source
    fit_bg, fit_obj, fit_share = colour_rows(readers["toy_train"], predictions, "toy_train", source)
    test_bg, test_obj, test_share = colour_rows(readers["toy_val"], predictions, "toy_val", source)
    result = {"ridge": ridge, "background_share_of_covering_slot":
              {"toy_train": round(fit_share, 3), "toy_val": round(test_share, 3)}}
    for key, fit, test in (("background_colour", fit_bg, test_bg),
                           ("object_colour", fit_obj, test_obj)):
        score = ridge_probe(fit[0], fit[1], test[0], test[1], ridge)
        result[key] = {"mse": round(score.mse, 5), "mean_mse": round(score.mean_mse, 5),
                       "ratio": round(score.ratio, 3), "fit": score.fit, "test": score.test}
    return result


def markdown(report: dict) -> str:
    lines = ["# Where the slot reconstructions lose PSNR", "",
             "`python experiments/reconstruction_error.py` on the CPU graph's model "
             f"(`{report['model']}`), {report['images']} toy-val images, "
             f"{report['sampler']} {report['steps']} steps; per-image PSNR (dB), averaged.", "",
             "| scored image | PSNR |", "|---|---|"]
    lines += [f"| {ROWS[name]} | {value:.2f} |" for name, value in report["psnr"].items()]
    lines += ["", "The same slots and initial noise per sampler; background colour r: correlation "
              "of the reconstruction's mean background colour with the real one over the images "
              "(1 = follows each image, 0 = ignores it):", "",
              "| sampler | steps | guidance | PSNR | background colour r |", "|---|---|---|---|---|"]
    lines += [f"| {row['sampler']} | {row['steps']} | {row['guidance_scale']} | "
              f"{row['psnr']:.2f} | {row['background_colour_correlation']:.2f} |"
              for row in report["samplers"]]
    probes = report["colour_probes"]
    lines += ["", f"Ridge probes on the stored slots (λ = {probes['ridge']}; fit toy_train, "
              "score toy_val; ratio = probe MSE / MSE of always answering the fit mean, "
              "1 = nothing read):", "",
              "| slot → target | probe MSE | mean MSE | ratio | fit / test |",
              "|---|---|---|---|---|"]
    for key, label in (("background_colour", "background's covering slot → its mean colour"),
                       ("object_colour", "matched slot → its object's mean colour")):
        score = probes[key]
        lines.append(f"| {label} | {score['mse']:.5f} | {score['mean_mse']:.5f} | "
                     f"{score['ratio']:.2f} | {score['fit']} / {score['test']} |")
    share = probes["background_share_of_covering_slot"]
    lines += ["", f"The covering slot holds {share['toy_val']:.0%} of the background on toy_val "
              f"({share['toy_train']:.0%} on toy_train)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--config-out", default="data/cpu")
    parser.add_argument("--model", default="data/cpu/train/phase2/model")
    parser.add_argument("--predictions", default="data/cpu/eval/predictions")
    parser.add_argument("--ridge", type=float, default=1e-2)
    parser.add_argument("--samplers", nargs="+", type=parse_sampler,
                        default=[parse_sampler(text) for text in (
                            "ddim:1:1.0", "ddim:3:1.0", "ddim:10:1.0", "ddim:25:1.0",
                            "ddim:10:1.3", "ddim:10:2.0", "dpm++:25:1.3")],
                        help="sampler:steps:guidance settings of the sampler table")
    parser.add_argument("--out", default="reports/reconstruction_error")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    out = Path(args.config_out)
    model = GlassModel.from_pretrained(args.model, device=evaluate.device)
    reader = open_reader(reader_settings(evaluate, data, out / "prepared",
                                         evaluate.generation.dataset, out / "models",
                                         model.index.encoder_image_size))
    report = {"model": args.model, "images": evaluate.generation.images,
              "sampler": evaluate.generation.sampler,
              "steps": evaluate.generation.num_inference_steps,
              "psnr": error_rows(model, reader, evaluate),
              "samplers": sampler_rows(model, reader, evaluate, args.samplers),
              "colour_probes": colour_probes(evaluate, args.predictions, args.ridge)}
    log.info("%s", report)
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))


if __name__ == "__main__":
    run_stage("reconstruction_error", main)
