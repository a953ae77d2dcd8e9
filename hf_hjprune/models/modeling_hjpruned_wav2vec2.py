"""Pruned wav2vec2: per-layer conv channels, attention heads and FFN units.

Shipped as remote code next to pruned checkpoints: imports only torch, transformers and siblings.
"""

from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2Attention,
    Wav2Vec2Encoder,
    Wav2Vec2EncoderLayer,
    Wav2Vec2EncoderLayerStableLayerNorm,
    Wav2Vec2EncoderStableLayerNorm,
    Wav2Vec2FeatureProjection,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
    Wav2Vec2PositionalConvEmbedding,
)

from .configuration_hjpruned import HJPrunedWav2Vec2Config
from .modeling_hjpruned_common import (
    HJPrunedAttentionMixin,
    HJPrunedEncoderLayerMixin,
    HJPrunedEncoderMixin,
    HJPrunedFeatureProjectionMixin,
    HJPrunedForCTCMixin,
    HJPrunedForSequenceClassificationMixin,
    HJPrunedModelMixin,
)


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Attention
class HJPrunedWav2Vec2Attention(HJPrunedAttentionMixin, Wav2Vec2Attention):
    pass


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureProjection
class HJPrunedWav2Vec2FeatureProjection(HJPrunedFeatureProjectionMixin, Wav2Vec2FeatureProjection):
    pass


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2EncoderLayer
class HJPrunedWav2Vec2EncoderLayer(HJPrunedEncoderLayerMixin, Wav2Vec2EncoderLayer):
    attention_class = HJPrunedWav2Vec2Attention


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2EncoderLayerStableLayerNorm
class HJPrunedWav2Vec2EncoderLayerStableLayerNorm(
    HJPrunedEncoderLayerMixin, Wav2Vec2EncoderLayerStableLayerNorm
):
    attention_class = HJPrunedWav2Vec2Attention


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Encoder
class HJPrunedWav2Vec2Encoder(HJPrunedEncoderMixin, Wav2Vec2Encoder):
    layer_class = HJPrunedWav2Vec2EncoderLayer
    pos_conv_class = Wav2Vec2PositionalConvEmbedding


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2EncoderStableLayerNorm
class HJPrunedWav2Vec2EncoderStableLayerNorm(HJPrunedEncoderMixin, Wav2Vec2EncoderStableLayerNorm):
    layer_class = HJPrunedWav2Vec2EncoderLayerStableLayerNorm
    pos_conv_class = Wav2Vec2PositionalConvEmbedding


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Model
class HJPrunedWav2Vec2Model(HJPrunedModelMixin, Wav2Vec2Model):
    config_class = HJPrunedWav2Vec2Config
    feature_projection_class = HJPrunedWav2Vec2FeatureProjection
    encoder_class = HJPrunedWav2Vec2Encoder
    stable_layer_norm_encoder_class = HJPrunedWav2Vec2EncoderStableLayerNorm


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForCTC
class HJPrunedWav2Vec2ForCTC(HJPrunedForCTCMixin, Wav2Vec2ForCTC):
    config_class = HJPrunedWav2Vec2Config
    pruned_base_model_class = HJPrunedWav2Vec2Model


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForSequenceClassification
class HJPrunedWav2Vec2ForSequenceClassification(
    HJPrunedForSequenceClassificationMixin, Wav2Vec2ForSequenceClassification
):
    config_class = HJPrunedWav2Vec2Config
    pruned_base_model_class = HJPrunedWav2Vec2Model


__all__ = ["HJPrunedWav2Vec2Model", "HJPrunedWav2Vec2ForCTC", "HJPrunedWav2Vec2ForSequenceClassification"]
