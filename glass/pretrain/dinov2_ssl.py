"""Label-free pretraining of the tiny DINOv2 on toy-world images: DINO/iBOT-style
self-distillation, the recipe DINOv2 itself is trained with (Oquab et al. 2023), in small.

Why this objective: GLASS's instance guidance relies on the encoder's patch features already
separating objects (paper Sec. 4). DINO's image-level loss alone shapes the CLS token; iBOT's
masked-patch loss makes every patch token predict the teacher's view of it from its context,
which is what gives DINOv2's patch features their object structure. Both are used:

- a teacher (exponential moving average of the student, never trained by gradients) sees two
  augmented views unmasked; the student sees the same views with a share of patches replaced by
  the model's mask token (``Dinov2Model``'s ``bool_masked_pos``);
- a shared projection head maps CLS and patch tokens to ``prototypes`` logits; the targets are
  the teacher's centred, sharpened softmax (temperature ``teacher_temperature``), the student's
  log-softmax at ``student_temperature``;
- loss = CLS cross-entropy across the two views + patch cross-entropy on the masked patches of
  each view.

Images come from the toy world's renderer: a pool of ``pool_size`` scenes of the split
``pretrain`` (never the evaluation's val scenes), rendered once, from which every step draws its
batch; scenes, draws, crops and masks are all seeded by ``seed``, so a run is deterministic.
The saved model is the teacher, as in DINO, in the ``Dinov2Model`` layout that
``FrozenDinov2Encoder`` loads (``glass.tiny.dinov2.save_dinov2_folder``).
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from glass.data.toy_world import ToyWorldConfig, render_scene, scene_for_image
from glass.pretrain.params import SelfDistillationSettings
from glass.tiny.dinov2 import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)
PRETRAIN_SPLIT = "pretrain"


class ProjectionHead(nn.Module):
    """DINO's head: MLP → L2-normalised bottleneck → weight-normalised prototypes."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck, prototypes, bias=False))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(self.mlp(tokens), dim=-1))


def toy_images(world: ToyWorldConfig, seed: int, start: int, count: int,
               progress: bool = False) -> torch.Tensor:
    """(count, 3, S, S) uint8: toy-world scenes ``start .. start+count-1`` of the pretraining
    split."""
    images = [render_scene(scene_for_image(world, seed, PRETRAIN_SPLIT, index), world).image
              for index in tqdm(range(start, start + count), desc="render toy scenes",
                                disable=not progress)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def augment(images: torch.Tensor, generator: torch.Generator,
            scale: tuple[float, float]) -> torch.Tensor:
    """A random resized crop (area share in ``scale``, back to the input size), horizontal flip
    and brightness/contrast jitter per image."""
    batch, _, height, width = images.shape
    out = []
    for image in images:
        area = float(torch.empty(()).uniform_(*scale, generator=generator))
        side_h, side_w = max(1, round(height * math.sqrt(area))), max(1, round(width * math.sqrt(area)))
        top = int(torch.randint(height - side_h + 1, (1,), generator=generator))
        left = int(torch.randint(width - side_w + 1, (1,), generator=generator))
        crop = image[:, top:top + side_h, left:left + side_w][None]
        crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        brightness = float(torch.empty(()).uniform_(0.8, 1.2, generator=generator))
        contrast = float(torch.empty(()).uniform_(0.8, 1.2, generator=generator))
        mean = crop.mean()
        out.append(((crop - mean) * contrast + mean * brightness).clamp(0, 1))
    return torch.stack(out)


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                  center: torch.Tensor, settings: SelfDistillationSettings) -> torch.Tensor:
    """Mean over rows of −Σ softmax((t − c)/τt) · log softmax(s/τs)."""
    targets = F.softmax((teacher_logits - center) / settings.teacher_temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / settings.student_temperature,
                                     dim=-1)).sum(-1).mean()


