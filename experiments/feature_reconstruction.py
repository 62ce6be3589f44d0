"""Does the instance guidance's MLP decoder draw the objects, or one vector per image?

    python experiments/feature_reconstruction.py

Reads the CPU graph's trained models (run ``dvc repro configs/cpu/dvc.yaml`` first; default:
after phase 1 and after phase 2) and toy_val through the evaluate section's reader. Per image
(``glass.eval.feature_reconstruction``): the MSE of the MLP decoder's reconstruction of the
encoder's tokens beside replacing every token by the image's mean token and by its ground-truth
segment's mean token, and how far the decoder's alpha masks, slot attention's masks and the
ground-truth segments spread over the image (centroid spread, image widths). Slots are inferred as
the predict stage does (``GlassModel.infer_slots``, the evaluate seed and each image's key).

Writes reports/feature_reconstruction.{json,md}.
"""

import argparse
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from glass.data.params import DataParams
from glass.eval.discovery import image_tensor
from glass.eval.feature_reconstruction import ImageReconstruction, score_feature_reconstruction
from glass.eval.params import EvaluateParams
from glass.eval.predict import limited, reader_settings
from glass.eval.predictions import open_reader
from glass.errors import InvalidInput
from glass.io import atomic_open, write_json
from glass.model import GlassModel
from glass.params import load_params, read_section
from glass.stage_runner import run_stage

log = logging.getLogger("feature_reconstruction")


def reconstructions(model: GlassModel, reader, images: int | None, seed: int):
    samples, count = limited(reader, images)
    for sample in tqdm(samples, total=count, desc="feature reconstruction"):
        slots = model.infer_slots(image_tensor(sample), [sample.key], seed)
        with torch.no_grad():
            decoded = model.mlp_decoder(slots.slots)
        yield ImageReconstruction(features=slots.features[0],
                                  reconstruction=decoded.reconstruction[0],
                                  decoder_masks=decoded.masks[0], attention=slots.attention[0],
                                  instances=sample.instances)


def markdown(report: dict) -> str:
    lines = ["# Does the MLP decoder draw the objects?", "",
             f"`python experiments/feature_reconstruction.py`: {report['dataset']}, "
             "slots inferred as the predict stage does. Feature MSE against the encoder's tokens "
             "(mean over images); centroid spread of the masks in image widths (0 = every mask "
             "covers the image alike).", "",
             "| model | MLP decoder MSE | image-mean MSE | instance-mean MSE | decoder spread | "
             "slot-attention spread | ground-truth spread | images |",
             "|---|---|---|---|---|---|---|---|"]
    for name, score in report["models"].items():
        mse, spread = score["mse"], score["centroid_spread"]
        lines.append(f"| {name} | {mse['decoder']:.4f} | {mse['image_mean']:.4f} | "
                     f"{mse['instance_mean']:.4f} | {spread['decoder']:.4f} | "
                     f"{spread['slot_attention']:.4f} | {spread['ground_truth']:.4f} | "
                     f"{score['images']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--config-out", default="data/cpu")
    parser.add_argument("--models", nargs="+",
                        default=["phase 1=data/cpu/train/phase1/model",
                                 "phase 2=data/cpu/train/phase2/model"],
                        help="NAME=FOLDER of trained models with an MLP decoder")
    parser.add_argument("--dataset", default="toy_val")
    parser.add_argument("--images", type=int, default=None, help="at most this many (all)")
    parser.add_argument("--out", default="reports/feature_reconstruction")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    out = Path(args.config_out)
    report, readers = {"dataset": args.dataset, "models": {}}, {}
    for entry in args.models:
        name, _, folder = entry.partition("=")
        if not folder:
            raise InvalidInput(f"--models {entry!r}: expected NAME=FOLDER")
        model = GlassModel.from_pretrained(folder, device=evaluate.device)
        if model.mlp_decoder is None:
            raise InvalidInput(f"{folder} has no MLP decoder (mlp_decoder/): nothing to score")
        size = model.index.encoder_image_size   # one reader per encoder input size
        if size not in readers:
            readers[size] = open_reader(reader_settings(evaluate, data, out / "prepared",
                                                        args.dataset, out / "models", size))
        reader = readers[size]
        score = score_feature_reconstruction(
            reconstructions(model, reader, args.images, evaluate.seed), model.grid_size)
        report["models"][name] = {"folder": folder, **score.as_dict()}
        log.info("%s: %s", name, report["models"][name])
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))


if __name__ == "__main__":
    run_stage("feature_reconstruction", main)
