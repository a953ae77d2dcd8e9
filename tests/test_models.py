"""Pruned model classes and `prune_model`: exactness, loading, validation."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import random_keep, tiny_config
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModel, AutoModelForAudioClassification, AutoModelForCTC

from hf_hjprune import HJPrunedWav2Vec2Config, HJPrunedWavLMConfig
from hf_hjprune.materialize import prune_model
from hf_hjprune.structure import FAMILIES, to_pruned_config

FAMILIES_NAMES = list(FAMILIES)
LAYOUTS = [("group", False), ("layer", False), ("group", True), ("layer", True)]


def build(family, head, norm="group", stable=False, seed=0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(family, norm, stable, **overrides)
    model = FAMILIES[family].stock_models[head](config).eval()
    # Random non-trivial norm affines and biases so a wrongly kept/removed unit shows in the output.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "gru_rel_pos_const" in name:
                param.add_(torch.randn_like(param) * 0.3)
    return model


def remove_units(model, keep):
    """Reference removal on the dense model, written independently of hf_hjprune.structure.

    A removed conv channel has zero conv weights and zero norm affine (so it is zero before and after
    its norm, and after the feature projection's LayerNorm); a removed head has zero value rows; a
    removed FFN unit has a zero output column.
    """
    base = getattr(model, model.base_model_prefix, model)
    with torch.no_grad():
        convs = base.feature_extractor.conv_layers
        for i, kept in enumerate(keep["conv"]):
            removed = [c for c in range(convs[i].conv.out_channels) if c not in kept]
            convs[i].conv.weight[removed] = 0
            if convs[i].conv.bias is not None:
                convs[i].conv.bias[removed] = 0
            if hasattr(convs[i], "layer_norm"):
                convs[i].layer_norm.weight[removed] = 0
                convs[i].layer_norm.bias[removed] = 0
            if i == len(convs) - 1 and hasattr(base.feature_projection, "layer_norm"):
                base.feature_projection.layer_norm.weight[removed] = 0
                base.feature_projection.layer_norm.bias[removed] = 0
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        for layer, kept_heads, kept_ffn in zip(base.encoder.layers, keep["heads"], keep["ffn"]):
            for h in range(layer.attention.num_heads):
                if h not in kept_heads:
                    layer.attention.v_proj.weight[h * head_dim : (h + 1) * head_dim] = 0
                    layer.attention.v_proj.bias[h * head_dim : (h + 1) * head_dim] = 0
            dense = layer.feed_forward.output_dense
            removed = [u for u in range(dense.in_features) if u not in kept_ffn]
            dense.weight[:, removed] = 0
    return model


def outputs(model, values, attention_mask):
    with torch.no_grad():
        out = model(values, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", FAMILIES_NAMES)
@pytest.mark.parametrize("norm,stable", LAYOUTS)
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
def test_pruned_matches_dense_with_units_removed(family, norm, stable, head, audio_batch):
    model = build(family, head, norm, stable)
    keep = random_keep(model.config, torch.Generator().manual_seed(1))
    pruned = prune_model(model, keep)
    reference = remove_units(build(family, head, norm, stable), keep)

    assert pruned.config.conv_dim == [len(k) for k in keep["conv"]]
    assert pruned.config.attention_heads_per_layer == [len(k) for k in keep["heads"]]
    assert pruned.config.intermediate_size_per_layer == [len(k) for k in keep["ffn"]]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    expected = outputs(reference, *audio_batch)
    torch.testing.assert_close(outputs(pruned, *audio_batch), expected, atol=1e-5, rtol=1e-4)
    # The removal is not a no-op: the unpruned model's outputs differ well beyond that tolerance.
    assert (outputs(model, *audio_batch) - expected).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES_NAMES)
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_pruning_twice_composes(family, norm, audio_batch):
    model = build(family, "ctc", norm)
    first = random_keep(model.config, torch.Generator().manual_seed(2), allow_empty=False)
    once = prune_model(model, first)
    second = random_keep(once.config, torch.Generator().manual_seed(3))
    twice = prune_model(once, second)
    composed = {
        group: [[first[group][i][j] for j in kept] for i, kept in enumerate(second[group])] for group in first
    }
    direct = prune_model(model, composed)
    assert twice.config.to_dict() == direct.config.to_dict()
    torch.testing.assert_close(
        outputs(twice, *audio_batch), outputs(direct, *audio_batch), atol=1e-5, rtol=1e-5
    )
    if family == "wavlm":
        assert twice.config.kept_head_indices == composed["heads"]


@pytest.mark.parametrize("family", FAMILIES_NAMES)
def test_zero_heads_and_ffn_units_train(family, audio_batch):
    model = prune_model(build(family, "ctc"), {"heads": [[], [1], []], "ffn": [[0], [], []]}).train()
    out = model(*audio_batch[:1], labels=torch.tensor([[1, 2, 3], [4, 5, 6]]))
    out.loss.backward()
    attention = model.base_model.encoder.layers[1].attention
    assert attention.q_proj.weight.grad is not None and attention.q_proj.weight.grad.abs().sum() > 0
    assert model.base_model.encoder.layers[0].attention.out_proj.bias.grad is not None


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_eager_and_sdpa_agree(attn, audio_batch, monkeypatch):
    model = prune_model(
        build("wav2vec2", "ctc"), random_keep(tiny_config(), torch.Generator().manual_seed(4))
    )
    model.config._attn_implementation = attn
    reference = prune_model(
        build("wav2vec2", "ctc"), random_keep(tiny_config(), torch.Generator().manual_seed(4))
    )
    reference.config._attn_implementation = "eager"
    expected = outputs(reference, *audio_batch)
    sdpa, calls = torch.nn.functional.scaled_dot_product_attention, []

    def counted_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted_sdpa)
    torch.testing.assert_close(outputs(model, *audio_batch), expected, atol=1e-5, rtol=1e-5)
    # The sdpa model really ran the sdpa kernel, once per layer (with its kept heads); eager never did.
    kept_heads = list(model.config.attention_heads_per_layer) if attn == "sdpa" else []
    assert [shape[1] for shape in calls] == kept_heads


@pytest.mark.parametrize("family", FAMILIES_NAMES)
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True)])
def test_init_from_config_is_the_stock_init(family, head, norm, stable):
    """At dense sizes, a pruned class built from a config draws exactly the stock weights."""
    config = tiny_config(family, norm, stable, mask_time_prob=0.5, use_weighted_layer_sum=True)
    torch.manual_seed(0)
    stock = FAMILIES[family].stock_models[head](config).state_dict()
    torch.manual_seed(0)
    pruned = FAMILIES[family].pruned_models[head](to_pruned_config(config)).state_dict()
    assert pruned.keys() == stock.keys()
    differ = [name for name in stock if not torch.equal(pruned[name], stock[name])]
    assert not differ, f"initialised unlike the stock model: {differ}"


@pytest.mark.parametrize("family", FAMILIES_NAMES)
def test_init_of_a_pruned_structure_follows_stock(family):
    """Pruned sizes: the CNN, feature projection and positional conv draw from the distributions of
    the stock model with the same conv widths (positional conv bias 0, scaled normal weight, feature
    projection uniform +-sqrt(1/kept channels), ...)."""
    torch.manual_seed(0)
    sizes = dict(conv_dim=(96, 96, 96), hidden_size=64, intermediate_size=96, conv_bias=True)
    config = tiny_config(family, "layer", **sizes)
    keep = random_keep(config, torch.Generator().manual_seed(5), allow_empty=False)
    keep["conv"] = [list(range(0, 96, 2)), list(range(0, 96, 3)), list(range(1, 96, 2))]
    pruned_config = prune_model(FAMILIES[family].stock_models["ctc"](config), keep).config
    pruned = FAMILIES[family].pruned_models["ctc"](pruned_config)
    stock_config = tiny_config(family, "layer", **{**sizes, "conv_dim": pruned_config.conv_dim})
    stock_model = FAMILIES[family].stock_models["ctc"](stock_config)
    stock = dict(stock_model.named_parameters())
    # The positional conv's effective weight (a weight-norm parametrisation stores g and v).
    pruned_pos_conv, stock_pos_conv = (
        m.base_model.encoder.pos_conv_embed.conv for m in (pruned, stock_model)
    )
    tensors = [("pos_conv_embed.conv.weight", pruned_pos_conv.weight)]
    stock["pos_conv_embed.conv.weight"] = stock_pos_conv.weight
    tensors += list(pruned.named_parameters())
    compared = []
    for name, param in tensors:
        if not any(part in name for part in ("feature_extractor.", "feature_projection.", "pos_conv_embed.")):
            continue
        param, expected = param.detach(), stock[name].detach()
        assert param.shape == expected.shape, name
        if expected.std() == 0:  # a constant init (norm affines, zero biases)
            torch.testing.assert_close(param, expected, atol=0, rtol=0, msg=name)
        elif param.numel() >= 64:  # enough draws for the sample statistics
            # ~6 standard errors of the sample std and mean: never flaky, yet the generic init
            # (std 0.02 where stock draws ~0.1) is far outside.
            tolerance = 4 / param.numel() ** 0.5
            assert abs(param.std() / expected.std() - 1) < tolerance, (name, param.std(), expected.std())
            assert abs(param.mean() - expected.mean()) < 1.5 * tolerance * expected.std(), name
        compared.append(name)
    assert any("pos_conv_embed.conv.bias" in name for name in compared)
    assert any("feature_projection.projection.weight" in name for name in compared)
    assert pruned.base_model.encoder.pos_conv_embed.conv.bias.abs().max() == 0


AUTO = {"base": AutoModel, "ctc": AutoModelForCTC, "classification": AutoModelForAudioClassification}


@pytest.mark.parametrize("family", FAMILIES_NAMES)
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
def test_save_and_from_pretrained(family, head, tmp_path, audio_batch):
    pruned = prune_model(build(family, head, "layer"), random_keep(tiny_config(family), torch.Generator()))
    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"hjpruned_{family}"
    assert "AutoConfig" in config["auto_map"]
    loaded = AUTO[head].from_pretrained(tmp_path).eval()
    assert type(loaded) is type(pruned)
    torch.testing.assert_close(outputs(loaded, *audio_batch), outputs(pruned, *audio_batch), atol=0, rtol=0)


REMOTE_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["hf_hjprune"] = None  # the package is installed in this venv: make it unimportable
    import torch
    from transformers import AutoModelForCTC
    model = AutoModelForCTC.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert "hf_hjprune" not in type(model).__module__, type(model).__module__
    values, mask = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(model(values, attention_mask=mask).logits, sys.argv[3])
    """
)


