"""Slot attention over DINOv2 patch features (paper Eq. 1, supplement Sec. 2; docs/paper-facts.md "Model").

The module follows LSD's slot-attention encoder (config ``configs/coco/slot_attn/config.json``),
which the supplement says GLASS is "akin to":

1. a Cartesian positional embedding (a 1×1 conv, i.e. a Linear, of the grid [x, y, 1−x, 1−y] at the
   token centres) is added to the features;
2. LayerNorm → MLP (hidden = input size) → LayerNorm on the inputs;
3. slots start from one shared Gaussian with learned mean and log-sigma (xavier-uniform init);
4. each of ``num_iterations`` rounds: LayerNorm the slots, dot-product attention with the keys
   scaled by slot_size^-0.5, softmax over the SLOTS (slots compete for tokens; with several heads,
   jointly over heads × slots), + ε, renormalise over the inputs (weighted mean of the values),
   GRUCell update (its hidden state the slots before the LayerNorm), residual MLP with LayerNorm;
5. output LayerNorm + Linear slot_size → output_dim (1024 = SD 2.1's cross-attention width).

The masks used for guidance and evaluation are the last iteration's softmax-over-slots attention
before ε and renormalisation (docs/paper-facts.md "Model").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils.torch_utils import randn_tensor
from torch import nn


@dataclass
class SlotAttentionOutput:
    slots: torch.Tensor         # (B, K, slot_size), after the last iteration
    conditioning: torch.Tensor  # (B, K, output_dim): the slots projected for the diffusion decoder
    attention: torch.Tensor     # (B, K, N): last iteration's softmax over slots (sums to 1 over K)


class SlotAttention(ModelMixin, ConfigMixin):
    """Defaults are the paper's (supplement Sec. 2): 7 slots, 5 iterations, slot size 768, MLP
    hidden 768, 1 head, ε = 1e-6, output 1024. ``grid_size`` is the (rows, columns) of the
    input tokens (32×32 for DINOv2/14 at 448 px)."""

    @register_to_config
    def __init__(
        self,
        input_dim: int,
        grid_size: Sequence[int],
        num_slots: int = 7,
        num_iterations: int = 5,
        slot_size: int = 768,
        mlp_hidden_size: int = 768,
        num_heads: int = 1,
        epsilon: float = 1e-6,
        output_dim: int = 1024,
    ) -> None:
        super().__init__()
        if len(grid_size) != 2:
            raise ValueError(f"grid_size must be (rows, columns), got {grid_size!r}")
        if slot_size % num_heads:
            raise ValueError(f"slot_size {slot_size} is not divisible by num_heads {num_heads}")
        # Inputs: positional embedding, then LayerNorm → MLP → LayerNorm.
        self.position_embedding = nn.Linear(4, input_dim)
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_mlp = nn.Sequential(
            nn.Linear(input_dim, input_dim), nn.ReLU(), nn.Linear(input_dim, input_dim))
        self.attention_input_norm = nn.LayerNorm(input_dim)
        # Shared Gaussian slot initialisation.
        self.slot_mu = nn.Parameter(torch.empty(1, 1, slot_size))
        self.slot_log_sigma = nn.Parameter(torch.empty(1, 1, slot_size))
        nn.init.xavier_uniform_(self.slot_mu)
        nn.init.xavier_uniform_(self.slot_log_sigma)
        # Attention and slot update.
        self.slot_norm = nn.LayerNorm(slot_size)
        self.project_q = nn.Linear(slot_size, slot_size, bias=False)
        self.project_k = nn.Linear(input_dim, slot_size, bias=False)
        self.project_v = nn.Linear(input_dim, slot_size, bias=False)
        self.gru = nn.GRUCell(slot_size, slot_size)
        self.update_norm = nn.LayerNorm(slot_size)
        self.update_mlp = nn.Sequential(
            nn.Linear(slot_size, mlp_hidden_size), nn.ReLU(), nn.Linear(mlp_hidden_size, slot_size))
        # Output projection to the diffusion decoder's conditioning width.
        self.output_norm = nn.LayerNorm(slot_size)
        self.output_projection = nn.Linear(slot_size, output_dim)

    @property
    def num_tokens(self) -> int:
        rows, columns = self.config.grid_size
        return rows * columns

    def forward(self, features: torch.Tensor,
                generator: torch.Generator | None = None) -> SlotAttentionOutput:
        """``features`` (B, N, input_dim), row-major over ``grid_size``. ``generator`` draws the
        initial slot noise (pass one for reproducible slots)."""
        batch, num_tokens, dim = features.shape
        if num_tokens != self.num_tokens or dim != self.config.input_dim:
            raise ValueError(
                f"slot attention expects features (B, {self.num_tokens}, {self.config.input_dim}) "
                f"for grid {tuple(self.config.grid_size)}, got {tuple(features.shape)}")
        inputs = self.prepare_inputs(features)
        heads, head_dim = self.config.num_heads, self.config.slot_size // self.config.num_heads
        # (B, heads, N, head_dim); keys scaled by slot_size^-0.5 (LSD; docs/paper-facts.md "Model").
        keys = self.project_k(inputs).view(batch, num_tokens, heads, head_dim).transpose(1, 2)
        keys = keys * self.config.slot_size ** -0.5
        values = self.project_v(inputs).view(batch, num_tokens, heads, head_dim).transpose(1, 2)

        slots = self.initial_slots(batch, generator, device=features.device)
        attention = None
        for _ in range(self.config.num_iterations):
            slots, attention = self.iterate(slots, keys, values)
        conditioning = self.output_projection(self.output_norm(slots))
        return SlotAttentionOutput(slots=slots, conditioning=conditioning, attention=attention)

    def prepare_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """Positional embedding, then LayerNorm → MLP → LayerNorm."""
        grid = cartesian_grid(*self.config.grid_size, device=features.device,
                              dtype=self.position_embedding.weight.dtype)
        inputs = features + self.position_embedding(grid)
        return self.attention_input_norm(self.input_mlp(self.input_norm(inputs)))

    def initial_slots(self, batch: int, generator: torch.Generator | None,
                      device: torch.device) -> torch.Tensor:
        """(B, K, slot_size) samples of the shared learned Gaussian."""
        noise = randn_tensor((batch, self.config.num_slots, self.config.slot_size),
                             generator=generator, device=device, dtype=self.slot_mu.dtype)
        return self.slot_mu + self.slot_log_sigma.exp() * noise

    def iterate(self, slots: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One slot-attention round; returns the new slots and this round's attention (B, K, N)
        (softmax over slots, averaged over heads)."""
        batch, num_slots, slot_size = slots.shape
        heads = self.config.num_heads
        queries = self.project_q(self.slot_norm(slots))
        queries = queries.view(batch, num_slots, heads, slot_size // heads).transpose(1, 2)
        logits = queries @ keys.transpose(-1, -2)            # (B, heads, K, N)
        # softmax jointly over heads × slots: heads compete for a token as slots do (LSD, the
        # official GLASS code and ocl; with the paper's one head this is a softmax over slots)
        attention = logits.reshape(batch, heads * num_slots, -1).softmax(dim=1)
        attention = attention.view(batch, heads, num_slots, -1)
        # Weighted mean over the inputs: + ε, renormalise over N (paper Eq. 1).
        weights = attention + self.config.epsilon
        weights = weights / weights.sum(dim=-1, keepdim=True)
        updates = (weights @ values).transpose(1, 2).reshape(batch * num_slots, slot_size)
        slots = self.gru(updates, slots.reshape(batch * num_slots, slot_size))
        slots = slots.view(batch, num_slots, slot_size)
        slots = slots + self.update_mlp(self.update_norm(slots))
        # summed over heads: each token's distribution over slots (the official evaluation takes
        # the mean over heads, which has the same argmax)
        return slots, attention.sum(dim=1)


def cartesian_grid(rows: int, columns: int, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows·columns, 4) features [x, y, 1−x, 1−y] of the token centres in [0, 1], row-major
    (token n is row n // columns, column n % columns), like LSD's Cartesian embedding."""
    y = (torch.arange(rows, device=device, dtype=dtype) + 0.5) / rows
    x = (torch.arange(columns, device=device, dtype=dtype) + 0.5) / columns
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    grid = torch.stack((grid_x, grid_y, 1 - grid_x, 1 - grid_y), dim=-1)
    return grid.reshape(rows * columns, 4)