class SelfDistillation(nn.Module):
    """Student backbone + head, their EMA teacher, and the two centres."""

    def __init__(self, backbone, settings: SelfDistillationSettings) -> None:
        super().__init__()
        dim = backbone.config.hidden_size
        self.settings = settings
        self.student = backbone
        self.student_head = ProjectionHead(dim, settings.head_hidden, settings.head_bottleneck,
                                           settings.prototypes)
        self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.student_head).requires_grad_(False)
        self.register_buffer("cls_center", torch.zeros(1, settings.prototypes))
        self.register_buffer("patch_center", torch.zeros(1, settings.prototypes))

    def tokens(self, backbone, pixels: torch.Tensor, mask: torch.Tensor | None):
        hidden = backbone(pixel_values=pixels, bool_masked_pos=mask).last_hidden_state
        return hidden[:, 0], hidden[:, 1:]

    def loss(self, views: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        settings = self.settings
        with torch.no_grad():
            teacher = [self.tokens(self.teacher, view, None) for view in views]
            teacher_cls = [self.teacher_head(cls) for cls, _ in teacher]
            teacher_patch = [self.teacher_head(patch) for _, patch in teacher]
        student = [self.tokens(self.student, view, mask) for view, mask in zip(views, masks)]
        student_cls = [self.student_head(cls) for cls, _ in student]
        cls_loss = (cross_entropy(teacher_cls[0], student_cls[1], self.cls_center, settings)
                    + cross_entropy(teacher_cls[1], student_cls[0], self.cls_center, settings)) / 2
        patch_losses = []
        for (_, patches), target, mask in zip(student, teacher_patch, masks):
            predicted = self.student_head(patches[mask])
            patch_losses.append(cross_entropy(target[mask], predicted, self.patch_center,
                                              settings))
        patch_loss = sum(patch_losses) / len(patch_losses)
        with torch.no_grad():
            momentum = settings.center_momentum
            self.cls_center.mul_(momentum).add_(torch.cat(teacher_cls).mean(0, keepdim=True),
                                                alpha=1 - momentum)
            patches = torch.cat([t.reshape(-1, t.shape[-1]) for t in teacher_patch])
            self.patch_center.mul_(momentum).add_(patches.mean(0, keepdim=True),
                                                  alpha=1 - momentum)
        return {"loss": cls_loss + patch_loss, "cls": cls_loss.detach(),
                "patch": patch_loss.detach()}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for student, teacher in ((self.student, self.teacher),
                                 (self.student_head, self.teacher_head)):
            for s, t in zip(student.parameters(), teacher.parameters()):
                t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def random_masks(batch: int, tokens: int, ratio: float,
                 generator: torch.Generator) -> torch.Tensor:
    """(batch, tokens) bool, exactly round(ratio · tokens) masked per image."""
    count = max(1, round(ratio * tokens))
    order = torch.rand(batch, tokens, generator=generator).argsort(dim=1)
    masks = torch.zeros(batch, tokens, dtype=torch.bool)
    masks.scatter_(1, order[:, :count], True)
    return masks


def schedule(step: int, settings: SelfDistillationSettings) -> tuple[float, float]:
    """(learning rate, teacher momentum) at ``step``: linear warm-up then cosine decay; the
    momentum rises from ``teacher_momentum`` to 1 on a cosine."""
    progress = step / max(1, settings.steps)
    if step < settings.warmup_steps:
        lr = settings.lr * (step + 1) / settings.warmup_steps
    else:
        lr = settings.lr * 0.5 * (1 + math.cos(math.pi * progress))
    momentum = 1 - (1 - settings.teacher_momentum) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr, momentum


def pretrain_dinov2(backbone, world: ToyWorldConfig, settings: SelfDistillationSettings,
                    seed: int, progress: bool = True) -> tuple[object, list[dict[str, float]]]:
    """Train ``backbone`` (a ``Dinov2Model``) by self-distillation; returns the teacher backbone
    and the per-step losses."""
    torch.manual_seed(seed)
    model = SelfDistillation(backbone.train(), settings)
    parameters = list(model.student.parameters()) + list(model.student_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    grid = backbone.config.image_size // backbone.config.patch_size
    pool = toy_images(world, seed, 0, settings.pool_size, progress=progress)
    history = []
    bar = tqdm(range(settings.steps), desc="pretrain dinov2", disable=not progress)
    for step in bar:
        lr, momentum = schedule(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        draw = torch.randint(len(pool), (settings.batch_size,), generator=generator)
        images = pool[draw].float() / 255
        views = [normalise(augment(images, generator, settings.crop_scale)) for _ in range(2)]
        masks = [random_masks(len(images), grid * grid, settings.mask_ratio, generator)
                 for _ in range(2)]
        terms = model.loss(views, masks)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, 3.0)
        optimizer.step()
        model.update_teacher(momentum)
        record = {"step": step + 1, **{k: float(v.detach()) for k, v in terms.items()}}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", cls=f"{record['cls']:.3f}",
                        patch=f"{record['patch']:.3f}")
    return model.teacher.eval(), history
