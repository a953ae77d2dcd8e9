"""Building blocks shared by the pruned wav2vec2, HuBERT and WavLM models.

Each pruned module subclasses its stock transformers counterpart and only changes how it is built
(per-layer sizes from an `HJPruned*Config`), so checkpoint keys, forward code and output recording
stay those of transformers. Family files combine these mixins with their stock classes. The mixins'
constructors replace the stock ones (which would build the dense sizes first): each says with
`# Adapted from` which stock constructor it follows, and `tests/test_module_attributes.py` checks that
every pruned module still has every attribute its stock module has.

What removing a unit means (the contract `hf_hjprune.prune_model` and the gates follow):
- conv channel: its conv output is zero, a channel LayerNorm (the conv LayerNorms of
  `feat_extract_norm="layer"` and the feature projection's) still normalises over the original
  width with the removed channel counted as a zero and outputs zero for it, and its output is zero
  where it enters the next conv / the feature projection;
- attention head: its context vector is zero where it enters `out_proj`;
- FFN unit: its activation is zero where it enters `output_dense`.
A layer with no heads (no FFN units) therefore still adds `out_proj.bias` (`output_dense.bias`).

This file is shipped as remote code next to pruned checkpoints: it may import only torch,
transformers and huggingface_hub.
"""

import warnings

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    Wav2Vec2FeatureEncoder,
    Wav2Vec2FeedForward,
)


