"""`HJPruner`: hard concrete gates on a speech model, its Lagrangian budget, and the export.

The gates act in weight space: each gate scales exactly the tensors where a removed unit's value
becomes zero (`structure.UNIT_SITES` with `gated=True`: a conv's output rows and the per-channel norm
affines after it, a head's value rows, an FFN unit's output column; a whole attention / FFN block's
output projection). Scaling weights instead of activations works for every family, also where the
stock code passes weights to `F.multi_head_attention_forward` (WavLM), leaves the stock model's code
untouched, and makes the export exact: the eval-mode scaled weights *are* the folded weights of the
pruned model, whose removed units are then sliced away.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.activations import ACT2FN

from .constraint import LagrangianBudget, ramped_target
from .cost import CostBreakdown, macs_from_units, params_from_units
from .errors import HJPruneInputError, UnreachableTargetError
from .gates import HardConcreteGate
from .materialize import build_pruned
from .structure import (
    BLOCK_SITES,
    GROUPS,
    SAMPLING_RATE,
    UNIT_SITES,
    head_of,
    match_sites,
    original_unit_counts,
    rounding_multiples,
    strip_base_prefix,
    unit_counts,
)


@dataclass(frozen=True)
class Variant:
    """A way to train a run: one of `HJPruner`'s pruning variants, or `"none"` (dense fine-tuning)."""

    id: str
    """What recipes, summaries and `HJPruner(variant=...)` say (`"macs"`)."""
    label: str
    """Its short name in results tables and plots (`"HJ-MAC"`)."""
    tag: str
    """The Hub tag of the models it gives (`"hj-mac"`)."""
    description: str
    """What model cards say it is."""


DENSE = "none"
"""The `Variant.id` of dense fine-tuning (no pruner)."""

VARIANTS: dict[str, Variant] = {
    variant.id: variant
    for variant in (
        Variant(DENSE, "dense", "dense", "no pruning (dense fine-tuning)"),
        Variant(
            "macs", "HJ-MAC", "hj-mac", "HJ-MAC (one joint budget on the MACs of the CNN and the Transformer)"
        ),
        Variant("sep", "HJ-Sep", "hj-sep", "HJ-Sep (separate MACs budgets for the CNN and the Transformer)"),
        Variant("params", "HJ-Param", "hj-param", "HJ-Param (one budget on the parameter count)"),
        Variant(
            "transformer",
            "Transformer-only",
            "transformer-pruning",
            "Transformer-only pruning (heads and FFN units, the earlier-work baseline)",
        ),
    )
}
"""Every variant a run can have, by id: the names recipes, cards and result tables use."""

PRUNING_VARIANTS = tuple(name for name in VARIANTS if name != DENSE)
"""The variants `HJPruner` implements."""

TARGET_REFERENCES = ("start", "original")
"""What a target is relative to: the model the pruner gates, or the unpruned model it was cut from."""


def _in_budget(budget: str, group: str) -> bool:
    """Whether a unit group's cost counts in a budget (HJ-Sep splits the CNN from the Transformer)."""
    return {"cnn_macs": group == "conv", "transformer_macs": group != "conv"}.get(budget, True)


BLOCKS = {"heads": "attention_blocks", "ffn": "ffn_blocks"}

Target = float | Mapping[str, float]


