"""Pruned wav2vec2 / HuBERT / WavLM models, registered with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForCTC

from .configuration_hjpruned import HJPrunedHubertConfig, HJPrunedWav2Vec2Config, HJPrunedWavLMConfig
from .modeling_hjpruned_hubert import (
    HJPrunedHubertForCTC,
    HJPrunedHubertForSequenceClassification,
    HJPrunedHubertModel,
)
from .modeling_hjpruned_wav2vec2 import (
    HJPrunedWav2Vec2ForCTC,
    HJPrunedWav2Vec2ForSequenceClassification,
    HJPrunedWav2Vec2Model,
)
from .modeling_hjpruned_wavlm import (
    HJPrunedWavLMForCTC,
    HJPrunedWavLMForSequenceClassification,
    HJPrunedWavLMModel,
)

_AUTO_CLASSES = {
    "AutoModel": (AutoModel, (HJPrunedWav2Vec2Model, HJPrunedHubertModel, HJPrunedWavLMModel)),
    "AutoModelForCTC": (AutoModelForCTC, (HJPrunedWav2Vec2ForCTC, HJPrunedHubertForCTC, HJPrunedWavLMForCTC)),
    "AutoModelForAudioClassification": (
        AutoModelForAudioClassification,
        (
            HJPrunedWav2Vec2ForSequenceClassification,
            HJPrunedHubertForSequenceClassification,
            HJPrunedWavLMForSequenceClassification,
        ),
    ),
}


def _register() -> None:
    for config_class in (HJPrunedWav2Vec2Config, HJPrunedHubertConfig, HJPrunedWavLMConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        # `save_pretrained` then writes `auto_map` and copies this code next to the weights, so
        # checkpoints load with `trust_remote_code=True` where hf_hjprune is not installed.
        config_class.register_for_auto_class()
    for auto_name, (auto_class, model_classes) in _AUTO_CLASSES.items():
        for model_class in model_classes:
            auto_class.register(model_class.config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_name)


_register()

__all__ = [
    "HJPrunedWav2Vec2Config",
    "HJPrunedHubertConfig",
    "HJPrunedWavLMConfig",
    "HJPrunedWav2Vec2Model",
    "HJPrunedWav2Vec2ForCTC",
    "HJPrunedWav2Vec2ForSequenceClassification",
    "HJPrunedHubertModel",
    "HJPrunedHubertForCTC",
    "HJPrunedHubertForSequenceClassification",
    "HJPrunedWavLMModel",
    "HJPrunedWavLMForCTC",
    "HJPrunedWavLMForSequenceClassification",
]