def pruned_linear(in_features: int, out_features: int) -> nn.Linear:
    """`nn.Linear` that may have zero features (a layer with no heads or no FFN units left)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


# Adapted from torch.nn.LayerNorm
class HJPrunedLayerNorm(nn.LayerNorm):
    """LayerNorm over the kept channels with the statistics of the original width.

    The removed channels are zeros in the original model and still count in the mean and the
    variance, so they are added back analytically instead of being materialised.
    """

    def __init__(self, num_channels: int, original_num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps=eps)
        self.original_num_channels = original_num_channels

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_removed = self.original_num_channels - hidden_states.shape[-1]
        if num_removed == 0:
            return super().forward(hidden_states)
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        mean = hidden_states.sum(-1, keepdim=True) / self.original_num_channels
        centered = hidden_states - mean
        variance = (centered.pow(2).sum(-1, keepdim=True) + num_removed * mean.pow(2)) / (
            self.original_num_channels
        )
        normed = centered * torch.rsqrt(variance + self.eps)
        return (normed * self.weight.float() + self.bias.float()).to(dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, original_num_channels={self.original_num_channels}"


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureEncoder
class HJPrunedFeatureEncoder(Wav2Vec2FeatureEncoder):
    """The stock conv stack built at the pruned widths (`conv_dim` is already per layer)."""

    def __init__(self, config):
        super().__init__(config)
        if config.feat_extract_norm == "layer":
            for i, conv_layer in enumerate(self.conv_layers):
                conv_layer.layer_norm = HJPrunedLayerNorm(
                    config.conv_dim[i], config.original_conv_dim[i], eps=conv_layer.layer_norm.eps
                )


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureProjection.__init__
class HJPrunedFeatureProjectionMixin:
    """The stock feature projection, its LayerNorm over the kept channels of the last conv layer with the
    statistics of the original width (HuBERT's has no LayerNorm without `feat_proj_layer_norm`)."""

    def __init__(self, config):
        super().__init__(config)
        if getattr(self, "layer_norm", None) is not None:
            self.layer_norm = HJPrunedLayerNorm(
                config.conv_dim[-1], config.original_conv_dim[-1], eps=config.layer_norm_eps
            )


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Attention.__init__
class HJPrunedAttentionMixin:
    """Multi-head attention with `num_heads` kept heads of the original `head_dim`.

    Forward is the stock one, which reshapes with `-1` heads and so works at any head count.
    """

    def __init__(self, config, layer_idx: int):
        nn.Module.__init__(self)
        self.config = config
        self.layer_idx = layer_idx
        self.embed_dim = config.hidden_size
        self.num_heads = config.attention_heads_per_layer[layer_idx]
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.scaling = self.head_dim**-0.5
        self.is_decoder = False
        self.is_causal = False
        inner_dim = self.num_heads * self.head_dim
        self.k_proj = pruned_linear(self.embed_dim, inner_dim)
        self.v_proj = pruned_linear(self.embed_dim, inner_dim)
        self.q_proj = pruned_linear(self.embed_dim, inner_dim)
        self.out_proj = pruned_linear(inner_dim, self.embed_dim)


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeedForward
class HJPrunedFeedForward(Wav2Vec2FeedForward):
    """The stock FFN with this layer's number of intermediate units."""

    def __init__(self, config, layer_idx: int):
        nn.Module.__init__(self)
        size = config.intermediate_size_per_layer[layer_idx]
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = pruned_linear(config.hidden_size, size)
        act = config.hidden_act
        self.intermediate_act_fn = ACT2FN[act] if isinstance(act, str) else act
        self.output_dense = pruned_linear(size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2EncoderLayer.__init__
class HJPrunedEncoderLayerMixin:
    """An encoder layer (post- or pre-LayerNorm) with its own attention and FFN sizes."""

    attention_class: type

    def __init__(self, config, layer_idx: int):
        GradientCheckpointingLayer.__init__(self)
        self.attention = self.attention_class(config, layer_idx)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = HJPrunedFeedForward(config, layer_idx)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adapter_layer = None  # adapters are rejected by the config


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Encoder.__init__
class HJPrunedEncoderMixin:
    """The stock encoder, with layer `i` built at its own sizes (never the dense layer first)."""

    layer_class: type
    pos_conv_class: type

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.pos_conv_embed = self.pos_conv_class(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([self.layer_class(config, i) for i in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False


class HJPrunedPreTrainedMixin:
    """What every pruned model class changes in its stock `PreTrainedModel`.

    Weight initialisation runs exactly as for the stock classes:
    transformers treats classes defined outside `transformers.*` as custom code and then skips
    `_init_weights` for modules without parameters of their own. Stock wav2vec2 and WavLM
    initialise the positional conv (bias 0, scaled normal weight) and the feature projection
    (uniform +-sqrt(1/in)) from exactly such parent modules, so they would keep generic Conv1d /
    Linear init. The skip guards remote code that writes weights in place; ours is the stock
    `_init_weights`, whose `transformers.initialization` functions leave loaded weights alone.
    """

    def _initialize_weights(self, module, is_custom_code: bool = False):
        super()._initialize_weights(module, is_custom_code=False)

    def _get_feat_extract_output_lengths(self, input_lengths, add_adapter: bool | None = None):
        """Output frames of the conv feature encoder (pruned models have no adapter to count)."""
        if add_adapter:
            raise ValueError(
                "add_adapter=True: pruned models have no adapter, their output lengths never count one"
            )
        return super()._get_feat_extract_output_lengths(input_lengths)


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Model.__init__
class HJPrunedModelMixin(HJPrunedPreTrainedMixin):
    """The stock base model with a pruned feature encoder, feature projection and encoder."""

    feature_projection_class: type
    encoder_class: type
    stable_layer_norm_encoder_class: type

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        self.config = config
        self.feature_extractor = HJPrunedFeatureEncoder(config)
        self.feature_projection = self.feature_projection_class(config)
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.Tensor(config.hidden_size).uniform_())
        encoder_class = (
            self.stable_layer_norm_encoder_class if config.do_stable_layer_norm else self.encoder_class
        )
        self.encoder = encoder_class(config)
        self.adapter = None
        self.post_init()


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForCTC.__init__
class HJPrunedForCTCMixin(HJPrunedPreTrainedMixin):
    """The stock CTC head on top of the pruned base model."""

    pruned_base_model_class: type

    def __init__(self, config, target_lang: str | None = None):
        PreTrainedModel.__init__(self, config)
        if config.vocab_size is None:
            raise ValueError("config.vocab_size is None: a CTC model needs the size of its vocabulary")
        setattr(self, self.base_model_prefix, self.pruned_base_model_class(config))
        self.dropout = nn.Dropout(config.final_dropout)
        self.target_lang = target_lang
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()


# Adapted from transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForSequenceClassification.__init__
class HJPrunedForSequenceClassificationMixin(HJPrunedPreTrainedMixin):
    """The stock utterance classification head (mean pooling) on top of the pruned base model."""

    pruned_base_model_class: type

    def __init__(self, config):
        PreTrainedModel.__init__(self, config)
        setattr(self, self.base_model_prefix, self.pruned_base_model_class(config))
        if config.use_weighted_layer_sum:
            num_layers = config.num_hidden_layers + 1  # transformer layers + input embeddings
            self.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()
