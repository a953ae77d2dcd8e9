"""Hard concrete (L0) gates, Louizos et al. 2018, as used by HJ-Pruning.

A `HardConcreteGate` holds one `log_alpha` per unit for every layer of a group (conv channels of
each conv layer, heads of each Transformer layer, ...). In training it draws a sample
`z = clamp(sigmoid((log u - log(1-u) + log_alpha) / beta) * (r - l) + l, 0, 1)`; in eval it gives
the deterministic mask: per layer the `round(sum P(z != 0))` units with the largest `log_alpha` keep
their median value `clamp(sigmoid(log_alpha / beta) * (r - l) + l, 0, 1)`, the others are 0. With
`round_to=8` that count is rounded to a multiple of 8 instead (fast GEMM and conv shapes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import HJPruneInputError


def rounded_count(expected: float, size: int, round_to: int = 1, minimum: int = 0) -> int:
    """Units a layer keeps: `expected` rounded to the nearest multiple of `round_to`, at least
    `minimum` (itself rounded up to a multiple), at most `size` (the whole layer, a multiple or not)."""
    if round_to < 1:
        raise HJPruneInputError(f"round_to must be at least 1, got {round_to}")
    count = round_to * int(round(expected / round_to))
    count = max(count, round_to * math.ceil(minimum / round_to))
    return min(size, count)


class HardConcreteGate(nn.Module):
    """Hard concrete gates over a group of layers with `sizes[i]` units in layer `i`."""

    def __init__(
        self,
        sizes: list[int],
        init_log_alpha: float = 2.0,
        init_std: float = 0.01,
        beta: float = 2.0 / 3.0,
        stretch: tuple[float, float] = (-0.1, 1.1),
        min_kept: int = 0,
    ):
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.beta = beta
        self.low, self.high = stretch
        self.min_kept = min_kept
        self.log_alpha = nn.Parameter(torch.empty(sum(self.sizes)).normal_(init_log_alpha, init_std))
        # The layer of each unit, for per-layer sums in one op.
        layer_index = torch.repeat_interleave(
            torch.arange(len(self.sizes)), torch.tensor(self.sizes, dtype=torch.long)
        )
        self.register_buffer("layer_index", layer_index, persistent=False)
        self.kept_counts: list[int] | None = None
        """Units the eval mask keeps per layer, when set (by `HJPruner.match_target`); else the rounded
        expected counts."""

    def probability_nonzero(self) -> torch.Tensor:
        """P(z != 0) per unit (flat over layers); differentiable in `log_alpha`."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.low / self.high))

    def expected_counts(self) -> torch.Tensor:
        """Expected number of kept units per layer (the expected L0 norm of each layer)."""
        probs = self.probability_nonzero()
        return probs.new_zeros(len(self.sizes)).index_add(0, self.layer_index, probs)

    def eval_counts(self, round_to: int = 1) -> list[int]:
        """Units the eval mask keeps per layer: `kept_counts`, or the expected counts rounded (to a
        multiple of `round_to`)."""
        if self.kept_counts is not None:
            return list(self.kept_counts)
        counts = self.expected_counts().detach().tolist()
        return [
            rounded_count(count, size, round_to, self.min_kept) for size, count in zip(self.sizes, counts)
        ]

    def median(self) -> torch.Tensor:
        """The median of each unit's stretched distribution: its eval mask value when kept."""
        return self.median_of(self.log_alpha)

    def median_of(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return self._stretch(torch.sigmoid(log_alpha / self.beta))

    def _stretch(self, s: torch.Tensor) -> torch.Tensor:
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def sample(self) -> torch.Tensor:
        """A training sample of the mask (flat over layers), reparameterised for gradients."""
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1.0 - 1e-6)
        return self._stretch(torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta))

    def deterministic(self, round_to: int = 1) -> torch.Tensor:
        """The eval mask (flat over layers): the expected number of units (rounded to a multiple of
        `round_to`) or `kept_counts`, those with the largest `log_alpha`, at their median value."""
        median = self.median()
        keep = torch.zeros_like(median, dtype=torch.bool)
        offset = 0
        for size, num_kept in zip(self.sizes, self.eval_counts(round_to)):
            if num_kept:
                top = self.log_alpha[offset : offset + size].detach().topk(num_kept).indices
                keep[offset + top] = True
            offset += size
        # A kept unit whose median is 0 would be removed after all: keep it at a tiny value instead.
        return torch.where(keep, median.clamp_min(1e-6), torch.zeros_like(median))

    def layer_masks(self, sample: bool, round_to: int = 1) -> list[torch.Tensor]:
        """The mask split per layer: a training sample (`sample`), else the eval mask (`deterministic`)."""
        mask = self.sample() if sample else self.deterministic(round_to)
        return list(mask.split(self.sizes))

    def forward(self) -> list[torch.Tensor]:
        """The current mask split per layer: sampled in training, deterministic in eval."""
        return self.layer_masks(self.training)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, beta={self.beta:.3f}, stretch=({self.low}, {self.high})"
