"""Capture of Stable Diffusion's class cross-attention and self-attention during generation.

What is captured (docs/paper-facts.md, "Pseudo masks"; paper Sec. 4 following Dataset Diffusion):

- cross-attention of the class tokens: queries are the image features of the *conditional* half
  of the classifier-free-guidance batch (diffusers orders it [uncond, cond]: see
  ``StableDiffusionPipeline.__call__``, ``torch.cat([negative_prompt_embeds, prompt_embeds])``);
  keys are the layer's ``to_k`` applied to the separately encoded class text; softmax over all
  of its positions (77 for SD, start token included); only at the cross resolution (16×16 for
  SD at 512 px);
- self-attention of the conditional half at the self resolution (32×32 at 512 px).

Both are averaged over heads at once and added to float32 running sums, so memory depends on
neither the number of steps nor the layers that are not captured (a 64×64 self-attention map
would be 4096² per head). Custom processors go only on the captured layers; they compute the
layer output exactly like diffusers' default ``AttnProcessor2_0`` (scaled_dot_product_attention,
which never forms the probabilities), and form the probabilities separately for the conditional
half only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from glass.errors import InvalidInput

CROSS = "cross"
SELF = "self"


# ---------------------------------------------------------------------------------------------
# Which resolutions exist


def attention_grid_sides(latent_size: int, attention_levels: int | None = None) -> list[int]:
    """Grid sides latent/2^k (integer k ≥ 0, k < attention_levels when given) that the UNet's
    attention layers can run at for a square latent of ``latent_size``."""
    sides: list[int] = []
    side, level = latent_size, 0
    while side >= 1 and (attention_levels is None or level < attention_levels):
        sides.append(side)
        if side % 2:
            break
        side, level = side // 2, level + 1
    return sides


def validate_attention_resolutions(image_size: int, vae_scale_factor: int, cross_res: int,
                                   self_res: int, attention_levels: int | None = None) -> int:
    """Check, before any model is loaded, that the chosen attention maps can exist; return the
    latent side.

    DD's resolutions (cross 16×16, self 32×32) exist only for a 64×64 latent, i.e. 512 px with
    SD's VAE (docs/paper-facts.md, "Data generation"). ``attention_levels`` is the number of UNet
    levels, from the full latent down, that have attention (4 for SD 2.1); None = not checked.
    """
    if image_size <= 0 or vae_scale_factor <= 0 or image_size % vae_scale_factor:
        raise InvalidInput(f"image size {image_size} is not a positive multiple of the VAE scale "
                         f"factor {vae_scale_factor}: the latent would not be a whole grid")
    latent = image_size // vae_scale_factor
    sides = attention_grid_sides(latent, attention_levels)
    for label, res in (("cross-attention", cross_res), ("self-attention", self_res)):
        if res not in sides:
            raise InvalidInput(
                f"{label} resolution {res}x{res} does not exist at image size {image_size}: the "
                f"latent is {latent}x{latent} ({image_size} / VAE scale factor {vae_scale_factor}"
                f") and UNet attention runs at latent/2^k = {', '.join(map(str, sides))}. Fix: "
                "generate at 512 px with SD 2.1-base (64x64 latent: cross 16, self 32 exist), "
                f"or scale the resolutions with the latent{_scaled_suggestion(latent, sides)}.")
    return latent


def _scaled_suggestion(latent: int, sides: list[int]) -> str:
    """DD's ratios (cross = latent/4, self = latent/2) at this latent, when both exist."""
    cross, self_ = latent // 4, latent // 2
    if latent % 4 == 0 and cross in sides and self_ in sides:
        return f" (here: cross {cross}, self {self_})"
    return ""


@dataclass(frozen=True)
class AttentionLayer:
    name: str            # key in unet.attn_processors ("....attn2.processor")
    kind: str            # CROSS or SELF
    side: int            # query grid side (h = w) for a square latent


def unet_level(module_name: str, num_levels: int) -> int:
    """UNet level (0 = full latent) of an attention module of a UNet2DConditionModel: down
    block i runs at level i, up block j at level num_levels-1-j, the mid block at the bottom."""
    if match := re.match(r"down_blocks\.(\d+)\.", module_name):
        return int(match.group(1))
    if match := re.match(r"up_blocks\.(\d+)\.", module_name):
        return num_levels - 1 - int(match.group(1))
    if module_name.startswith("mid_block."):
        return num_levels - 1
    raise InvalidInput(f"cannot place attention layer {module_name!r} on a UNet level")


