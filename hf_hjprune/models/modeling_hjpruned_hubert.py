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
    HJPrunedFeatureProjectionMixin,
    HJPrunedForCTCMixin,
    HJPrunedForSequenceClassificationMixin,
    HJPrunedModelMixin,
)


# Adapted from transformers.models.hubert.modeling_hubert.HubertAttention
class HJPrunedHubertAttention(HJPrunedAttentionMixin, HubertAttention):
    pass


# Adapted from transformers.models.hubert.modeling_hubert.HubertFeatureProjection
class HJPrunedHubertFeatureProjection(HJPrunedFeatureProjectionMixin, HubertFeatureProjection):
    pass


# Adapted from transformers.models.hubert.modeling_hubert.HubertEncoderLayer
class HJPrunedHubertEncoderLayer(HJPrunedEncoderLayerMixin, HubertEncoderLayer):
    attention_class = HJPrunedHubertAttention


# Adapted from transformers.models.hubert.modeling_hubert.HubertEncoderLayerStableLayerNorm
class HJPrunedHubertEncoderLayerStableLayerNorm(HJPrunedEncoderLayerMixin, HubertEncoderLayerStableLayerNorm):
    attention_class = HJPrunedHubertAttention


# Adapted from transformers.models.hubert.modeling_hubert.HubertEncoder
class HJPrunedHubertEncoder(HJPrunedEncoderMixin, HubertEncoder):
    layer_class = HJPrunedHubertEncoderLayer
    pos_conv_class = HubertPositionalConvEmbedding


# Adapted from transformers.models.hubert.modeling_hubert.HubertEncoderStableLayerNorm
class HJPrunedHubertEncoderStableLayerNorm(HJPrunedEncoderMixin, HubertEncoderStableLayerNorm):
    layer_class = HJPrunedHubertEncoderLayerStableLayerNorm
    pos_conv_class = HubertPositionalConvEmbedding


# Adapted from transformers.models.hubert.modeling_hubert.HubertModel
class HJPrunedHubertModel(HJPrunedModelMixin, HubertModel):
    config_class = HJPrunedHubertConfig
    feature_projection_class = HJPrunedHubertFeatureProjection
    encoder_class = HJPrunedHubertEncoder
    stable_layer_norm_encoder_class = HJPrunedHubertEncoderStableLayerNorm


# Adapted from transformers.models.hubert.modeling_hubert.HubertForCTC
class HJPrunedHubertForCTC(HJPrunedForCTCMixin, HubertForCTC):
    config_class = HJPrunedHubertConfig
    pruned_base_model_class = HJPrunedHubertModel


# Adapted from transformers.models.hubert.modeling_hubert.HubertForSequenceClassification
class HJPrunedHubertForSequenceClassification(
    HJPrunedForSequenceClassificationMixin, HubertForSequenceClassification
):
    config_class = HJPrunedHubertConfig
    pruned_base_model_class = HJPrunedHubertModel


__all__ = ["HJPrunedHubertModel", "HJPrunedHubertForCTC", "HJPrunedHubertForSequenceClassification"]
