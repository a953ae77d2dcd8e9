"""The Lagrangian budget of HJ-Pruning: `λ1 (ŝ - t) + λ2 (ŝ - t)^2`, one (λ1, λ2) pair per budget.

`ŝ` is the expected relative reduction of a cost (from gate probabilities) and `t` its target,
ramped linearly from 0 over a warm-up. The term is minimised over the model and the gates and
maximised over λ: the λs pass through a gradient reversal, so one ordinary optimizer (positive
learning rate) does descent on everything else and ascent on λ.
"""

from __future__ import annotations

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def ramped_target(target: float, step: int, warmup_steps: int, start: float = 0.0) -> float:
    """The target at `step`: linear from `start` (the reduction already reached) to `target` over
    `warmup_steps`, then constant."""
    if warmup_steps <= 0:
        return target
    return start + (target - start) * min(1.0, max(step, 0) / warmup_steps)


class LagrangianBudget(nn.Module):
    """Lagrange multipliers for the named budgets, all starting at 0."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.lambdas = nn.Parameter(torch.zeros(len(self.names), 2))

    def forward(self, reductions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The penalty for expected reductions `ŝ` and targets `t` (both ordered like `names`)."""
        lambdas = _ReverseGradient.apply(self.lambdas)
        gap = reductions - targets.to(reductions)
        return (lambdas[:, 0] * gap + lambdas[:, 1] * gap.pow(2)).sum()