@pytest.mark.parametrize("family", FAMILIES_NAMES)
def test_remote_code_loads_without_the_package(family, tmp_path, audio_batch):
    pruned = prune_model(build(family, "ctc", "layer"), random_keep(tiny_config(family), torch.Generator()))
    pruned.save_pretrained(tmp_path / "model")
    torch.save(audio_batch, tmp_path / "inputs.pt")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_LOAD,
            str(tmp_path / "model"),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    torch.testing.assert_close(
        torch.load(tmp_path / "out.pt"), outputs(pruned, *audio_batch), atol=1e-6, rtol=1e-6
    )


def test_asr_pipeline_returns_text(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor, pipeline

    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("abcdefghi")}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(tmp_path / "vocab.json"), pad_token="<pad>", unk_token="<unk>", word_delimiter_token="|"
    )
    processor = Wav2Vec2Processor(Wav2Vec2FeatureExtractor(return_attention_mask=True), tokenizer)
    model = prune_model(build("wav2vec2", "ctc"), random_keep(tiny_config(), torch.Generator()))
    # Bias the head towards letters so the random model emits text.
    with torch.no_grad():
        model.lm_head.bias[3:] += 5.0
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "model"))
    result = asr({"raw": torch.randn(8000).numpy(), "sampling_rate": 16000})
    assert isinstance(result["text"], str) and result["text"].strip()


