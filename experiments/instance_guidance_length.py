"""How long must the instance guidance train before its MLP decoder draws the objects?

    python experiments/instance_guidance_length.py

In the CPU graph's 2,000-step phase 1 the MLP decoder's alpha masks stay the same everywhere
(``experiments/feature_reconstruction.py``). Here a fresh slot attention and MLP decoder (the
CPU configuration's ``train.model`` sizes, seeded) train on the instance-guidance loss alone
(paper Eq. 3's L_instance; no UNet, no pseudo masks) over the committed tiny DINOv2's tokens of
toy-world scenes: ``--fit-images`` scenes of the pretraining pool's split (``pretrain``), the
tokens computed once. Every ``--eval-every`` steps, on ``--test-images`` held-out scenes (the
pretraining's evaluation split, another seed), it scores
(``glass.eval.feature_reconstruction``) the decoder's feature MSE beside each image's mean token
and each ground-truth segment's mean token, the centroid spread of the decoder's and of slot
attention's masks, and object discovery of slot attention's masks at the image size: mIoU_i
(background included, as the evaluate stage) and the share of images with a same-class pair
whose two instances fall mostly into one slot (``same_class_merged``, as the ablation).

Optimiser as phase 1 (Adam, the CPU phase-1 learning rate unless ``--lr``, gradient clip
``train.optim.max_grad_norm``, batch ``train.data.batch_size``); batches and slot noise are drawn
from ``--seed``. Writes reports/instance_guidance_length.{json,md}.
"""

import argparse
import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from glass.data.toy_world import render_scene, scene_for_image
from glass.eval.feature_reconstruction import ImageReconstruction, score_feature_reconstruction
from glass.eval.object_discovery import mean_metrics, object_discovery, same_class_merged
from glass.io import atomic_open, write_json
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.inference import slot_masks_to_labels, upsample_masks
from glass.model.mlp_decoder import MLPDecoder, instance_guidance_loss
from glass.model.slot_attention import SlotAttention
from glass.params import load_params, read_section, read_seed
from glass.pretrain.dinov2_ssl import PRETRAIN_SPLIT
from glass.pretrain.params import PretrainParams
from glass.pretrain.position_information import encoder_tokens
from glass.pretrain.run import EVAL_SEED_OFFSET, EVAL_SPLIT
from glass.seeding import sample_seed
from glass.stage_runner import run_stage
from glass.train.params import TrainParams

log = logging.getLogger("instance_guidance_length")


def scenes(world, seed: int, split: str, count: int):
    """The rendered scenes ``0..count-1`` of ``split``."""
    return [render_scene(scene_for_image(world, seed, split, index), world)
            for index in range(count)]


def encode(encoder: FrozenDinov2Encoder, rendered) -> torch.Tensor:
    """(scenes, N, D) encoder tokens of the rendered scenes."""
    features, _ = encoder_tokens(encoder, ((None, scene.image, scene.instance_map)
                                           for scene in rendered))
    return torch.from_numpy(np.stack(features))


@torch.no_grad()
def evaluate(slot_attention: SlotAttention, decoder: MLPDecoder, tokens: torch.Tensor,
             rendered, seed: int) -> dict:
    slot_attention.eval()
    decoder.eval()
    grid = tuple(slot_attention.config.grid_size)
    images, discovery, merged = [], [], []
    for index, scene in enumerate(rendered):
        generator = torch.Generator().manual_seed(sample_seed(seed, f"{EVAL_SPLIT}-{index:05d}",
                                                              "slot-init"))
        slots = slot_attention(tokens[index:index + 1], generator=generator)
        decoded = decoder(slots.slots)
        images.append(ImageReconstruction(tokens[index], decoded.reconstruction[0],
                                          decoded.masks[0], slots.attention[0],
                                          scene.instance_map))
        labels = slot_masks_to_labels(upsample_masks(slots.attention, grid,
                                                     scene.instance_map.shape))[0].numpy()
        discovery.append(object_discovery(labels, scene.instance_map, include_background=True))
        classes = {i + 1: name for i, name in enumerate(scene.instance_classes)}
        verdict = same_class_merged(labels, scene.instance_map, classes)
        if verdict is not None:
            merged.append(verdict)
    slot_attention.train()
    decoder.train()
    score = score_feature_reconstruction(images, grid).as_dict()
    return {**score, "miou_i": round(float(mean_metrics(discovery)["miou"]), 4),
            "same_class_merged": round(float(np.mean(merged)), 4) if merged else None,
            "images_with_same_class_pair": len(merged)}


