"""Pruned HuBERT: per-layer conv channels, attention heads and FFN units.

Shipped as remote code next to pruned checkpoints: imports only torch, transformers and siblings.
"""

from transformers.models.hubert.modeling_hubert import (
    HubertAttention,
    HubertEncoder,
    HubertEncoderLayer,
    HubertEncoderLayerStableLayerNorm,
    HubertEncoderStableLayerNorm,
    HubertFeatureProjection,
    HubertForCTC,
    HubertForSequenceClassification,
    HubertModel,
    HubertPositionalConvEmbedding,
)

from .configuration_hjpruned import HJPrunedHubertConfig
from .modeling_hjpruned_common import (
    HJPrunedAttentionMixin,
    HJPrunedEncoderLayerMixin,
    HJPrunedEncoderMixin,
    HJPrunedForCTCMixin,
    HJPrunedForSequenceClassificationMixin,
    HJPrunedModelMixin,
    original_width_layer_norm,
)


class HJPrunedHubertAttention(HJPrunedAttentionMixin, HubertAttention):
    pass


class HJPrunedHubertFeatureProjection(HubertFeatureProjection):
    def __init__(self, config):
        super().__init__(config)
        if self.feat_proj_layer_norm:
            self.layer_norm = original_width_layer_norm(config)


class HJPrunedHubertEncoderLayer(HJPrunedEncoderLayerMixin, HubertEncoderLayer):
    attention_class = HJPrunedHubertAttention


class HJPrunedHubertEncoderLayerStableLayerNorm(HJPrunedEncoderLayerMixin, HubertEncoderLayerStableLayerNorm):
    attention_class = HJPrunedHubertAttention


class HJPrunedHubertEncoder(HJPrunedEncoderMixin, HubertEncoder):
    layer_class = HJPrunedHubertEncoderLayer
    pos_conv_class = HubertPositionalConvEmbedding


class HJPrunedHubertEncoderStableLayerNorm(HJPrunedEncoderMixin, HubertEncoderStableLayerNorm):
    layer_class = HJPrunedHubertEncoderLayerStableLayerNorm
    pos_conv_class = HubertPositionalConvEmbedding


class HJPrunedHubertModel(HJPrunedModelMixin, HubertModel):
    config_class = HJPrunedHubertConfig
    feature_projection_class = HJPrunedHubertFeatureProjection
    encoder_class = HJPrunedHubertEncoder
    stable_layer_norm_encoder_class = HJPrunedHubertEncoderStableLayerNorm


class HJPrunedHubertForCTC(HJPrunedForCTCMixin, HubertForCTC):
    config_class = HJPrunedHubertConfig
    pruned_base_model_class = HJPrunedHubertModel


class HJPrunedHubertForSequenceClassification(
    HJPrunedForSequenceClassificationMixin, HubertForSequenceClassification
):
    config_class = HJPrunedHubertConfig
    pruned_base_model_class = HJPrunedHubertModel


__all__ = ["HJPrunedHubertModel", "HJPrunedHubertForCTC", "HJPrunedHubertForSequenceClassification"]
