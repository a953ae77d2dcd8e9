"""Pruned WavLM: per-layer conv channels, attention heads and FFN units.

WavLM's relative position bias is an embedding over the *original* heads, built once in layer 0 and
shared by all layers, and its gate reads the layer input split into original-head chunks. A pruned
layer therefore keeps the indices of its heads (`config.kept_head_indices`), computes the bias and
the gate input at the original head count and selects its heads. Everything else is shared with the
other families.

Shipped as remote code next to pruned checkpoints: imports only torch, transformers and siblings.
"""

import torch
from torch import nn
from transformers.models.wavlm.modeling_wavlm import (
    WavLMAttention,
    WavLMEncoder,
    WavLMEncoderLayer,
    WavLMEncoderLayerStableLayerNorm,
    WavLMEncoderStableLayerNorm,
    WavLMFeatureProjection,
    WavLMForCTC,
    WavLMForSequenceClassification,
    WavLMModel,
    WavLMPositionalConvEmbedding,
)

from .configuration_hjpruned import HJPrunedWavLMConfig
from .modeling_hjpruned_common import (
    HJPrunedEncoderLayerMixin,
    HJPrunedEncoderMixin,
    HJPrunedFeatureProjectionMixin,
    HJPrunedForCTCMixin,
    HJPrunedForSequenceClassificationMixin,
    HJPrunedModelMixin,
    pruned_linear,
)


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMAttention
class HJPrunedWavLMAttention(WavLMAttention):
    """WavLM attention over the kept heads `config.kept_head_indices[layer_idx]`."""

    def __init__(self, config, layer_idx: int):
        nn.Module.__init__(self)
        self.embed_dim = config.hidden_size
        self.original_num_heads = config.num_attention_heads
        self.num_heads = config.attention_heads_per_layer[layer_idx]
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.scaling = self.head_dim**-0.5
        inner_dim = self.num_heads * self.head_dim
        self.k_proj = pruned_linear(self.embed_dim, inner_dim)
        self.v_proj = pruned_linear(self.embed_dim, inner_dim)
        self.q_proj = pruned_linear(self.embed_dim, inner_dim)
        self.out_proj = pruned_linear(inner_dim, self.embed_dim)
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_bucket_distance
        # A plain list, not a buffer: non-persistent buffers are not restored by `from_pretrained`.
        self.kept_head_indices = list(config.kept_head_indices[layer_idx])
        self.keeps_all_heads = self.kept_head_indices == list(range(self.original_num_heads))
        self._kept_heads_tensor: torch.Tensor | None = None
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        if layer_idx == 0:
            self.rel_attn_embed = nn.Embedding(self.num_buckets, self.original_num_heads)

    def kept_heads(self, device: torch.device) -> torch.Tensor:
        """The kept head indices as a tensor on `device`, built once (not at every forward)."""
        cached = self._kept_heads_tensor
        if cached is None or cached.device != device:
            cached = torch.tensor(self.kept_head_indices, dtype=torch.long, device=device)
            self._kept_heads_tensor = cached
        return cached

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        index: int = 0,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bsz, tgt_len, _ = hidden_states.size()
        if position_bias is None:
            # (original heads, T, T), passed on to the next layers. Unlike the stock model it is not
            # repeated over the batch: each layer selects its heads first, then gates them per item.
            position_bias = self.compute_bias(tgt_len, tgt_len)
        if self.num_heads == 0:
            # No head left: the layer adds out_proj's bias only (a zero-size attention does not export).
            # (a copy: under no_grad a view of the bias would be a leaf-like tensor without grad_fn)
            output = self.out_proj.bias.expand(bsz, tgt_len, self.embed_dim).clone()
            return output, hidden_states.new_zeros(bsz, 0, tgt_len, tgt_len), position_bias
        kept_heads = None if self.keeps_all_heads else self.kept_heads(hidden_states.device)
        kept_bias = position_bias if kept_heads is None else position_bias.index_select(0, kept_heads)

        # Gate of the relative position bias, from the layer input split into original-head chunks.
        chunks = hidden_states.view(bsz, tgt_len, self.original_num_heads, self.head_dim)
        if kept_heads is not None:
            chunks = chunks.index_select(2, kept_heads)
        relative_position_proj = (
            self.gru_rel_pos_linear(chunks).view(bsz, tgt_len, self.num_heads, 2, 4).sum(-1)
        )
        gate_a, gate_b = torch.sigmoid(relative_position_proj.transpose(1, 2).contiguous()).chunk(2, dim=-1)
        gate_output = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (bsz, heads, T, 1)
        scores_bias = (gate_output * kept_bias).view(bsz * self.num_heads, tgt_len, tgt_len)

        head_shape = (bsz, tgt_len, self.num_heads, self.head_dim)
        flat_shape = (bsz * self.num_heads, tgt_len, self.head_dim)
        query = (
            (self.q_proj(hidden_states) * self.scaling).view(head_shape).transpose(1, 2).reshape(flat_shape)
        )
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2).reshape(flat_shape)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        # scores = bias + q k^T in one GEMM (not in place: FlopCounterMode counts `baddbmm`, not `baddbmm_`)
        scores = torch.baddbmm(scores_bias, query, key.transpose(1, 2)).view(
            bsz, self.num_heads, tgt_len, tgt_len
        )
        if attention_mask is not None:
            padding = attention_mask.ne(1)[:, None, None, :]
            scores = scores.masked_fill(padding, float("-inf"))
        attn_weights = nn.functional.softmax(scores, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=self.dropout, training=self.training)
        attn_output = torch.matmul(attn_probs, value).transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.num_heads * self.head_dim)
        return self.out_proj(attn_output), attn_weights, position_bias


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMFeatureProjection
class HJPrunedWavLMFeatureProjection(HJPrunedFeatureProjectionMixin, WavLMFeatureProjection):
    pass


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMEncoderLayer
class HJPrunedWavLMEncoderLayer(HJPrunedEncoderLayerMixin, WavLMEncoderLayer):
    attention_class = HJPrunedWavLMAttention


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMEncoderLayerStableLayerNorm
class HJPrunedWavLMEncoderLayerStableLayerNorm(HJPrunedEncoderLayerMixin, WavLMEncoderLayerStableLayerNorm):
    attention_class = HJPrunedWavLMAttention


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMEncoder
class HJPrunedWavLMEncoder(HJPrunedEncoderMixin, WavLMEncoder):
    layer_class = HJPrunedWavLMEncoderLayer
    pos_conv_class = WavLMPositionalConvEmbedding


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMEncoderStableLayerNorm
class HJPrunedWavLMEncoderStableLayerNorm(HJPrunedEncoderMixin, WavLMEncoderStableLayerNorm):
    layer_class = HJPrunedWavLMEncoderLayerStableLayerNorm
    pos_conv_class = WavLMPositionalConvEmbedding


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMModel
class HJPrunedWavLMModel(HJPrunedModelMixin, WavLMModel):
    config_class = HJPrunedWavLMConfig
    feature_projection_class = HJPrunedWavLMFeatureProjection
    encoder_class = HJPrunedWavLMEncoder
    stable_layer_norm_encoder_class = HJPrunedWavLMEncoderStableLayerNorm


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMForCTC
class HJPrunedWavLMForCTC(HJPrunedForCTCMixin, WavLMForCTC):
    config_class = HJPrunedWavLMConfig
    pruned_base_model_class = HJPrunedWavLMModel


# Adapted from transformers.models.wavlm.modeling_wavlm.WavLMForSequenceClassification
class HJPrunedWavLMForSequenceClassification(
    HJPrunedForSequenceClassificationMixin, WavLMForSequenceClassification
):
    config_class = HJPrunedWavLMConfig
    pruned_base_model_class = HJPrunedWavLMModel


__all__ = ["HJPrunedWavLMModel", "HJPrunedWavLMForCTC", "HJPrunedWavLMForSequenceClassification"]
