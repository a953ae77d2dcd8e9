"""`count_macs` / `count_params` against what the real forward pass does."""

import zlib

import pytest
import torch
from conftest import random_keep, tiny_config
from torch.utils.flop_counter import FlopCounterMode
from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig

from hf_hjprune.cost import count_macs, count_params
from hf_hjprune.materialize import prune_model
from hf_hjprune.structure import FAMILIES

BASE_CONFIGS = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}


def measured_macs(model, seconds: float) -> float:
    model.eval()
    values = torch.randn(1, int(seconds * 16000))
    # no_grad, not inference_mode: FlopCounterMode fails on the weight-norm positional conv there.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(values)
    return counter.get_total_flops() / 2


def assert_cost_matches(model, seconds: float) -> None:
    assert count_params(model).total == sum(p.numel() for p in model.parameters())
    predicted, measured = count_macs(model, seconds=seconds).total, measured_macs(model, seconds)
    assert abs(predicted - measured) / measured < 0.01, (predicted, measured)


@pytest.mark.parametrize("family", list(BASE_CONFIGS))
def test_base_sized_stock_models(family):
    """wav2vec2-base / HuBERT-base / WavLM-base shapes (random weights), 1 s of audio."""
    config = BASE_CONFIGS[family](attn_implementation="eager")
    model = FAMILIES[family].stock_models["ctc"](config)
    assert_cost_matches(model, seconds=1.0)
    macs = count_macs(model)
    assert 0.3 < macs.cnn / macs.total < 0.4  # the CNN's large share of the compute is the paper's premise


@pytest.mark.parametrize("family", list(BASE_CONFIGS))
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_random_pruned_structures(family, head, norm):
    generator = torch.Generator().manual_seed(zlib.crc32(f"{family}-{head}-{norm}".encode()) % 1000)
    config = tiny_config(
        family, norm, hidden_size=64, num_attention_heads=8, intermediate_size=96, attn_implementation="eager"
    )
    model = FAMILIES[family].stock_models[head](config)
    pruned = prune_model(model, random_keep(config, generator))
    assert_cost_matches(pruned, seconds=0.7)
    assert count_macs(pruned, seconds=0.7).total < count_macs(model, seconds=0.7).total


def test_breakdown_adds_up():
    macs = count_macs(FAMILIES["wav2vec2"].stock_models["ctc"](tiny_config()))
    parts = macs.as_dict()
    assert parts["total"] == pytest.approx(parts["cnn"] + parts["transformer"] + parts["head"])
    assert parts["transformer"] == pytest.approx(
        parts["feature_projection"] + parts["positional_conv"] + parts["attention"] + parts["ffn"]
    )


def test_too_short_audio_is_an_error():
    with pytest.raises(ValueError, match="receptive field"):
        count_macs(tiny_config(), seconds=0.001)