def unet_attention_layers(unet, latent_size: int) -> list[AttentionLayer]:
    """Every attention layer of ``unet`` with its kind and query grid side."""
    num_levels = len(unet.config.block_out_channels)
    layers = [
        AttentionLayer(f"{name}.processor", CROSS if module.is_cross_attention else SELF,
                       -(-latent_size // 2 ** unet_level(name, num_levels)))
        for name, module in unet.named_modules() if isinstance(module, Attention)
    ]
    if {layer.name for layer in layers} != set(unet.attn_processors):
        raise InvalidInput("the UNet has attention processors outside its Attention modules; "
                         "cannot tell which layers run at which resolution")
    return layers


def unet_attention_levels(unet) -> int:
    """How many UNet levels, from the full latent down, have attention layers."""
    num_levels = len(unet.config.block_out_channels)
    return 1 + max(unet_level(name, num_levels) for name, module in unet.named_modules()
                   if isinstance(module, Attention))


def select_capture_layers(unet, latent_size: int, cross_side: int,
                          self_side: int) -> list[AttentionLayer]:
    """The cross-attention layers at ``cross_side`` and self-attention layers at ``self_side``;
    ValueError naming the sides that exist when either set is empty."""
    layers = unet_attention_layers(unet, latent_size)
    chosen: list[AttentionLayer] = []
    for kind, side in ((CROSS, cross_side), (SELF, self_side)):
        of_kind = [layer for layer in layers if layer.kind == kind]
        at_side = [layer for layer in of_kind if layer.side == side]
        if not at_side:
            existing = sorted({layer.side for layer in of_kind}, reverse=True)
            raise InvalidInput(f"this UNet has no {kind}-attention layer at {side}x{side} for a "
                             f"{latent_size}x{latent_size} latent; it has them at {existing}")
        chosen += at_side
    return chosen


# ---------------------------------------------------------------------------------------------
# Running sums


class AttentionStore:
    """Per-sample running sums (float32) of the conditional half's head-averaged attention for
    one generation batch of ``num_samples`` prompts.

    ``class_embeddings`` (B, T, D): the encoded class texts; ``token_groups[b]``: for sample b,
    the positions of each class's tokens (see glass.synth.class_tokens). A class's map is the
    mean over its tokens. Steps ``start_step <= step < end_step`` of the denoising loop are
    captured (end None = to the end); the pipeline advances ``step`` through ``on_step_end``.
    """

    def __init__(self, num_samples: int, cross_side: int, self_side: int,
                 class_embeddings: torch.Tensor, token_groups: list[list[list[int]]], *,
                 start_step: int = 0, end_step: int | None = None):
        if len(token_groups) != num_samples or class_embeddings.shape[0] != num_samples:
            raise InvalidInput("need one class embedding and one token-group list per sample")
        if start_step < 0 or (end_step is not None and end_step <= start_step):
            raise InvalidInput(f"empty capture window: start_step={start_step}, end_step={end_step}")
        self.num_samples = num_samples
        self.cross_side, self.self_side = cross_side, self_side
        self.start_step, self.end_step = start_step, end_step
        self.step = 0
        self.class_embeddings = class_embeddings
        self.num_classes = [len(groups) for groups in token_groups]
        device = class_embeddings.device
        self.token_weights = token_averaging_weights(token_groups, class_embeddings.shape[1]
                                                     ).to(device)
        self.cross_sum = torch.zeros(num_samples, max(self.num_classes, default=0),
                                     cross_side * cross_side, dtype=torch.float32, device=device)
        n = self_side * self_side
        self.self_sum = torch.zeros(num_samples, n, n, dtype=torch.float32, device=device)
        self.cross_updates = 0
        self.self_updates = 0
        # Class-text keys per cross layer: they do not change across steps.
        self.class_keys: dict[str, torch.Tensor] = {}

    @property
    def capturing(self) -> bool:
        return self.start_step <= self.step and (self.end_step is None or self.step < self.end_step)

    def on_step_end(self, pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        """``callback_on_step_end`` hook: the next UNet call belongs to loop step index + 1."""
        self.step = step_index + 1
        return callback_kwargs

    def add_cross(self, class_probs: torch.Tensor) -> None:
        """class_probs (B, h*w, T): cond-half attention over the class-text positions."""
        self.cross_sum += torch.bmm(class_probs, self.token_weights).transpose(1, 2)
        self.cross_updates += 1

    def add_self(self, probs: torch.Tensor) -> None:
        """probs (B, n, n): cond-half self-attention, head-averaged."""
        self.self_sum += probs
        self.self_updates += 1

    def cross_maps(self, index: int) -> torch.Tensor:
        """(K, h, w) class cross-attention of sample ``index``, averaged over layers and steps."""
        self._check_captured()
        side = self.cross_side
        maps = self.cross_sum[index, :self.num_classes[index]] / self.cross_updates
        return maps.reshape(-1, side, side).cpu()

    def self_attention(self, index: int) -> torch.Tensor:
        """(n, n) self-attention of sample ``index``, averaged (rows sum to 1)."""
        self._check_captured()
        return (self.self_sum[index] / self.self_updates).cpu()

    def _check_captured(self) -> None:
        if self.cross_updates == 0 or self.self_updates == 0:
            raise RuntimeError(f"no attention was captured: no denoising step fell in the window "
                               f"[{self.start_step}, {self.end_step}) or no captured layer ran")


def token_averaging_weights(token_groups: list[list[list[int]]], num_tokens: int) -> torch.Tensor:
    """(B, T, K_max) matrices whose column k averages the positions of class k (zero padding)."""
    num_classes = max((len(groups) for groups in token_groups), default=0)
    weights = torch.zeros(len(token_groups), num_tokens, num_classes, dtype=torch.float32)
    for sample, groups in enumerate(token_groups):
        for k, positions in enumerate(groups):
            weights[sample, positions, k] = 1.0 / len(positions)
    return weights


# ---------------------------------------------------------------------------------------------
# Processors


class CapturingAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` (same operations in the same order, so the same output
    bits) that also adds the conditional half's head-averaged attention probabilities of its
    layer to an AttentionStore while the store's step window is open."""

    def __init__(self, store: AttentionStore, layer: AttentionLayer):
        self.store = store
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        # --- AttnProcessor2_0, verbatim in effect ---
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length,
                                                         batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1,
                                                 attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.store.capturing:       # the only addition; it reads but never changes tensors
            self._record(attn, query, key, attention_mask)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height,
                                                                    width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _record(self, attn: Attention, query: torch.Tensor, key: torch.Tensor,
                attention_mask: torch.Tensor | None) -> None:
        cond_query = self._conditional_half(query)
        if cond_query.shape[2] != self.layer.side ** 2:
            raise RuntimeError(f"{self.layer.name}: {cond_query.shape[2]} query tokens, expected "
                               f"a {self.layer.side}x{self.layer.side} grid (non-square image or "
                               "wrong latent size?)")
        if self.layer.kind == CROSS:
            self._record_cross(attn, cond_query)
        else:
            cond_mask = None if attention_mask is None else self._conditional_half(attention_mask)
            self._record_self(attn, cond_query, self._conditional_half(key), cond_mask)

    def _conditional_half(self, tensor: torch.Tensor) -> torch.Tensor:
        """The last B rows: the whole batch without guidance, the cond half [uncond, cond] with."""
        samples = self.store.num_samples
        if tensor.shape[0] not in (samples, 2 * samples):
            raise RuntimeError(f"{self.layer.name}: batch of {tensor.shape[0]} for "
                               f"{samples} samples (expected {samples} or {2 * samples})")
        return tensor[-samples:]

    def _record_cross(self, attn: Attention, cond_query: torch.Tensor) -> None:
        class_keys = self._class_keys(attn, cond_query.shape[-1])
        scores = torch.matmul(cond_query.float(), class_keys.transpose(-1, -2)) * attn.scale
        # softmax over every class-text position (start token and padding included, as DD)
        probs = scores.softmax(dim=-1).mean(dim=1)                      # (B, h*w, T)
        self.store.add_cross(probs)

    def _class_keys(self, attn: Attention, head_dim: int) -> torch.Tensor:
        keys = self.store.class_keys.get(self.layer.name)
        if keys is None:
            embeddings = self.store.class_embeddings.to(attn.to_k.weight.dtype)
            if attn.norm_cross:
                embeddings = attn.norm_encoder_hidden_states(embeddings)
            keys = attn.to_k(embeddings)
            keys = keys.view(keys.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                keys = attn.norm_k(keys)
            keys = keys.float()
            self.store.class_keys[self.layer.name] = keys
        return keys

    def _record_self(self, attn: Attention, cond_query: torch.Tensor, cond_key: torch.Tensor,
                     cond_mask: torch.Tensor | None) -> None:
        # One head at a time: the transient is one (B, n, n) map, not (B, heads, n, n).
        heads = cond_query.shape[1]
        total = None
        for head in range(heads):
            scores = torch.matmul(cond_query[:, head].float(),
                                  cond_key[:, head].float().transpose(-1, -2)).mul_(attn.scale)
            if cond_mask is not None:
                scores += cond_mask[:, head].float()
            probs = scores.softmax(dim=-1)
            total = probs if total is None else total.add_(probs)
        self.store.add_self(total.div_(heads))


@contextmanager
def capture_attention(unet, store: AttentionStore,
                      layers: list[AttentionLayer]) -> Iterator[AttentionStore]:
    """Install capturing processors on ``layers`` only (every other layer keeps its processor);
    restore the original processors on exit, also after an error."""
    originals = dict(unet.attn_processors)
    for layer in layers:
        if type(originals[layer.name]) is not AttnProcessor2_0:
            raise TypeError(
                f"{layer.name} uses {type(originals[layer.name]).__name__}; attention capture "
                "reproduces diffusers' default AttnProcessor2_0 only (disable xformers or other "
                "processors, e.g. unet.set_attn_processor(AttnProcessor2_0()))")
    processors = dict(originals)
    for layer in layers:
        processors[layer.name] = CapturingAttnProcessor(store, layer)
    unet.set_attn_processor(processors)
    try:
        yield store
    finally:
        unet.set_attn_processor(dict(originals))   # set_attn_processor pops from its argument