class _Scale(nn.Module):
    """Parametrization: the tensor times the current mask of its gate, broadcast along `dim`; with
    `unit_size > 1` one mask value scales `unit_size` consecutive entries along `dim` (a head).
    Each product made while gradients are recorded is announced to `recomputed` (see `_RecomputedWeights`)."""

    def __init__(
        self, mask_fn, dim: int | None, unit_size: int = 1, recomputed: _RecomputedWeights | None = None
    ):
        super().__init__()
        self.mask_fn = mask_fn
        self.dim = dim
        self.unit_size = unit_size
        self.recomputed = recomputed

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mask = self.mask_fn().to(tensor.dtype)
        product = self.scale(tensor, mask)
        if self.recomputed is not None and torch.is_grad_enabled():
            self.recomputed.record(product, tensor, mask, self)
        return product

    def scale(self, tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.dim is None:
            return tensor * mask
        if (
            self.unit_size > 1
        ):  # (.., units * unit_size, ..) viewed as (.., units, unit_size, ..): no repeated mask
            units = tensor.unflatten(self.dim, (-1, self.unit_size))
            shape = [1] * units.dim()
            shape[self.dim] = -1
            return (units * mask.view(shape)).flatten(self.dim, self.dim + 1)
        shape = [1] * tensor.dim()
        shape[self.dim] = -1
        return tensor * mask.view(shape)


@dataclass(frozen=True, eq=False)
class _Recompute:
    """What autograd keeps instead of a gated weight (or a view of it): the ungated weight and the mask
    (both alive anyway), to multiply again when the backward pass needs the product."""

    original: torch.Tensor
    mask: torch.Tensor
    parametrization: _Scale
    size: torch.Size
    stride: tuple[int, ...]
    storage_offset: int


class _RecomputedWeights:
    """Saved-tensor hooks that keep the gated weights `W · mask` out of the autograd graph.

    A layer that consumes a gated weight (a linear, a conv) saves it for its backward pass, so a gated
    training step would hold a second copy of every gated weight from the forward to the backward pass
    (the speed table's training section measures the peak memory). While the gated model's forward runs,
    `pack` replaces a saved tensor that is a recorded product, or a view of one, by a `_Recompute`, and
    `unpack` multiplies again in the backward pass: one elementwise product per weight. Products are
    recognised by their storage while they are alive (a weak reference); anything else is saved as usual.
    """

    def __init__(self) -> None:
        self._products: dict[int, tuple[weakref.ref, torch.Tensor, torch.Tensor, _Scale]] = {}
        self._contexts: list[torch.autograd.graph.saved_tensors_hooks] = []

    def record(
        self, product: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, parametrization: _Scale
    ) -> None:
        key = product.untyped_storage().data_ptr()
        forget = functools.partial(self._forget, key)
        self._products[key] = (weakref.ref(product, forget), original, mask, parametrization)

    def _forget(self, key: int, reference: weakref.ref) -> None:
        if key in self._products and self._products[key][0] is reference:
            del self._products[key]

    def pack(self, tensor: torch.Tensor) -> torch.Tensor | _Recompute:
        if type(tensor) not in (torch.Tensor, nn.Parameter) or tensor.layout != torch.strided:
            return tensor
        entry = self._products.get(tensor.untyped_storage().data_ptr())
        product = entry[0]() if entry is not None else None
        if product is None or product.dtype != tensor.dtype or product.device != tensor.device:
            return tensor
        _, original, mask, parametrization = entry
        return _Recompute(
            original, mask, parametrization, tensor.size(), tensor.stride(), tensor.storage_offset()
        )

    @staticmethod
    def unpack(saved: torch.Tensor | _Recompute) -> torch.Tensor:
        if not isinstance(saved, _Recompute):
            return saved
        with torch.no_grad():
            product = saved.parametrization.scale(saved.original, saved.mask)
        return product.as_strided(saved.size, saved.stride, saved.storage_offset)

    def enter(self, *_) -> None:
        """Forward pre-hook of the gated model: the hooks are on while it runs with gradients."""
        context = (
            torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
            if torch.is_grad_enabled()
            else None
        )
        if context is not None:
            context.__enter__()
        self._contexts.append(context)

    def exit(self, *_) -> None:
        """Forward hook of the gated model (also called when the forward raises)."""
        context = self._contexts.pop() if self._contexts else None
        if context is not None:
            context.__exit__(None, None, None)
        if not self._contexts:
            self._products.clear()


class HJPruner(nn.Module):
    """Gates a wav2vec2 / HuBERT / WavLM model for HJ-Pruning and exports the pruned model.

    Args:
        model: a stock or HJPruned model (base, CTC or sequence classification). While the pruner
            is attached, `model`'s forward is gated (sampled gates in train mode, the deterministic
            mask in eval mode); `pruner(**batch)` is the same as `model(**batch)`.
        variant: `"macs"` (HJ-MAC: one joint MACs budget), `"sep"` (HJ-Sep: separate CNN and
            Transformer MACs budgets), `"params"` (HJ-Param: a parameter budget) or `"transformer"`
            (heads and FFN units only, on a MACs budget: the Transformer-only baseline).
        target: the relative reduction to reach, in (0, 1): 0.4 means 40% fewer MACs (or
            parameters). For `"sep"`, a float for both parts or `{"cnn": ..., "transformer": ...}`.
        warmup_steps: the target ramps linearly from 0 to `target` over these steps.
        seconds: audio length at which MACs are computed (attention grows with its square).
        units: the unit groups to gate, among `("conv", "heads", "ffn")`; by default all of them
            (only heads and FFN units for `"transformer"`).
        prune_blocks: also gate whole attention and FFN blocks of each layer.
        init_log_alpha: initial gate logit (at 2.0 a unit is non-zero with probability 0.97).
        target_reference: `"start"`: the target is relative to `model`; `"original"`: relative to the
            unpruned model an HJPruned `model` was cut from (its config's `original_*` sizes), so that
            pruning a pruned model further can aim at a total reduction.
        lambda_clip: keep λ1 within ±this (anti-windup: while the gates lag the ramp, an unbounded λ1
            accumulates and then drives the reduction past the target).
        round_to: the deterministic mask (eval mode, `export()`) keeps a multiple of this many conv
            channels and FFN units per layer (the expected count rounded to the nearest multiple, the
            units with the largest gate logits; heads are whole heads anyway), so that the pruned GEMMs
            and convs get fast kernel shapes; a mapping rounds each group to its own multiple
            (`{"conv": 64, "ffn": 8}`). A layer keeps all its units when rounding reaches its size.
    """

    def __init__(
        self,
        model: nn.Module,
        variant: str = "macs",
        target: Target = 0.4,
        warmup_steps: int = 0,
        seconds: float = 1.0,
        units: tuple[str, ...] | None = None,
        prune_blocks: bool = False,
        init_log_alpha: float = 2.0,
        sampling_rate: int = SAMPLING_RATE,
        target_reference: str = "start",
        lambda_clip: float | None = None,
        round_to: int | Mapping[str, int] = 1,
    ):
        super().__init__()
        self.head = head_of(model)  # raises for an unsupported family or model class
        units = self._check_arguments(model, variant, units, target_reference)
        self.model = model
        self.variant = variant
        self.round_to = round_to
        self.units = units
        self.warmup_steps = int(warmup_steps)
        self.num_samples = int(round(seconds * sampling_rate))
        self.targets = self._parse_target(variant, target)
        self.counts = unit_counts(model.config)
        self.gates = self._build_gates(init_log_alpha, prune_blocks)
        self.budget = LagrangianBudget(list(self.targets))
        self.target_reference = target_reference
        self.lambda_clip = lambda_clip
        self._check_targets()

        self._masks: dict[str, list[torch.Tensor]] | None = None
        self._sites: list[tuple[nn.Module, str]] = []
        self._recomputed = _RecomputedWeights()
        self._attach()

    # ----------------------------------------------------------------------------------------
    # set-up

    @staticmethod
    def _check_arguments(
        model: nn.Module,
        variant: str,
        units: tuple[str, ...] | None,
        target_reference: str,
    ) -> tuple[str, ...]:
        """Raise for arguments the pruner cannot work with; return the unit groups to gate."""
        if variant not in PRUNING_VARIANTS:
            raise HJPruneInputError(
                f"unknown variant {variant!r}; expected one of {', '.join(PRUNING_VARIANTS)}"
            )
        if units is None:
            units = ("heads", "ffn") if variant == "transformer" else GROUPS
        unknown = [unit for unit in units if unit not in GROUPS]
        if unknown:
            raise HJPruneInputError(f"unknown unit(s) {unknown}; expected some of {list(GROUPS)}")
        if variant == "transformer" and "conv" in units:
            raise HJPruneInputError(
                "the 'transformer' variant prunes heads and FFN units only; drop 'conv' from units"
            )
        config = model.config
        if "conv" in units:
            activation = ACT2FN[config.feat_extract_activation]
            if float(activation(torch.zeros(1))) != 0.0:
                raise HJPruneInputError(
                    f"feat_extract_activation={config.feat_extract_activation!r} is not zero at zero: "
                    "conv channel gates sit before it and need act(0) = 0"
                )
        if target_reference not in TARGET_REFERENCES:
            raise HJPruneInputError(
                f"target_reference must be 'start' or 'original', got {target_reference!r}"
            )
        return tuple(units)

    def _build_gates(self, init_log_alpha: float, prune_blocks: bool) -> nn.ModuleDict:
        """One gate per gated unit group (conv keeps a channel per layer), and per block group if asked."""
        gates = {}
        for group in self.units:
            gates[group] = HardConcreteGate(
                self.counts[group], init_log_alpha=init_log_alpha, min_kept=1 if group == "conv" else 0
            )
            if prune_blocks and group in BLOCKS:
                gates[BLOCKS[group]] = HardConcreteGate(
                    [1] * self.model.config.num_hidden_layers, init_log_alpha=init_log_alpha
                )
        return nn.ModuleDict(gates)

    def _check_targets(self) -> None:
        """Measure the reference costs and where the ramp starts; raise for a target already reached
        by the start model or beyond what removing every prunable unit gives."""
        config = self.model.config
        reference = self.counts if self.target_reference == "start" else original_unit_counts(config)
        with torch.no_grad():
            self._dense = self._costs(reference)
            floor = self._costs(self._min_units())
            already = {
                name: 1.0 - float(self._costs(self.counts)[name] / self._dense[name]) for name in self.targets
            }
        with torch.no_grad():  # the gates' initial expected reduction (a few % at init_log_alpha=2)
            initial = {name: float(value) for name, value in self.expected_reduction().items()}
        # The target ramps from where the gates start, so that λ1 does not first push against pruning.
        self._start_reduction = {name: max(already[name], initial[name]) for name in self.targets}
        for name, target_value in self.targets.items():
            if target_value <= already[name]:
                raise HJPruneInputError(
                    f"target {target_value:.3f} for the {name} budget is already reached: the start model is "
                    f"{already[name]:.3f} below the original; aim higher to prune further"
                )
            reachable = 1.0 - float(floor[name] / self._dense[name])
            if target_value >= reachable:
                raise UnreachableTargetError(
                    f"target {target_value:.3f} for the {name} budget is not reachable: with every prunable "
                    f"unit of {list(self.units)} removed (one channel left per conv layer) the reduction is "
                    f"only {reachable:.3f}; lower the target or prune more unit groups"
                )

    @staticmethod
    def _parse_target(variant: str, target: Target) -> dict[str, float]:
        if variant == "sep":
            parts = dict(target) if isinstance(target, Mapping) else {"cnn": target, "transformer": target}
            if set(parts) != {"cnn", "transformer"}:
                raise HJPruneInputError(
                    f"the 'sep' target needs 'cnn' and 'transformer' entries, got {sorted(parts)}"
                )
            targets = {"cnn_macs": parts["cnn"], "transformer_macs": parts["transformer"]}
        elif isinstance(target, Mapping):
            raise HJPruneInputError(f"variant {variant!r} takes one float target, got {dict(target)}")
        else:
            targets = {"params" if variant == "params" else "macs": target}
        for name, value in targets.items():
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise HJPruneInputError(
                    f"target for {name} must be a relative reduction in (0, 1), got {value!r}"
                )
        return {name: float(value) for name, value in targets.items()}

    def _min_units(self) -> dict[str, list[float]]:
        return {
            group: [(1 if group == "conv" else 0) if group in self.units else n for n in sizes]
            for group, sizes in self.counts.items()
        }

    def _attach(self) -> None:
        """Register the gate parametrizations and the per-forward mask refresh."""
        num_conv = len(self.counts["conv"])
        head_dim = self.model.config.hidden_size // self.model.config.num_attention_heads
        modules = dict(self.model.named_modules())
        for name, _ in list(self.model.named_parameters()):
            relative = strip_base_prefix(name, self.model)
            if relative is None:
                continue
            module_name, _, tensor_name = name.rpartition(".")
            for found in match_sites(relative, num_conv, UNIT_SITES + BLOCK_SITES):
                if found.site.gated and found.site.group in self.gates:
                    unit_size = head_dim if found.site.per_head else 1
                    mask_fn = functools.partial(self._layer_mask, found.site.group, found.layer)
                    scale = _Scale(mask_fn, found.site.dim, unit_size, self._recomputed)
                    self._register(modules[module_name], tensor_name, scale)
        self._hooks = [
            self.model.register_forward_pre_hook(self._refresh_masks),
            self.model.register_forward_pre_hook(self._recomputed.enter),
            self.model.register_forward_hook(self._recomputed.exit, always_call=True),
        ]

    def _register(self, module: nn.Module, tensor_name: str, scale: _Scale) -> None:
        parametrize.register_parametrization(module, tensor_name, scale)
        if (module, tensor_name) not in self._sites:
            self._sites.append((module, tensor_name))

    def _refresh_masks(self, *_) -> None:
        self._masks = None

    def _layer_mask(self, group: str, layer: int) -> torch.Tensor:
        if self._masks is None:  # sampled once per forward pass, shared by all the tensors of a unit
            self._masks = self.masks()
        return self._masks[group][layer]

    # ----------------------------------------------------------------------------------------
    # public API

    def forward(self, *args, **kwargs):
        """The gated model's forward."""
        return self.model(*args, **kwargs)

    def gate_parameters(self) -> list[nn.Parameter]:
        """All gate logits (`log_alpha`), for their own optimizer group."""
        return [gate.log_alpha for gate in self.gates.values()]

    def lagrangian_parameters(self) -> list[nn.Parameter]:
        """The Lagrange multipliers (trained by ascent through a gradient reversal)."""
        return [self.budget.lambdas]

    def model_parameters(self) -> Iterator[nn.Parameter]:
        """The model's own weights."""
        return self.model.parameters()

    def masks(self) -> dict[str, list[torch.Tensor]]:
        """Fresh masks per gate group and layer: sampled if the model is training, else deterministic
        (conv channels and FFN units rounded to `round_to`)."""
        sample = self.model.training  # the model's mode, which the gates (the pruner's modules) may not share
        return {name: gate.layer_masks(sample, self._round_to(name)) for name, gate in self.gates.items()}

    def expected_units(self) -> dict[str, torch.Tensor | list[int]]:
        """Expected kept units per group, one per layer (a block gate scales its layer's units): a
        tensor for a gated group, the unit counts for the others."""
        units: dict[str, torch.Tensor | list[int]] = {}
        for group, sizes in self.counts.items():
            if group not in self.gates:
                units[group] = list(sizes)
                continue
            expected = self.gates[group].expected_counts()
            if BLOCKS.get(group) in self.gates:
                expected = expected * self.gates[BLOCKS[group]].probability_nonzero()
            units[group] = expected
        return units

    def _costs(self, units) -> dict[str, torch.Tensor | float]:
        config = self.model.config
        if self.variant == "params":
            return {"params": params_from_units(config, units, self.head).total}
        macs = macs_from_units(config, units, self.num_samples, self.head)
        if self.variant == "sep":
            return {"cnn_macs": macs.cnn, "transformer_macs": macs.transformer}
        return {"macs": macs.total}

    def expected_cost(self) -> dict[str, CostBreakdown]:
        """Expected MACs (on `seconds` of audio) and parameters under the current gate probabilities."""
        units = self.expected_units()
        config = self.model.config
        return {
            "macs": macs_from_units(config, units, self.num_samples, self.head),
            "params": params_from_units(config, units, self.head),
        }

    def expected_reduction(self) -> dict[str, torch.Tensor]:
        """`ŝ` per budget: the expected relative reduction of its cost."""
        costs = self._costs(self.expected_units())
        return {name: 1.0 - costs[name] / self._dense[name] for name in self.targets}

    def target_at(self, step: int) -> dict[str, float]:
        """`t` per budget at a training step (ramped over the warm-up)."""
        return {
            name: ramped_target(value, step, self.warmup_steps, self._start_reduction[name])
            for name, value in self.targets.items()
        }

    def penalty(self, step: int) -> torch.Tensor:
        """The Lagrangian term `Σ λ1 (ŝ - t) + λ2 (ŝ - t)^2` to add to the task loss."""
        if self.lambda_clip is not None:  # anti-windup: λ1 cannot accumulate while the gates lag
            with torch.no_grad():
                self.budget.lambdas[:, 0].clamp_(-self.lambda_clip, self.lambda_clip)
        reductions = self.expected_reduction()
        targets = self.target_at(step)
        device = self.budget.lambdas.device
        return self.budget(
            torch.stack([reductions[name].to(device) for name in self.budget.names]),
            torch.tensor([targets[name] for name in self.budget.names], device=device),
        )

    def stats(self, step: int) -> dict[str, float]:
        """Numbers worth logging: expected reduction, target and λ per budget, expected kept units."""
        with torch.no_grad():
            reductions = self.expected_reduction()
            targets = self.target_at(step)
            stats = {}
            for i, name in enumerate(self.budget.names):
                stats[f"{name}/expected_reduction"] = float(reductions[name])
                stats[f"{name}/target"] = targets[name]
                stats[f"{name}/lambda1"] = float(self.budget.lambdas[i, 0])
                stats[f"{name}/lambda2"] = float(self.budget.lambdas[i, 1])
            for group, units in self.expected_units().items():
                stats[f"expected_units/{group}"] = float(sum(units))
        return stats

    @torch.no_grad()
    def keep_indices(self) -> dict[str, list[list[int]]]:
        """The units the deterministic mask keeps, per group and layer."""
        masks = {name: gate.layer_masks(False, self._round_to(name)) for name, gate in self.gates.items()}
        keep = {}
        for group, sizes in self.counts.items():
            if group not in masks:
                keep[group] = [list(range(n)) for n in sizes]
                continue
            layers = masks[group]
            if BLOCKS.get(group) in masks:
                layers = [mask * block for mask, block in zip(layers, masks[BLOCKS[group]])]
            keep[group] = [mask.nonzero().flatten().tolist() for mask in layers]
        return keep

    def _reduction_of(self, keep: Mapping[str, list[list[int]]]) -> dict[str, float]:
        costs = self._costs({group: [len(layer) for layer in layers] for group, layers in keep.items()})
        return {name: 1.0 - float(costs[name] / self._dense[name]) for name in self.targets}

    @torch.no_grad()
    def match_target(self, tolerance: float = 0.01) -> dict[str, int]:
        """Make the eval mask meet every budget's final target within `tolerance`.

        A short run can end with its expected reduction off target (gates lag the ramp, or λ
        overshoots). Units are then taken away, lowest gate logit first, or removed units are given
        back, highest logit first, as long as their eval mask value is nonzero (a unit at 0 would cost
        MACs and change nothing), until each budget is met. This sets the gates' per-layer kept counts,
        so the gated eval model and `export()` agree exactly. Returns the units removed and added.
        """
        changed = {"removed": 0, "added": 0}
        for budget, target in self.targets.items():
            groups = [group for group in self.units if _in_budget(budget, group)]
            for group in groups:
                self.gates[group].kept_counts = self.gates[group].eval_counts(self._round_to(group))
            for direction, step in (("removed", -1), ("added", 1)):
                while True:
                    reduction = self._reduction_of(self.keep_indices())[budget]
                    if (reduction >= target - tolerance) if step < 0 else (reduction <= target + tolerance):
                        break
                    move = self._choose_move(
                        self._boundary_moves(groups, direction), step, budget, target, tolerance
                    )
                    if move is None:
                        break
                    self.gates[move[0]].kept_counts[move[1]] += step * self._round_to(move[0])
                    changed[direction] += self._round_to(move[0])
        self._masks = None
        return changed

    def _choose_move(
        self, moves: list[tuple[str, int]], step: int, budget: str, target: float, tolerance: float
    ) -> tuple[str, int] | None:
        """The best-ranked move that does not cross the far side of the tolerance band; else the best
        one if it brings the reduction closer to the target; else None."""
        current = self._reduction_of(self.keep_indices())[budget]
        for move in moves:
            after = self._reduction_after(move, step, budget)
            if (after <= target + tolerance) if step < 0 else (after >= target - tolerance):
                return move
        if moves and abs(self._reduction_after(moves[0], step, budget) - target) < abs(current - target):
            return moves[0]
        return None

    @property
    def round_to(self) -> int | Mapping[str, int]:
        """The rounding of the deterministic mask (see the class docstring); settable."""
        return self._round_to_value

    @round_to.setter
    def round_to(self, value: int | Mapping[str, int]) -> None:
        self._multiples = rounding_multiples(value)  # raises for a bad value, before any gate is built
        self._round_to_value = value

    def _round_to(self, group: str) -> int:
        return self._multiples.get(group, 1)  # heads and whole blocks are not rounded

    def _reduction_after(self, move: tuple[str, int], step: int, budget: str) -> float:
        counts, step = self.gates[move[0]].kept_counts, step * self._round_to(move[0])
        counts[move[1]] += step
        reduction = self._reduction_of(self.keep_indices())[budget]
        counts[move[1]] -= step
        return reduction

    def _boundary_moves(self, groups: list[str], direction: str) -> list[tuple[str, int]]:
        """Layers that can lose their last kept unit, lowest logit first (`removed`), or regain their
        first removed unit, highest logit first, if its eval value is nonzero (`added`)."""
        moves = []
        for group in groups:
            gate = self.gates[group]
            for layer, (logits, kept) in enumerate(zip(gate.log_alpha.split(gate.sizes), gate.kept_counts)):
                ranked, step = logits.sort(descending=True).values, self._round_to(group)
                if direction == "removed" and kept - step >= max(gate.min_kept, 0) and kept >= step:
                    moves.append((float(ranked[kept - step : kept].mean()), group, layer))
                elif direction == "added" and kept + step <= len(ranked):
                    if float(gate.median_of(ranked[kept + step - 1])) > 0:  # every unit given back counts
                        moves.append((-float(ranked[kept : kept + step].mean()), group, layer))
        return [(group, layer) for _, group, layer in sorted(moves)]

    @torch.no_grad()
    def export(self, round_to: int | Mapping[str, int] | None = None) -> nn.Module:
        """The HJPruned model that reproduces the gated model in eval mode.

        The deterministic mask values are folded into the weights they scale and the removed units
        are sliced away. The attached model is left as it is (still gated). `round_to` overrides the
        pruner's own for this export: the result then reproduces the gated model evaluated with it.
        """
        if round_to is not None and rounding_multiples(round_to) != self._multiples:
            previous, self.round_to = self.round_to, round_to
            try:
                return self.export()
            finally:
                self.round_to = previous
        was_training = self.model.training
        self.model.eval()
        self._masks = None
        state = self.model.state_dict()
        modules = {module: name for name, module in self.model.named_modules()}
        for module, tensor_name in self._sites:
            prefix = modules[module]
            del state[f"{prefix}.parametrizations.{tensor_name}.original"]
            state[f"{prefix}.{tensor_name}"] = getattr(module, tensor_name).detach().clone()
        keep = self.keep_indices()
        self._masks = None
        self.model.train(was_training)
        pruned = build_pruned(self.model, keep, state)
        return pruned.eval()

    def detach(self) -> nn.Module:
        """Remove the gates from the model (restoring its ungated weights) and return it."""
        for module, tensor_name in self._sites:
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
        self._sites = []
        for hook in self._hooks:
            hook.remove()
        return self.model
