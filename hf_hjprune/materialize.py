"""Turn a model plus the units to keep into a smaller HJPruned model with sliced weights."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import HJPruneInputError
from .gates import rounded_count
from .structure import (
    GROUPS,
    ROUNDED_GROUPS,
    family_of,
    head_of,
    match_sites,
    rounding_multiples,
    strip_base_prefix,
    to_pruned_config,
    unit_counts,
)

Keep = Mapping[str, Sequence[Sequence[int]]]
Scores = Mapping[str, Sequence[Sequence[float] | torch.Tensor]]

# A tensor under a gate parametrization (weight norm's `original0/1` are part of the model).
_GATED_KEY = re.compile(r"\.parametrizations\.\w+\.original$")


def prune_model(
    model: nn.Module, keep: Keep, round_to: int | Mapping[str, int] = 1, scores: Scores | None = None
) -> nn.Module:
    """Return the HJPruned model that keeps only the given units of `model`.

    Args:
        model: a stock or HJPruned wav2vec2 / HuBERT / WavLM model (base, CTC or sequence
            classification). It is not modified.
        keep: per group, one list of kept unit indices per layer:
            `{"conv": [...per conv layer...], "heads": [...per Transformer layer...],
            "ffn": [...per Transformer layer...]}`. Indices refer to `model`'s current units;
            a missing group keeps all its units. Every conv layer must keep at least one channel;
            a Transformer layer may keep no heads or no FFN units.
        round_to: keep a multiple of this many conv channels and FFN units per layer (fast kernel
            shapes): each layer's count is rounded to the nearest multiple (at least one multiple for
            a conv layer, the whole layer when rounding reaches its size) by dropping its lowest-scored
            kept units or adding the highest-scored removed ones. Heads are not rounded. A mapping
            rounds each group to its own multiple (`{"conv": 64, "ffn": 8}`).
        scores: per group (`"conv"`, `"ffn"`) and layer, one importance score per unit for the
            rounding; by default `weight_scores(model)`.

    The returned model computes what `model` computes with the other units removed, as defined in
    `hf_hjprune.models.modeling_hjpruned_common`: a removed unit's output is zero where it enters the
    next operation, and channel LayerNorms keep normalising over the original width.
    """
    state = model.state_dict()
    if any(_GATED_KEY.search(name) for name in state):
        raise HJPruneInputError(
            "model has HJPruner gates attached: use pruner.export() for the pruned model, "
            "or pruner.detach() first to prune the un-gated weights"
        )
    if any(multiple > 1 for multiple in rounding_multiples(round_to).values()):
        counts = unit_counts(model.config)
        keep = round_keep(_normalise_keep(keep, counts), counts, round_to, scores or weight_scores(model))
    return build_pruned(model, keep, state)


def round_keep(
    keep: Mapping[str, Sequence[Sequence[int]]],
    counts: Mapping[str, Sequence[int]],
    round_to: int | Mapping[str, int],
    scores: Scores,
) -> dict[str, list[list[int]]]:
    """`keep` (one list per layer of every group) with the conv and FFN counts rounded to multiples of
    `round_to` (one multiple, or one per group): kept units rank first, then by decreasing score."""
    multiples = rounding_multiples(round_to)
    result = {group: [list(kept) for kept in layers] for group, layers in keep.items()}
    for group in ROUNDED_GROUPS:
        for i, (kept, size) in enumerate(zip(keep[group], counts[group])):
            target = rounded_count(len(kept), size, multiples[group], minimum=1 if group == "conv" else 0)
            kept_set, layer_scores = set(kept), scores[group][i]
            ranked = sorted(range(size), key=lambda unit: (unit not in kept_set, -float(layer_scores[unit])))
            result[group][i] = sorted(ranked[:target])
    return result


@torch.no_grad()
def weight_scores(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Per group and layer, the L2 norm of the weights that scale each unit's output (the tensors a
    gate scales, `structure.UNIT_SITES` with `gated=True`): a magnitude score for `round_to`."""
    counts = unit_counts(model.config)
    squares = {group: [torch.zeros(n) for n in sizes] for group, sizes in counts.items()}
    for name, tensor in model.state_dict().items():
        relative = strip_base_prefix(name, model)
        if relative is None:
            continue
        for found in match_sites(relative, len(counts["conv"])):
            if not found.site.gated:
                continue
            other_dims = [d for d in range(tensor.dim()) if d != found.site.dim]
            square = tensor.detach().float().pow(2)
            if other_dims:
                square = square.sum(dim=other_dims)
            if found.site.per_head:
                square = square.view(-1, model.config.hidden_size // model.config.num_attention_heads).sum(-1)
            squares[found.site.group][found.layer] += square.cpu()
    return {group: [layer.sqrt() for layer in layers] for group, layers in squares.items()}


def build_pruned(model: nn.Module, keep: Keep, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """`prune_model` with the weights taken from `state_dict` (keys of `model`'s un-gated state dict)."""
    family = family_of(model)
    head = head_of(model)
    counts = unit_counts(model.config)
    keep = _normalise_keep(keep, counts)

    config = to_pruned_config(model.config)
    config.conv_dim = [len(kept) for kept in keep["conv"]]
    config.attention_heads_per_layer = [len(kept) for kept in keep["heads"]]
    config.intermediate_size_per_layer = [len(kept) for kept in keep["ffn"]]
    if family.name == "wavlm":
        config.kept_head_indices = [
            [original[h] for h in kept] for original, kept in zip(config.kept_head_indices, keep["heads"])
        ]
    config.validate()

    head_dim = config.hidden_size // config.num_attention_heads
    state = {}
    for name, tensor in state_dict.items():
        relative = strip_base_prefix(name, model)
        if relative is not None:
            for found in match_sites(relative, len(counts["conv"])):
                index = torch.as_tensor(keep[found.site.group][found.layer], dtype=torch.long)
                if found.site.per_head:
                    index = (index[:, None] * head_dim + torch.arange(head_dim)).flatten()
                tensor = tensor.index_select(found.site.dim, index.to(tensor.device))
        state[name] = tensor

    parameter = next(model.parameters())
    pruned = family.pruned_models[head](config).to(device=parameter.device, dtype=parameter.dtype)
    pruned.load_state_dict(state, strict=True)
    pruned.train(model.training)
    return pruned


def _normalise_keep(keep: Keep, counts: dict[str, list[int]]) -> dict[str, list[list[int]]]:
    unknown = set(keep) - set(GROUPS)
    if unknown:
        raise HJPruneInputError(
            f"unknown unit group(s) {sorted(unknown)} in keep; expected some of {list(GROUPS)}"
        )
    result = {}
    for group in GROUPS:
        sizes = counts[group]
        if group not in keep:
            result[group] = [list(range(n)) for n in sizes]
            continue
        layers = keep[group]
        if len(layers) != len(sizes):
            raise HJPruneInputError(
                f"keep[{group!r}] has {len(layers)} lists, expected one per layer ({len(sizes)})"
            )
        result[group] = []
        for i, (kept, size) in enumerate(zip(layers, sizes)):
            kept = sorted(int(k) for k in kept)
            if len(set(kept)) != len(kept):
                raise HJPruneInputError(f"keep[{group!r}][{i}] has duplicate indices")
            if kept and not (0 <= kept[0] and kept[-1] < size):
                raise HJPruneInputError(f"keep[{group!r}][{i}] has indices outside [0, {size})")
            if group == "conv" and not kept:
                raise HJPruneInputError(
                    f"keep['conv'][{i}] is empty: every conv layer must keep at least one channel"
                )
            result[group].append(kept)
    return result
