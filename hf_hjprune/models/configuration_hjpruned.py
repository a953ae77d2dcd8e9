"""Configurations of structurally pruned wav2vec2, HuBERT and WavLM models.

A pruned config is the stock config of its family plus the per-layer sizes that pruning changed:

- `conv_dim`: the kept output channels of each conv layer (stock field, already per layer);
- `original_conv_dim`: the conv widths before pruning; channel LayerNorms normalise over them
  (removed channels count as zeros, see `HJPrunedLayerNorm`);
- `attention_heads_per_layer`: kept attention heads per Transformer layer. `num_attention_heads`
  stays the original head count so that `head_dim = hidden_size // num_attention_heads` is unchanged;
- `intermediate_size_per_layer`: kept FFN units per Transformer layer (`intermediate_size` stays
  the original size);
- WavLM only, `kept_head_indices`: which original heads each layer kept, because the relative
  position bias is computed for the original heads and shared by all layers.

Left at `None`, the per-layer fields describe the dense model.

What differs from the stock configs and models by design:

- `hidden_size` must be divisible by `num_attention_heads`, the ORIGINAL head count, when the
  config is built (stock configs accept any value and fail only when the attention is built);
- attention outputs (`output_attentions=True`) have `attention_heads_per_layer[i]` heads in layer
  `i`, not `num_attention_heads` in every layer;
- adapters are not supported: the ones the stock family builds, `add_adapter=True` (wav2vec2,
  WavLM) and `adapter_attn_dim` (wav2vec2, HuBERT), are rejected when the config is built and
  whenever they are set later, so the output lengths (`_get_feat_extract_output_lengths`) always
  describe the forward.

This file is shipped as remote code next to pruned checkpoints: it may import only torch,
transformers and huggingface_hub.
"""

from huggingface_hub.dataclasses import strict, validated_field
from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig


class HJPrunedConfigMixin:
    """Defaults and validation of the per-layer fields, shared by the three families."""

    def __post_init__(self, **kwargs):
        self._fill_pruned_defaults()
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        super().validate_architecture()
        self._validate_pruned()

    def _fill_pruned_defaults(self) -> None:
        layers = self.num_hidden_layers
        if self.original_conv_dim is None:
            self.original_conv_dim = list(self.conv_dim)
        if self.attention_heads_per_layer is None:
            self.attention_heads_per_layer = [self.num_attention_heads] * layers
        if self.intermediate_size_per_layer is None:
            self.intermediate_size_per_layer = [self.intermediate_size] * layers
        self.conv_dim = list(self.conv_dim)
        self.original_conv_dim = list(self.original_conv_dim)
        self.attention_heads_per_layer = list(self.attention_heads_per_layer)
        self.intermediate_size_per_layer = list(self.intermediate_size_per_layer)

    def _validate_pruned(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size = {self.hidden_size} is not divisible by num_attention_heads = "
                f"{self.num_attention_heads}: pruned configs need the original head count to divide "
                "hidden_size because it fixes head_dim = hidden_size // num_attention_heads in every "
                "layer (stricter than the stock config, which fails only when the attention is built)"
            )
        layers = self.num_hidden_layers
        _check_sizes("original_conv_dim", self.original_conv_dim, len(self.conv_dim), lowest=1)
        _check_sizes("conv_dim", self.conv_dim, len(self.conv_dim), lowest=1, highest=self.original_conv_dim)
        _check_sizes(
            "attention_heads_per_layer",
            self.attention_heads_per_layer,
            layers,
            highest=[self.num_attention_heads] * layers,
            highest_name="num_attention_heads",
        )
        _check_sizes(
            "intermediate_size_per_layer",
            self.intermediate_size_per_layer,
            layers,
            highest=[self.intermediate_size] * layers,
            highest_name="intermediate_size",
        )


