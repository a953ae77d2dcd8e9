"""MACs and parameter counts of wav2vec2-style models, from per-layer unit counts.

One set of formulas serves two purposes: with the integer unit counts of a config they give the
exact cost of a stock or pruned model (`count_macs`, `count_params`); with the expected unit counts
of hard concrete gates (tensors) they give the differentiable expected cost the budget constrains.

MACs count the multiply-accumulates of convolutions and matrix products (what
`torch.utils.flop_counter.FlopCounterMode` counts, divided by two); norms, activations and
softmax are left out, as is customary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn
from transformers import PretrainedConfig

from .errors import HJPruneInputError
from .structure import SAMPLING_RATE, family_of, head_of, unit_counts

Number = float | torch.Tensor
Units = Mapping[str, Sequence[Number]]

CNN_PARTS = ("cnn",)
TRANSFORMER_PARTS = ("feature_projection", "positional_conv", "attention", "ffn")


@dataclass
class CostBreakdown:
    """A cost split over the parts of the model; `total` includes the task head."""

    cnn: Number = 0.0
    feature_projection: Number = 0.0
    positional_conv: Number = 0.0
    attention: Number = 0.0
    ffn: Number = 0.0
    head: Number = 0.0

    @property
    def transformer(self) -> Number:
        return sum(getattr(self, part) for part in TRANSFORMER_PARTS)

    @property
    def total(self) -> Number:
        return self.cnn + self.transformer + self.head

    def as_dict(self) -> dict[str, float]:
        values = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        values.update(transformer=float(self.transformer), total=float(self.total))
        return values


def _total(values: Sequence[Number] | torch.Tensor) -> Number:
    """The sum of per-layer values: one op for a tensor, exact integers for ints."""
    return values.sum() if isinstance(values, torch.Tensor) else sum(values)


def _sequence_lengths(config: PretrainedConfig, num_samples: int) -> list[int]:
    """Output length of every conv layer for an input of `num_samples` samples."""
    lengths, length = [], num_samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        if length < 1:
            raise HJPruneInputError(
                f"{num_samples} samples are shorter than the receptive field of the conv layers"
            )
        lengths.append(length)
    return lengths


def _head_kind(model_or_config) -> str:
    if isinstance(model_or_config, nn.Module):
        return head_of(model_or_config)
    return "base"


def macs_from_units(
    config: PretrainedConfig,
    units: Units,
    num_samples: int,
    head: str = "base",
    num_labels: int | None = None,
) -> CostBreakdown:
    """MACs of one forward pass over `num_samples` audio samples (batch 1) given units per layer."""
    lengths = _sequence_lengths(config, num_samples)
    frames = lengths[-1]
    d = config.hidden_size
    head_dim = d // config.num_attention_heads
    conv, heads, ffn = units["conv"], units["heads"], units["ffn"]

    cost = CostBreakdown()
    in_channels: Number = 1
    for kernel, out_channels, length in zip(config.conv_kernel, conv, lengths):
        cost.cnn = cost.cnn + kernel * in_channels * out_channels * length
        in_channels = out_channels
    cost.feature_projection = frames * conv[-1] * d

    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    pos_frames = frames + 2 * (kernel // 2) - kernel + 1  # "same" padding, trimmed afterwards
    cost.positional_conv = pos_frames * d * (d // groups) * kernel

    # Attention and FFN costs are linear in each layer's units with the same factor for every layer,
    # so only the totals matter (one op on expected counts, instead of a graph per layer).
    per_head = 4 * frames * d * head_dim + 2 * frames * frames * head_dim
    if family_of(config).name == "wavlm":  # gate of the relative position bias: head_dim -> 8 per kept head
        per_head += frames * head_dim * 8
    cost.attention = per_head * _total(heads)
    cost.ffn = 2 * frames * d * _total(ffn)

    if head == "ctc":
        cost.head = frames * d * config.vocab_size
    elif head == "classification":
        labels = num_labels if num_labels is not None else config.num_labels
        cost.head = frames * d * config.classifier_proj_size + config.classifier_proj_size * labels
    return cost


def params_from_units(config: PretrainedConfig, units: Units, head: str = "base") -> CostBreakdown:
    """Parameter count given units per layer (the same structure as `macs_from_units`)."""
    d = config.hidden_size
    head_dim = d // config.num_attention_heads
    conv, heads, ffn = units["conv"], units["heads"], units["ffn"]
    family = family_of(config).name
    cost = CostBreakdown()

    in_channels: Number = 1
    for i, (kernel, out_channels) in enumerate(zip(config.conv_kernel, conv)):
        cost.cnn = cost.cnn + kernel * in_channels * out_channels
        if config.conv_bias:
            cost.cnn = cost.cnn + out_channels
        if config.feat_extract_norm == "layer" or i == 0:  # LayerNorm per layer, or GroupNorm on conv 0
            cost.cnn = cost.cnn + 2 * out_channels
        in_channels = out_channels
    has_projection_norm = getattr(config, "feat_proj_layer_norm", True)
    cost.feature_projection = conv[-1] * d + d + (2 * conv[-1] if has_projection_norm else 0)

    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    cost.positional_conv = d * (d // groups) * kernel + d
    if getattr(config, "conv_pos_batch_norm", False):
        cost.positional_conv += 2 * d
    else:
        cost.positional_conv += kernel  # weight norm's magnitude, one per kernel position (dim=2)
    # Counted with the feature projection: the encoder's LayerNorm and SpecAugment's mask embedding.
    cost.feature_projection += 2 * d
    if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
        cost.feature_projection += d

    layers = len(heads)
    # per kept head: q, k, v rows and biases, out_proj columns; per layer: out_proj bias, layer norm
    cost.attention = (4 * d * head_dim + 3 * head_dim) * _total(heads) + 3 * d * layers
    if family == "wavlm":  # per head: gru_rel_pos_const; per layer: gru_rel_pos_linear; layer 0: embedding
        cost.attention = cost.attention + _total(heads) + (head_dim * 8 + 8) * layers
        if layers:
            cost.attention = cost.attention + config.num_buckets * config.num_attention_heads
    cost.ffn = (2 * d + 1) * _total(ffn) + 3 * d * layers  # two linears with biases, final layer norm

    if head == "ctc":
        cost.head = d * config.vocab_size + config.vocab_size
    elif head == "classification":
        p = config.classifier_proj_size
        cost.head = d * p + p + p * config.num_labels + config.num_labels
        if config.use_weighted_layer_sum:
            cost.head += config.num_hidden_layers + 1
    return cost


def count_macs(
    model_or_config: nn.Module | PretrainedConfig, seconds: float = 1.0, sampling_rate: int = SAMPLING_RATE
) -> CostBreakdown:
    """Exact MACs of a stock or pruned model (or config: no task head) on `seconds` of audio, batch 1."""
    config = getattr(model_or_config, "config", model_or_config)
    num_samples = int(round(seconds * sampling_rate))
    return macs_from_units(config, unit_counts(config), num_samples, head=_head_kind(model_or_config))


def count_params(model_or_config: nn.Module | PretrainedConfig) -> CostBreakdown:
    """Exact parameter count of a stock or pruned model (or config: no task head)."""
    config = getattr(model_or_config, "config", model_or_config)
    return params_from_units(config, unit_counts(config), head=_head_kind(model_or_config))
