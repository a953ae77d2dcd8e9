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
from collections.abc import Iterator, Mapping

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
    UNIT_SITES,
    family_of,
    head_of,
    match_sites,
    strip_base_prefix,
    unit_counts,
)

VARIANTS = ("macs", "sep", "params", "transformer")
BLOCKS = {"heads": "attention_blocks", "ffn": "ffn_blocks"}

Target = float | Mapping[str, float]


class _Scale(nn.Module):
    """Parametrization: the tensor times the current mask of its gate, broadcast along `dim`."""

    def __init__(self, mask_fn, dim: int | None):
        super().__init__()
        self.mask_fn = mask_fn
        self.dim = dim

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mask = self.mask_fn().to(tensor.dtype)
        if self.dim is None:
            return tensor * mask
        shape = [1] * tensor.dim()
        shape[self.dim] = -1
        return tensor * mask.view(shape)


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
        init_log_alpha: initial gate logit (2.0 keeps ~98% of units in expectation).
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
        sampling_rate: int = 16000,
    ):
        super().__init__()
        family_of(model)  # raises for an unsupported family
        self.head = head_of(model)
        if variant not in VARIANTS:
            raise HJPruneInputError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
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

        self.model = model
        self.variant = variant
        self.units = tuple(units)
        self.warmup_steps = int(warmup_steps)
        self.num_samples = int(round(seconds * sampling_rate))
        self.targets = self._parse_target(variant, target)
        self.counts = unit_counts(config)

        gates = {}
        for group in self.units:
            gates[group] = HardConcreteGate(
                self.counts[group], init_log_alpha=init_log_alpha, min_kept=1 if group == "conv" else 0
            )
            if prune_blocks and group in BLOCKS:
                gates[BLOCKS[group]] = HardConcreteGate(
                    [1] * config.num_hidden_layers, init_log_alpha=init_log_alpha
                )
        self.gates = nn.ModuleDict(gates)
        self.budget = LagrangianBudget(list(self.targets))

        with torch.no_grad():
            self._dense = self._costs(self.counts)
            floor = self._costs(self._min_units())
        for name, target_value in self.targets.items():
            reachable = 1.0 - float(floor[name] / self._dense[name])
            if target_value >= reachable:
                raise UnreachableTargetError(
                    f"target {target_value:.3f} for the {name} budget is not reachable: with every prunable "
                    f"unit of {list(self.units)} removed (one channel left per conv layer) the reduction is "
                    f"only {reachable:.3f}; lower the target or prune more unit groups"
                )

        self._masks: dict[str, list[torch.Tensor]] | None = None
        self._sites: list[tuple[nn.Module, str]] = []
        self._attach()

    # ----------------------------------------------------------------------------------------
    # set-up

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
                    repeat = head_dim if found.site.per_head else 1
                    mask_fn = functools.partial(self._layer_mask, found.site.group, found.layer, repeat)
                    self._register(modules[module_name], tensor_name, _Scale(mask_fn, found.site.dim))
        self._hook = self.model.register_forward_pre_hook(self._refresh_masks)

    def _register(self, module: nn.Module, tensor_name: str, scale: _Scale) -> None:
        parametrize.register_parametrization(module, tensor_name, scale)
        if (module, tensor_name) not in self._sites:
            self._sites.append((module, tensor_name))

    def _refresh_masks(self, *_) -> None:
        self._masks = None

    def _layer_mask(self, group: str, layer: int, repeat: int) -> torch.Tensor:
        if self._masks is None:
            self._masks = self.masks()
        mask = self._masks[group][layer]
        return mask.repeat_interleave(repeat) if repeat > 1 else mask

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
        """Fresh masks per gate group and layer: sampled if the model is training, else deterministic."""
        sample = self.model.training
        return {
            name: list((gate.sample() if sample else gate.deterministic()).split(gate.sizes))
            for name, gate in self.gates.items()
        }

    def expected_units(self) -> dict[str, list[torch.Tensor | int]]:
        """Expected kept units per group and layer (a block gate scales its layer's units)."""
        units: dict[str, list] = {}
        for group, sizes in self.counts.items():
            if group not in self.gates:
                units[group] = list(sizes)
                continue
            expected = self.gates[group].expected_counts()
            if BLOCKS.get(group) in self.gates:
                expected = expected * self.gates[BLOCKS[group]].probability_nonzero()
            units[group] = list(expected.unbind())
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
        return {name: ramped_target(value, step, self.warmup_steps) for name, value in self.targets.items()}

    def penalty(self, step: int) -> torch.Tensor:
        """The Lagrangian term `Σ λ1 (ŝ - t) + λ2 (ŝ - t)^2` to add to the task loss."""
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
        masks = {name: list(gate.deterministic().split(gate.sizes)) for name, gate in self.gates.items()}
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

    @torch.no_grad()
    def export(self) -> nn.Module:
        """The HJPruned model that reproduces the gated model in eval mode.

        The deterministic mask values are folded into the weights they scale and the removed units
        are sliced away. The attached model is left as it is (still gated).
        """
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
        self._hook.remove()
        return self.model
