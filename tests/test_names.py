"""Names defined once (variants, families, the sample rate) and the one start-model builder."""

import json
from pathlib import Path

import pytest
import torch

from hf_hjprune import count_macs, prune_model
from hf_hjprune.bench import dense_model_of_run
from hf_hjprune.benchmarks import paper_comparison
from hf_hjprune.data.speech_synth import SAMPLE_RATE
from hf_hjprune.pretrain import ship_command
from hf_hjprune.pruner import DENSE, PRUNING_VARIANTS, VARIANTS
from hf_hjprune.recipes import load_recipe
from hf_hjprune.start_models import (
    TINY_CONFIG,
    available_pretrained_models,
    load_start_model,
    load_start_model_config,
    resolve_model,
    start_model_file,
)
from hf_hjprune.structure import FAMILIES, SAMPLING_RATE


def test_the_variant_registry_is_what_recipes_cards_and_tables_use():
    assert tuple(VARIANTS) == (DENSE, *PRUNING_VARIANTS) == ("none", "macs", "sep", "params", "transformer")
    assert paper_comparison.VARIANTS == PRUNING_VARIANTS
    assert {name: paper_comparison.LABELS[name] for name in VARIANTS} == {
        name: v.label for name, v in VARIANTS.items()
    }
    assert (
        VARIANTS["macs"].tag == "hj-mac" and VARIANTS[DENSE].description == "no pruning (dense fine-tuning)"
    )
    with pytest.raises(ValueError, match="variant must be one of none, macs, sep, params, transformer"):
        load_recipe("tiny_asr", ["variant=hjmac"])


def test_the_synthesised_audio_has_the_models_sample_rate():
    # speech_synth runs as a stand-alone worker script, so it keeps a copy of the constant.
    assert SAMPLE_RATE == SAMPLING_RATE == 16_000


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_start_models_are_built_in_code(family):
    name = f"tiny:{family}"
    assert resolve_model(name) == name and start_model_file(name, "vocab.json") is None
    model, info = load_start_model(name, "ctc", {"vocab_size": 12})
    assert info is None and model.config.hidden_size == TINY_CONFIG["hidden_size"]
    assert model.lm_head.out_features == 12
    assert load_start_model_config(name).to_dict() == FAMILIES[family].stock_config(**TINY_CONFIG).to_dict()
    with pytest.raises(ValueError, match="tiny models are tiny:wav2vec2, tiny:hubert, tiny:wavlm"):
        load_start_model("tiny:bert")


def test_shipped_start_models_load_by_name():
    model, info = load_start_model("pretrained:tiny-hubert-ssl", "classification", {"num_labels": 3})
    assert type(model).__name__ == "HubertForSequenceClassification" and model.classifier.out_features == 3
    assert {key.split(".")[0] for key in info["missing_keys"]} <= {"projector", "classifier"}
    random, info = load_start_model("pretrained:tiny-hubert-ssl", "base", random_init=True)
    assert info is None and random.config.hidden_size == model.config.hidden_size
    with pytest.raises(ValueError, match="cannot load the model 'no/such-model'"):
        load_start_model("no/such-model")


@pytest.mark.parametrize("name", available_pretrained_models())
def test_every_shipped_start_model_loads_and_its_card_says_how_it_was_made(name):
    folder = Path(resolve_model(name))
    summaries = json.loads((folder / "pretraining_summaries.json").read_text(encoding="utf-8"))
    family = FAMILIES[summaries[-1]["family"]]
    assert json.loads((folder / "config.json").read_text())["model_type"] == family.name
    trained_head = "ctc" if summaries[-1]["objective"] == "ctc" else "base"
    model, info = load_start_model(name, trained_head)
    assert type(model) is family.stock_models[trained_head] and not info["missing_keys"], info["missing_keys"]
    assert (start_model_file(name, "vocab.json") is not None) == (trained_head == "ctc")
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert f"pretrained:{folder.name}" in card and family.display_name in card
    command = ship_command(folder.name)
    if command is not None:  # made by the shipped recipes: the card names every stage's command
        for stage in command.split(" && ")[:-1]:
            assert f"`{stage}`" in card, stage


def test_bench_finds_the_dense_model_of_a_run_from_a_shipped_start_model(tmp_path):
    dense, _ = load_start_model("pretrained:tiny-hubert-asr", "ctc")
    pruned = prune_model(dense, {"ffn": [list(range(64))] * dense.config.num_hidden_layers})
    summary = {
        "recipe": {"model": "pretrained:tiny-hubert-asr", "model_config": {}},
        "macs": {"seconds": 1.0, "before": count_macs(dense, 1.0).as_dict()},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    rebuilt = dense_model_of_run(tmp_path, pruned)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), dense.state_dict().values()))
