"""Which model families are supported, and which tensors each prunable unit owns.

The prunable units of every family are the output channels of each conv layer (`"conv"`), the
attention heads of each Transformer layer (`"heads"`) and the FFN units of each Transformer layer
(`"ffn"`). `UNIT_SITES` lists, for each group, the tensors indexed by a unit of that group and along
which dimension. `prune_model` slices all of them; the gates scale the ones marked `gated`, which is
exactly where a removed unit's value becomes zero (see `models/modeling_hjpruned_common.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import (
    HubertConfig,
    HubertForCTC,
    HubertForSequenceClassification,
    HubertModel,
    PretrainedConfig,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMForCTC,
    WavLMForSequenceClassification,
    WavLMModel,
)

from .errors import HJPruneInputError, unknown_keys_message
from .models import (
    HJPrunedHubertConfig,
    HJPrunedHubertForCTC,
    HJPrunedHubertForSequenceClassification,
    HJPrunedHubertModel,
    HJPrunedWav2Vec2Config,
    HJPrunedWav2Vec2ForCTC,
    HJPrunedWav2Vec2ForSequenceClassification,
    HJPrunedWav2Vec2Model,
    HJPrunedWavLMConfig,
    HJPrunedWavLMForCTC,
    HJPrunedWavLMForSequenceClassification,
    HJPrunedWavLMModel,
)

GROUPS = ("conv", "heads", "ffn")
ROUNDED_GROUPS = ("conv", "ffn")
"""The groups whose kept counts `round_to` rounds to a multiple (heads are `head_dim` wide already)."""


def rounding_multiples(round_to: int | Mapping[str, int]) -> dict[str, int]:
    """The multiple each unit group's kept count is rounded to: `round_to` for every group of
    `ROUNDED_GROUPS` when it is an int, else per group (`{"conv": 64, "ffn": 8}`; missing groups: 1).
    Other groups (heads, whole blocks) are not rounded."""

    def checked(multiple: Any, name: str) -> int:
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise HJPruneInputError(f"{name} must be a positive integer, got {multiple!r}")
        return multiple

    if not isinstance(round_to, Mapping):
        return dict.fromkeys(ROUNDED_GROUPS, checked(round_to, "round_to"))
    unknown = set(round_to) - set(ROUNDED_GROUPS)
    if unknown:
        raise HJPruneInputError(unknown_keys_message(unknown, ROUNDED_GROUPS, "round_to"))
    return {group: checked(round_to.get(group, 1), f"round_to.{group}") for group in ROUNDED_GROUPS}


HEADS = ("base", "ctc", "classification")
SAMPLING_RATE = 16_000
"""Sample rate (Hz) of the audio every supported family takes: what the data is decoded to, what MACs are
counted on, what the feature extractors declare."""


@dataclass(frozen=True)
class Family:
    """A supported model family: its display name, and its stock and pruned classes per head."""

    name: str
    display_name: str
    """How cards and tables name it (`"wav2vec 2.0"`)."""
    base_model_prefix: str
    stock_config: type[PretrainedConfig]
    pruned_config: type[PretrainedConfig]
    stock_models: dict[str, type[nn.Module]]
    pruned_models: dict[str, type[nn.Module]]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "wav2vec2",
            "wav2vec 2.0",
            "wav2vec2",
            Wav2Vec2Config,
            HJPrunedWav2Vec2Config,
            {
                "base": Wav2Vec2Model,
                "ctc": Wav2Vec2ForCTC,
                "classification": Wav2Vec2ForSequenceClassification,
            },
            {
                "base": HJPrunedWav2Vec2Model,
                "ctc": HJPrunedWav2Vec2ForCTC,
                "classification": HJPrunedWav2Vec2ForSequenceClassification,
            },
        ),
        Family(
            "hubert",
            "HuBERT",
            "hubert",
            HubertConfig,
            HJPrunedHubertConfig,
            {"base": HubertModel, "ctc": HubertForCTC, "classification": HubertForSequenceClassification},
            {
                "base": HJPrunedHubertModel,
                "ctc": HJPrunedHubertForCTC,
                "classification": HJPrunedHubertForSequenceClassification,
            },
        ),
        Family(
            "wavlm",
            "WavLM",
            "wavlm",
            WavLMConfig,
            HJPrunedWavLMConfig,
            {"base": WavLMModel, "ctc": WavLMForCTC, "classification": WavLMForSequenceClassification},
            {
                "base": HJPrunedWavLMModel,
                "ctc": HJPrunedWavLMForCTC,
                "classification": HJPrunedWavLMForSequenceClassification,
            },
        ),
    )
}


def family_of(model_or_config: nn.Module | PretrainedConfig) -> Family:
    """The family of a stock or pruned model or config; raises for anything else."""
    config = getattr(model_or_config, "config", model_or_config)
    # Exact types first: a Wav2Vec2Config subclass from another family must not pass as wav2vec2.
    for family in FAMILIES.values():
        if type(config) in (family.stock_config, family.pruned_config):
            return family
    for family in FAMILIES.values():
        if isinstance(config, family.stock_config):
            return family
    raise HJPruneInputError(
        f"unsupported model family {type(config).__name__} (model_type={getattr(config, 'model_type', None)!r}); "
        f"supported: {', '.join(FAMILIES)}"
    )


def head_of(model: nn.Module) -> str:
    """`"base"`, `"ctc"` or `"classification"` for a stock or pruned model of a supported family."""
    family = family_of(model)
    for head in ("ctc", "classification", "base"):
        if isinstance(model, family.stock_models[head]):
            return head
    raise HJPruneInputError(
        f"unsupported model class {type(model).__name__}: expected a base model, a CTC model or a "
        f"sequence classification model of the {family.name} family"
    )


def to_pruned_config(config: PretrainedConfig) -> PretrainedConfig:
    """The pruned config of the same architecture (a copy: the input is not modified)."""
    family = family_of(config)
    values = config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    pruned = family.pruned_config(**values)
    pruned._attn_implementation = config._attn_implementation  # the user's choice carries over
    return pruned


@dataclass(frozen=True)
class UnitSite:
    """A tensor indexed by the units of one group.

    `pattern` matches the parameter name relative to the base model; its first group is the layer
    index, or the site belongs to the last conv layer when it has none. `from_previous_layer`: the
    tensor is indexed by the units of the layer before (a conv's input channels). `per_head`: one
    unit spans `head_dim` consecutive rows. `gated`: a gate scales this tensor.
    """

    group: str
    pattern: re.Pattern
    dim: int | None  # None: the whole tensor (a block gate)
    gated: bool = False
    from_previous_layer: bool = False
    per_head: bool = False


def _site(group: str, pattern: str, dim: int | None, **flags) -> UnitSite:
    return UnitSite(group, re.compile(pattern), dim, **flags)


UNIT_SITES: tuple[UnitSite, ...] = (
    _site("conv", r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", 0, gated=True),
    _site("conv", r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", 0, gated=True),
    _site("conv", r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", 1, from_previous_layer=True),
    _site("conv", r"feature_projection\.layer_norm\.(?:weight|bias)", 0, gated=True),
    _site("conv", r"feature_projection\.projection\.weight", 1),
    _site("heads", r"encoder\.layers\.(\d+)\.attention\.v_proj\.(weight|bias)", 0, gated=True, per_head=True),
    _site("heads", r"encoder\.layers\.(\d+)\.attention\.[qk]_proj\.(weight|bias)", 0, per_head=True),
    _site("heads", r"encoder\.layers\.(\d+)\.attention\.out_proj\.weight", 1, per_head=True),
    _site("heads", r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", 1),
    _site("ffn", r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", 0),
    _site("ffn", r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.weight", 1, gated=True),
)


# Optional gates over whole blocks: they scale the block's output projection, bias included, so a
# removed block adds nothing (the pruned layer then has no heads / FFN units and a zero bias).
BLOCK_SITES: tuple[UnitSite, ...] = (
    _site(
        "attention_blocks", r"encoder\.layers\.(\d+)\.attention\.out_proj\.(weight|bias)", None, gated=True
    ),
    _site(
        "ffn_blocks", r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", None, gated=True
    ),
)


@dataclass(frozen=True)
class SiteMatch:
    site: UnitSite
    layer: int


def match_sites(name: str, num_conv_layers: int, sites: tuple[UnitSite, ...] = UNIT_SITES) -> list[SiteMatch]:
    """The sites of a parameter (name relative to the base model), with their layer index."""
    matches = []
    for site in sites:
        found = site.pattern.fullmatch(name)
        if found is None:
            continue
        layer = int(found.group(1)) if found.re.groups and found.group(1).isdigit() else num_conv_layers - 1
        if site.from_previous_layer:
            if layer == 0:
                continue
            layer -= 1
        matches.append(SiteMatch(site, layer))
    return matches


def strip_base_prefix(name: str, model: nn.Module) -> str | None:
    """A parameter name relative to the base model, or None for the task head's parameters."""
    prefix = family_of(model).base_model_prefix + "."
    if head_of(model) == "base":
        return name
    return name[len(prefix) :] if name.startswith(prefix) else None


def _config_value(config: PretrainedConfig | Mapping[str, Any], key: str) -> Any:
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def original_unit_counts(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, list[int]]:
    """Units per layer of each group in the unpruned model a config (or its `config.json` dict) was cut
    from (itself if stock)."""
    layers = _config_value(config, "num_hidden_layers")
    return {
        "conv": list(_config_value(config, "original_conv_dim") or _config_value(config, "conv_dim")),
        "heads": [_config_value(config, "num_attention_heads")] * layers,
        "ffn": [_config_value(config, "intermediate_size")] * layers,
    }


def unit_counts(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, list[int]]:
    """Units per layer of each group, for a stock or pruned config (or its `config.json` dict)."""
    layers = _config_value(config, "num_hidden_layers")
    return {
        "conv": list(_config_value(config, "conv_dim")),
        "heads": list(
            _config_value(config, "attention_heads_per_layer")
            or [_config_value(config, "num_attention_heads")] * layers
        ),
        "ffn": list(
            _config_value(config, "intermediate_size_per_layer")
            or [_config_value(config, "intermediate_size")] * layers
        ),
    }
