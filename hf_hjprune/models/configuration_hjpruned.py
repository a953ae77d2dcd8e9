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

Left at `None`, the per-layer fields describe the dense model. This file is shipped as remote code
next to pruned checkpoints: it may import only torch, transformers and huggingface_hub.
"""

from huggingface_hub.dataclasses import strict
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
                f"{self.num_attention_heads} (the original head count, which fixes head_dim)"
            )
        if getattr(self, "add_adapter", False) or getattr(self, "adapter_attn_dim", None) is not None:
            raise ValueError("add_adapter / adapter_attn_dim: adapters are not supported by pruned models")
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


@strict
class HJPrunedHubertConfig(HJPrunedConfigMixin, HubertConfig):
    model_type = "hjpruned_hubert"

    original_conv_dim: list[int] | None = None
    attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None


@strict
class HJPrunedWavLMConfig(HJPrunedConfigMixin, WavLMConfig):
    model_type = "hjpruned_wavlm"

    original_conv_dim: list[int] | None = None
    attention_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
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