def markdown(report: dict) -> str:
    lines = ["# How long the instance guidance trains before its decoder draws the objects", "",
             "`python experiments/instance_guidance_length.py`: a fresh slot attention and MLP "
             f"decoder on the instance loss alone (lr {report['lr']}, batch "
             f"{report['batch_size']}, {report['fit_images']} fit scenes), scored on "
             f"{report['test_images']} held-out scenes. Feature MSE against the encoder's tokens "
             "(each image's mean token: "
             f"{report['image_mean_mse']:.4f}; each ground-truth segment's mean token: "
             f"{report['instance_mean_mse']:.4f}); centroid spread in image widths (ground truth "
             f"{report['ground_truth_spread']:.4f}); slot attention's mIoU_i and same-class "
             "merging.", "",
             "| step | decoder MSE | decoder spread | slot-attention spread | mIoU_i | "
             "same-class merged | seconds |", "|---|---|---|---|---|---|---|"]
    for row in report["curve"]:
        merged = "–" if row["same_class_merged"] is None else f"{row['same_class_merged']:.2f}"
        lines.append(f"| {row['step']} | {row['mse']['decoder']:.4f} | "
                     f"{row['centroid_spread']['decoder']:.4f} | "
                     f"{row['centroid_spread']['slot_attention']:.4f} | {row['miou_i']:.3f} | "
                     f"{merged} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml",
                        help="the configuration whose train section sizes the modules")
    parser.add_argument("--pretrain-params", default="configs/toy-pretrain/params.yaml")
    parser.add_argument("--encoder", default="models/toy/dinov2")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--lr", type=float, default=None, help="default: train.phase1.lr")
    parser.add_argument("--fit-images", type=int, default=1_800)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/instance_guidance_length")
    args = parser.parse_args()
    train = read_section(load_params(args.params), "train", TrainParams)
    pretrain_params = load_params(args.pretrain_params)
    world = read_section(pretrain_params, "pretrain", PretrainParams).world
    world_seed = read_seed(pretrain_params)
    model, lr = train.model, args.lr if args.lr is not None else train.phase1.lr
    torch.manual_seed(args.seed)

    encoder = FrozenDinov2Encoder(args.encoder, image_size=world.image_size)
    fit_tokens = encode(encoder, scenes(world, world_seed, PRETRAIN_SPLIT, args.fit_images))
    test_scenes = scenes(world, world_seed + EVAL_SEED_OFFSET, EVAL_SPLIT, args.test_images)
    test_tokens = encode(encoder, test_scenes)
    slot_attention = SlotAttention(
        input_dim=encoder.feature_dim, grid_size=encoder.grid_size, num_slots=model.num_slots,
        num_iterations=model.num_iterations, slot_size=model.slot_size,
        mlp_hidden_size=model.mlp_hidden_size, output_dim=model.slot_size)
    decoder = MLPDecoder(model.slot_size, encoder.feature_dim,
                         encoder.grid_size[0] * encoder.grid_size[1],
                         hidden_size=model.mlp_decoder_hidden_size,
                         num_hidden_layers=model.mlp_decoder_hidden_layers)
    parameters = list(slot_attention.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(args.seed)
    batch_size = train.data.batch_size

    curve, started = [], time.monotonic()
    for step in tqdm(range(1, args.steps + 1), desc="instance guidance"):
        batch = fit_tokens[torch.randint(0, len(fit_tokens), (batch_size,), generator=generator)]
        slots = slot_attention(batch, generator=generator)
        loss = instance_guidance_loss(decoder(slots.slots).reconstruction, batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, train.optim.max_grad_norm)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "train_loss": round(loss.item(), 4),
                   **evaluate(slot_attention, decoder, test_tokens, test_scenes, args.seed),
                   "seconds": round(time.monotonic() - started, 1)}
            curve.append(row)
            log.info("%s", row)
    last = curve[-1]
    report = {"encoder": args.encoder, "lr": lr, "batch_size": batch_size, "seed": args.seed,
              "fit_images": args.fit_images, "test_images": args.test_images,
              "image_mean_mse": last["mse"]["image_mean"],
              "instance_mean_mse": last["mse"]["instance_mean"],
              "ground_truth_spread": last["centroid_spread"]["ground_truth"], "curve": curve}
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))


if __name__ == "__main__":
    run_stage("instance_guidance_length", main)
