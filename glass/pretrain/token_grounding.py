"""Token grounding of the tiny Stable Diffusion's cross-attention while it is pretrained.

Stable Diffusion's class tokens attend to their objects because it saw billions of captioned
images; the toy world's 4,000-step miniature learned to draw the prompted classes, but its class
tokens attend to every object in the scene about equally (README, "The toy world's own models":
class agreement 0.5 against the judge), which is what holds its pseudo masks down. This module
adds TokenCompose's token loss (Wang et al., "TokenCompose: Text-to-Image Diffusion with
Token-level Supervision", CVPR 2024, Sec. 3.2: one minus the share of a noun token's
cross-attention that falls inside the noun's segmentation mask, squared) on the toy world's own
render masks, to the cross-attention the UNet itself generates with:

- the tokens are the prompt's class part (``"<caption>; kite pizza"``: the positions of "kite"
  and of "pizza" after the separator), inside the full prompt the UNet is conditioned on; the
  synthesize stage later reads maps from the class text encoded *alone* (Dataset Diffusion's
  lookup, glass.synth.class_tokens), which this loss never sees, so the read-out stays a test of
  what the generator learned;
- the masks are each prompt class's pixels of the rendered scene, area-pooled to each grounded
  layer's grid (soft at object borders);
- a layer's map is its head-averaged softmax over the 77 positions, averaged over the class's
  token positions; the loss is the mean over grounded layers and over the (sample, class) pairs
  of the non-dropped prompts.

It is an option of the pretraining (``token_grounding_weight``, 0 = off, the plain run) and never
part of GLASS's training or of the synthesize stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from glass.errors import InvalidInput
from glass.synth.attention import CROSS, AttentionLayer, token_averaging_weights, unet_attention_layers
from glass.synth.class_tokens import class_text, class_token_groups
from glass.text.prompts import CLASS_SEPARATOR


def prompt_class_positions(tokenizer, prompt: str, classes: list[str]) -> list[list[int]]:
    """For each class, its token positions in the tokenized ``prompt`` (start token at 0), where
    the prompt ends with the class part ``CLASS_SEPARATOR + " ".join(classes)``."""
    suffix = CLASS_SEPARATOR + class_text(classes)
    if not prompt.endswith(suffix):
        raise InvalidInput(f"prompt {prompt!r} does not end with its class part {suffix!r}")
    prompt_body = tokenizer(prompt, add_special_tokens=False).input_ids
    class_body = tokenizer(class_text(classes), add_special_tokens=False).input_ids
    if len(prompt_body) + 2 > tokenizer.model_max_length:
        raise InvalidInput(f"prompt {prompt!r} is longer than the tokenizer's "
                           f"{tokenizer.model_max_length} tokens; its class tokens would be cut")
    if prompt_body[-len(class_body):] != class_body:
        raise InvalidInput(f"the class tokens of {prompt!r} depend on the caption before them")
    offset = 1 + len(prompt_body) - len(class_body)          # 1: the start token
    # class_token_groups counts positions in the class text with its own start token at 0
    return [[offset + position - 1 for position in group]
            for group in class_token_groups(tokenizer, classes)]


def class_maps(instance_map: np.ndarray, instance_classes: list[str],
               classes: list[str]) -> np.ndarray:
    """(H, W) uint8 map: k + 1 where the pixel shows ``classes[k]``, 0 elsewhere."""
    lookup = np.array([0] + [classes.index(name) + 1 for name in instance_classes], dtype=np.uint8)
    return lookup[instance_map]


def pooled_class_masks(maps: torch.Tensor, num_classes: int, side: int) -> torch.Tensor:
    """(N, num_classes, side * side) area shares of each class per cell of a side × side grid,
    from (N, H, W) class maps (glass.pretrain.token_grounding.class_maps)."""
    if maps.shape[-1] % side or maps.shape[-2] % side:
        raise InvalidInput(f"class maps of shape {tuple(maps.shape[-2:])} do not pool to {side}")
    # one class at a time: a one-hot of a 6,000-scene pool would be a gigabyte
    return torch.stack([F.adaptive_avg_pool2d((maps == k + 1).float(), side).flatten(1)
                        for k in range(num_classes)], dim=1)


def coarser_masks(masks: torch.Tensor, side: int, coarser_side: int) -> torch.Tensor:
    """(B, K, side²) area shares pooled to (B, K, coarser_side²)."""
    if coarser_side == side:
        return masks
    grid = masks.view(*masks.shape[:2], side, side)
    return F.adaptive_avg_pool2d(grid, coarser_side).flatten(2)


class GroundingAttnProcessor:
    """Cross-attention as diffusers' ``AttnProcessor`` (probabilities formed explicitly, so
    gradients reach them), which appends (its grid side, its head-averaged probabilities
    (B, h*w, T)) to ``records`` while ``records`` is a list."""

    def __init__(self, layer: AttentionLayer):
        self.layer = layer
        self.records: list[tuple[int, torch.Tensor]] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None or attention_mask is not None or attn.spatial_norm \
                is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise RuntimeError(f"{self.layer.name}: token grounding supports plain "
                               "cross-attention on (B, N, C) tokens only")
        residual = hidden_states
        batch_size = hidden_states.shape[0]
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)              # (B*heads, N, T)
        if self.records is not None:
            self.records.append((self.layer.side,
                                 probs.view(batch_size, attn.heads, *probs.shape[1:]).mean(1)))
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def grounded_layers(unet, latent_size: int, sides: tuple[int, ...]) -> list[AttentionLayer]:
    layers = [layer for layer in unet_attention_layers(unet, latent_size)
              if layer.kind == CROSS and layer.side in sides]
    missing = set(sides) - {layer.side for layer in layers}
    if missing:
        raise InvalidInput(f"the UNet has no cross-attention layer at sides {sorted(missing)}")
    return layers


@contextmanager
def grounding_processors(unet, layers: list[AttentionLayer]
                         ) -> Iterator[list[GroundingAttnProcessor]]:
    """Install GroundingAttnProcessors on ``layers`` (the others keep theirs: set_attn_processor
    takes the full dict); restore the original processors on exit."""
    originals = dict(unet.attn_processors)
    installed = [GroundingAttnProcessor(layer) for layer in layers]
    unet.set_attn_processor(originals | {p.layer.name: p for p in installed})
    try:
        yield installed
    finally:
        unet.set_attn_processor(originals)


def token_grounding_loss(records: list[tuple[int, torch.Tensor]], token_weights: torch.Tensor,
                         masks_by_side: dict[int, torch.Tensor]) -> torch.Tensor:
    """TokenCompose's token loss: mean over layers and valid (sample, class) pairs of
    (1 - share of the class's attention inside its mask)².

    ``records``: (side, (B, side², T) probabilities) per grounded layer; ``token_weights``
    (B, T, K): column k averages class k's positions (all zero for a missing class or a dropped
    prompt); ``masks_by_side[side]`` (B, K, side²)."""
    valid = token_weights.sum(1) > 0                                    # (B, K)
    if not bool(valid.any()):
        return token_weights.new_zeros(())
    losses = []
    for side, probs in records:
        class_probs = torch.bmm(probs, token_weights)                   # (B, side², K)
        inside = (class_probs * masks_by_side[side].transpose(1, 2)).sum(1)
        share = inside / class_probs.sum(1).clamp_min(1e-12)
        losses.append((1 - share)[valid].pow(2).mean())
    return torch.stack(losses).mean()


def pool_token_weights(tokenizer, prompts: list[str], classes: list[list[str]],
                       num_tokens: int) -> torch.Tensor:
    """(N, T, K_max) class-averaging weights of every pool prompt's class tokens."""
    return token_averaging_weights(
        [prompt_class_positions(tokenizer, prompt, names) for prompt, names in zip(prompts, classes)],
        num_tokens)