BAD_CONFIGS = [
    (dict(conv_dim=[8, 8, 8], original_conv_dim=[8, 8]), "original_conv_dim has 2 entries"),
    (dict(conv_dim=[8, 13, 8], original_conv_dim=[16, 12, 12]), r"conv_dim\[1\] = 13 is above"),
    (dict(conv_dim=[8, 0, 8], original_conv_dim=[16, 12, 12]), r"conv_dim\[1\] = 0 is below"),
    (dict(attention_heads_per_layer=[4, 4]), "attention_heads_per_layer has 2 entries"),
    (
        dict(attention_heads_per_layer=[4, 5, 1]),
        r"attention_heads_per_layer\[1\] = 5 is above .*num_attention_heads",
    ),
    (dict(attention_heads_per_layer=[4, -1, 1]), r"attention_heads_per_layer\[1\] = -1 is below"),
    (dict(intermediate_size_per_layer=[48, 48, 49]), r"intermediate_size_per_layer\[2\] = 49 is above"),
    (dict(intermediate_size_per_layer=[-3, 48, 48]), r"intermediate_size_per_layer\[0\] = -3 is below"),
    (
        dict(num_attention_heads=5),
        "not divisible by num_attention_heads = 5: pruned configs need the original",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS)
def test_malformed_config_names_the_field(overrides, message):
    values = tiny_config().to_dict()
    values.update(overrides)
    for key in ("model_type", "transformers_version"):
        values.pop(key, None)
    with pytest.raises(StrictDataclassError, match=message):
        HJPrunedWav2Vec2Config(**values)


@pytest.mark.parametrize(
    "kept,message",
    [
        ([[0, 0], [1], [2]], r"kept_head_indices\[0\] = \[0, 0\] has duplicate heads"),
        ([[0], [4], [2]], r"kept_head_indices\[1\] has heads \[4\] outside"),
        ([[0], [1]], "kept_head_indices has 2 entries"),
    ],
)
def test_malformed_wavlm_head_indices(kept, message):
    values = tiny_config("wavlm").to_dict()
    for key in ("model_type", "transformers_version"):
        values.pop(key, None)
    with pytest.raises(StrictDataclassError, match=message):
        heads = [len(k) for k in kept] + [1] * (3 - len(kept))
        HJPrunedWavLMConfig(**values, kept_head_indices=kept, attention_heads_per_layer=heads)


# The adapters each stock family builds from its config; pruned models reject them at any time.
ADAPTERS = {
    "wav2vec2": {"add_adapter": True, "adapter_attn_dim": 16},
    "hubert": {"adapter_attn_dim": 16},
    "wavlm": {"add_adapter": True},
}
ADAPTER_CASES = [
    (family, name, value) for family, fields in ADAPTERS.items() for name, value in fields.items()
]


@pytest.mark.parametrize("family,field,value", ADAPTER_CASES)
def test_adapters_are_rejected_at_any_time(family, field, value, tmp_path):
    message = f"(?s)field '{field}'.*adapters are not supported by pruned models"
    with pytest.raises(StrictDataclassError, match=message):
        to_pruned_config(tiny_config(family, **{field: value}))
    model = prune_model(build(family, "ctc"), random_keep(tiny_config(family), torch.Generator()))
    with pytest.raises(StrictDataclassError, match=message):
        model.config.__setattr__(field, value)  # the case: set after construction
    with pytest.raises(StrictDataclassError, match=message):
        model.config.update({field: value})
    model.save_pretrained(tmp_path)
    with pytest.raises(StrictDataclassError, match=message):
        AutoModelForCTC.from_pretrained(tmp_path, **{field: value})
    assert not getattr(model.config, field)


@pytest.mark.parametrize("family", FAMILIES_NAMES)
def test_output_lengths_describe_the_forward(family):
    model = prune_model(build(family, "base"), random_keep(tiny_config(family), torch.Generator()))
    for samples in (400, 1000, 3201):
        with torch.no_grad():
            frames = model(torch.randn(1, samples)).last_hidden_state.shape[1]
        assert model._get_feat_extract_output_lengths(samples) == frames
        assert model._get_feat_extract_output_lengths(torch.tensor([samples]), add_adapter=False) == frames
    with pytest.raises(ValueError, match="pruned models have no adapter"):
        model._get_feat_extract_output_lengths(1000, add_adapter=True)


def test_wrong_field_type_is_rejected():
    with pytest.raises(StrictDataclassError, match="attention_heads_per_layer"):
        HJPrunedWav2Vec2Config(attention_heads_per_layer="twelve")


@pytest.mark.parametrize(
    "keep,message",
    [
        ({"conv": [[0], [], [1]]}, "must keep at least one channel"),
        ({"heads": [[0], [9], [1]]}, "outside"),
        ({"ffn": [[0], [1]]}, "one per layer"),
        ({"channels": []}, "unknown unit group"),
    ],
)
def test_prune_model_rejects_bad_keep(keep, message):
    with pytest.raises(ValueError, match=message):
        prune_model(build("wav2vec2", "ctc"), keep)


def test_prune_model_rejects_other_families():
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="unsupported model family"):
        prune_model(
            BertModel(
                BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
            ),
            {},
        )
