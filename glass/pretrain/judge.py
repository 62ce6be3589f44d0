"""The judge: a small semantic segmenter of toy-world images, trained on the toy world's exact
ground truth, that checks generated images independently of the attention path (issue #12).

It is an evaluation tool, never part of GLASS's training: it tells which classes a generated
image shows and where, so that the attention pseudo masks can be scored against it
(glass.synth.mask_quality). Its input is a 64-px image (the tiny SD's size); its output has one
channel per label: 0 background, 1..8 the toy classes in ``TOY_CLASS_STYLES`` order.

Trained on renders of a split of its own (``judge``), with blur, noise and colour jitter so that
it stays right on a generator's softer, slightly off-colour images; its own accuracy on
held-out renders is recorded with it, so a reader knows how far its verdicts can be trusted.
The model is a diffusers ``ModelMixin``/``ConfigMixin`` (``save_pretrained``/``from_pretrained``).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from tqdm import tqdm

from glass.data.toy_world import TOY_CLASS_STYLES, ToyWorldConfig, render_scene, scene_for_image
from glass.pretrain.judge_params import JudgeSettings

log = logging.getLogger(__name__)
JUDGE_SPLIT = "judge"
JUDGE_CLASSES: tuple[str, ...] = tuple(TOY_CLASS_STYLES)   # label k = JUDGE_CLASSES[k - 1]


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out),
        nn.SiLU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out),
        nn.SiLU())


class ToySegmenter(ModelMixin, ConfigMixin):
    """A three-level U-Net: (B, 3, H, W) images in [0, 1] → (B, 1 + classes, H, W) logits;
    ``image_size`` is the size it was trained at (callers resize to it)."""

    @register_to_config
    def __init__(self, num_labels: int = 1 + len(JUDGE_CLASSES), width: int = 16,
                 class_names: tuple[str, ...] = JUDGE_CLASSES, image_size: int = 64) -> None:
        super().__init__()
        self.down1 = _block(3, width)
        self.down2 = _block(width, 2 * width)
        self.down3 = _block(2 * width, 2 * width)
        self.up2 = _block(4 * width, 2 * width)
        self.up1 = _block(3 * width, width)
        self.head = nn.Conv2d(width, num_labels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1
        level1 = self.down1(x)
        level2 = self.down2(F.avg_pool2d(level1, 2))
        level3 = self.down3(F.avg_pool2d(level2, 2))
        up = F.interpolate(level3, scale_factor=2, mode="nearest")
        up = self.up2(torch.cat([up, level2], 1))
        up = F.interpolate(up, scale_factor=2, mode="nearest")
        return self.head(self.up1(torch.cat([up, level1], 1)))

    @torch.no_grad()
    def segment(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, H, W) int64 labels."""
        return torch.cat([self(images[start:start + batch].float()).argmax(1)
                          for start in range(0, len(images), batch)])


def render_labelled(world: ToyWorldConfig, seed: int, split: str, count: int,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 3, S, S) float images in [0, 1] and (count, S, S) int64 label maps."""
    lookup = {name: label for label, name in enumerate(JUDGE_CLASSES, start=1)}
    images, labels = [], []
    for index in tqdm(range(count), desc="render judge scenes", disable=not progress):
        rendered = render_scene(scene_for_image(world, seed, split, index), world)
        images.append(rendered.image)
        labels.append(rendered.semantic_map(lookup))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return pixels.contiguous(), torch.from_numpy(np.stack(labels)).long()


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image: Gaussian blur (sigma 0-1.5 px), colour gain and offset jitter, pixel noise; a
    horizontal flip is applied by the caller to images and labels together."""
    out = []
    for image in images:
        sigma = float(torch.empty(()).uniform_(0.0, 1.5, generator=generator))
        if sigma > 0.2:
            radius = math.ceil(2 * sigma)
            taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kernel = torch.exp(-taps**2 / (2 * sigma**2))
            kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
            padded = F.pad(image[None], (radius, radius, 0, 0), mode="replicate")
            image = F.conv2d(padded, kernel, groups=3)
            padded = F.pad(image, (0, 0, radius, radius), mode="replicate")
            image = F.conv2d(padded, kernel.transpose(-1, -2), groups=3)[0]
        gain = torch.empty(3, 1, 1).uniform_(0.85, 1.15, generator=generator)
        offset = torch.empty(3, 1, 1).uniform_(-0.06, 0.06, generator=generator)
        noise = torch.randn(image.shape, generator=generator) * 0.03
        out.append((image * gain + offset + noise).clamp(0, 1))
    return torch.stack(out)


def confusion(predicted: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(num_labels, num_labels) counts, rows = target, columns = predicted."""
    index = target.flatten() * num_labels + predicted.flatten()
    return torch.bincount(index, minlength=num_labels**2).reshape(num_labels, num_labels)


def per_label_iou(matrix: torch.Tensor) -> list[float | None]:
    """IoU per label from a confusion matrix; None for a label absent from both."""
    intersection = matrix.diagonal().double()
    union = matrix.sum(0).double() + matrix.sum(1).double() - intersection
    return [float(i / u) if u > 0 else None for i, u in zip(intersection, union)]


def train_judge(world: ToyWorldConfig, settings: JudgeSettings, seed: int,
                progress: bool = True) -> tuple[ToySegmenter, list[dict[str, float]]]:
    """Train the segmenter on ``pool_size`` renders of the judge split; returns it (eval mode)
    and the per-step losses."""
    world = dataclasses.replace(world, image_size=settings.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.model_seed)
        model = ToySegmenter(width=settings.width, image_size=settings.image_size)
    images, labels = render_labelled(world, seed, JUDGE_SPLIT, settings.pool_size, progress)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    history = []
    model.train()
    for step in tqdm(range(settings.steps), desc="train judge", disable=not progress):
        if step < settings.warmup_steps:
            lr = settings.lr * (step + 1) / settings.warmup_steps
        else:
            lr = settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        draw = torch.randint(len(images), (settings.batch_size,), generator=generator)
        batch, target = degrade(images[draw], generator), labels[draw]
        flip = torch.rand(len(draw), generator=generator) < 0.5
        batch[flip], target[flip] = batch[flip].flip(-1), target[flip].flip(-1)
        loss = F.cross_entropy(model(batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, "loss": loss.item()})
    return model.eval(), history


def judge_accuracy(model: ToySegmenter, world: ToyWorldConfig, settings: JudgeSettings,
                   seed: int) -> dict[str, float | dict]:
    """The judge's mIoU (background and classes) on held-out renders, clean and degraded."""
    world = dataclasses.replace(world, image_size=settings.image_size)
    images, labels = render_labelled(world, seed, "val", settings.eval_images)
    scores: dict[str, float | dict] = {}
    generator = torch.Generator().manual_seed(seed)
    for name, batch in (("clean", images), ("degraded", degrade(images, generator))):
        matrix = confusion(model.segment(batch), labels, model.config.num_labels)
        ious = per_label_iou(matrix)
        present = [iou for iou in ious if iou is not None]
        scores[f"miou_{name}"] = round(float(np.mean(present)), 4)
        if name == "clean":
            scores["iou_per_label"] = {label: None if iou is None else round(iou, 4)
                                       for label, iou in zip(("background",) + JUDGE_CLASSES,
                                                             ious)}
    return scores