def _reject_adapters(value) -> None:
    """Validator of `add_adapter` / `adapter_attn_dim`, run at construction and on every assignment."""
    if value:
        raise ValueError(
            f"{value!r}: adapters are not supported by pruned models (none would be built, while the "
            "output lengths and the CTC head would expect one); leave this field at its default"
        )


def _check_sizes(
    name: str,
    sizes: list[int],
    length: int,
    lowest: int = 0,
    highest: list[int] | None = None,
    highest_name: str | None = None,
) -> None:
    if len(sizes) != length:
        raise ValueError(f"{name} has {len(sizes)} entries, expected {length} (one per layer)")
    for i, size in enumerate(sizes):
        if size < lowest:
            raise ValueError(f"{name}[{i}] = {size} is below the minimum of {lowest}")
        if highest is not None and size > highest[i]:
            bound = highest_name or f"original_{name}[{i}]"
            raise ValueError(f"{name}[{i}] = {size} is above the original size ({bound} = {highest[i]})")


@strict
class HJPrunedWav2Vec2Config(HJPrunedConfigMixin, Wav2Vec2Config):
    model_type = "hjpruned_wav2vec2"

    original_conv_dim: list[int] | None = None
    attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    # Redeclared with a validator: strict dataclasses validate on every assignment too, so the adapters
    # the stock family would build are rejected whenever they are set, not only at construction.
    add_adapter: bool = validated_field(_reject_adapters, default=False)
    adapter_attn_dim: int | None = validated_field(_reject_adapters, default=None)


@strict
class HJPrunedHubertConfig(HJPrunedConfigMixin, HubertConfig):
    model_type = "hjpruned_hubert"

    original_conv_dim: list[int] | None = None
    attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    # Rejected at construction and on assignment, as for wav2vec2 (HuBERT has only attention adapters,
    # which its stock encoder builds when the config has this attribute).
    adapter_attn_dim: int | None = validated_field(_reject_adapters, default=None)


@strict
class HJPrunedWavLMConfig(HJPrunedConfigMixin, WavLMConfig):
    model_type = "hjpruned_wavlm"

    original_conv_dim: list[int] | None = None
    attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    # Rejected at construction and on assignment, as for wav2vec2 (WavLM has no attention adapters).
    add_adapter: bool = validated_field(_reject_adapters, default=False)
    kept_head_indices: list[list[int]] | None = None

    def _fill_pruned_defaults(self) -> None:
        if self.kept_head_indices is not None and self.attention_heads_per_layer is None:
            self.attention_heads_per_layer = [len(kept) for kept in self.kept_head_indices]
        super()._fill_pruned_defaults()
        if self.kept_head_indices is None:
            self.kept_head_indices = [list(range(n)) for n in self.attention_heads_per_layer]
        self.kept_head_indices = [list(kept) for kept in self.kept_head_indices]

    def _validate_pruned(self) -> None:
        super()._validate_pruned()
        if len(self.kept_head_indices) != self.num_hidden_layers:
            raise ValueError(
                f"kept_head_indices has {len(self.kept_head_indices)} entries, "
                f"expected {self.num_hidden_layers} (one per layer)"
            )
        for i, kept in enumerate(self.kept_head_indices):
            if len(kept) != self.attention_heads_per_layer[i]:
                raise ValueError(
                    f"kept_head_indices[{i}] lists {len(kept)} heads but "
                    f"attention_heads_per_layer[{i}] = {self.attention_heads_per_layer[i]}"
                )
            if len(set(kept)) != len(kept):
                raise ValueError(f"kept_head_indices[{i}] = {kept} has duplicate heads")
            bad = [h for h in kept if not 0 <= h < self.num_attention_heads]
            if bad:
                raise ValueError(
                    f"kept_head_indices[{i}] has heads {bad} outside [0, {self.num_attention_heads})"
                )


__all__ = ["HJPrunedWav2Vec2Config", "HJPrunedHubertConfig", "HJPrunedWavLMConfig"]
