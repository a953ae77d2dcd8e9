"""The Accelerate trainer: recipes, data preparation, every task and variant, resume, multi-process, bad input."""

import dataclasses
import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import quick_overrides, run_in_session, tiny_config
from safetensors.torch import load_file
from transformers import (
    AutoModelForAudioClassification,
    AutoModelForCTC,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Processor,
)

from hf_hjprune import HJPruner, cli
from hf_hjprune import train as train_module
from hf_hjprune.data.collate import (
    PreparedSplit,
    SpeechCollator,
    build_feature_extractor,
    build_tokenizer,
    prepare_split,
)
from hf_hjprune.data.corpus import build_corpus
from hf_hjprune.data.flite import FLITE_VOICES, flite_available
from hf_hjprune.data.sources import load_source
from hf_hjprune.errors import HJPruneInputError
from hf_hjprune.recipes import available_recipes, load_recipe
from hf_hjprune.train import (
    HEAD_MODULES,
    build_dataloaders,
    build_model,
    build_optimizer,
    finished_summary,
    train,
)

SIZES = {"num_train": 32, "num_validation": 8, "num_test": 8, "seed": 0}
SUMMARY_KEYS = {
    "recipe",
    "variant",
    "target",
    "steps",
    "train_seconds",
    "num_processes",
    "params",
    "macs",
    "metrics",
    "skipped_files",
}
TARGETS = {"none": [], "macs": ["target=0.3"], "params": ["target=0.3"], "transformer": ["target=0.1"]}
TARGETS["sep"] = ["target.cnn=0.3", "target.transformer=0.2"]


def quick(cache_dir, output_dir, *overrides):
    """Overrides that make a shipped tiny recipe run in a few seconds."""
    return quick_overrides(SIZES, cache_dir, output_dir, *overrides)


def run(recipe, cache_dir, output_dir, *overrides):
    return train(load_recipe(recipe, quick(cache_dir, output_dir, *overrides)))


# --- recipes ---------------------------------------------------------------------------------------------


def test_shipped_recipes_load():
    names = available_recipes()
    for name in (
        "tiny_asr",
        "tiny_slu",
        "demo_asr_dense",
        "demo_asr_hjmac",
        "demo_slu_dense",
        "demo_slu_hjmac",
        "wav2vec2_base_librispeech_hjmac",
        "hubert_base_librispeech_hjmac",
        "wavlm_base_librispeech_hjmac",
        "wav2vec2_base_slurp_hjmac",
    ):
        assert name in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.task in ("asr", "slu")
    paper = load_recipe("wavlm_base_librispeech_hjmac")
    assert (paper.model, paper.variant, paper.learning_rate) == ("microsoft/wavlm-base", "macs", 2e-4)
    assert paper.num_warmup_steps == round(0.1 * paper.max_steps)


def test_recipe_overrides_and_types(tmp_path):
    recipe = load_recipe("tiny_asr", ["max_steps=7", "learning_rate=3e-4", "data_options.num_train=20"])
    assert recipe.max_steps == 7 and recipe.learning_rate == 3e-4 and recipe.data_options["num_train"] == 20
    sep = load_recipe("tiny_asr", ["variant=sep", "target.cnn=0.2", "target.transformer=0.5"])
    assert sep.target == {"cnn": 0.2, "transformer": 0.5}
    path = tmp_path / "mine.yaml"
    path.write_text("task: slu\nmax_steps: 3\n")
    assert load_recipe(path).task == "slu"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["max_step=3"],
            r"unknown recipe key 'max_step' \(did you mean 'max_steps'\?\).*known recipe keys: task",
        ),
        (["task=tts"], "task must be one of asr, slu"),
        (["variant=flops"], "variant must be one of none, macs"),
        (["max_steps=many"], "max_steps must be int"),
        (["max_steps=0"], "max_steps must be at least 1"),
        (["target=high"], "target must be float or dict"),
        (["model=tiny:bert"], "tiny models are tiny:wav2vec2"),
        (["warmup_ratio=2"], r"warmup_ratio must be in \[0, 1\]"),
        (["target.cnn=0.3"], "is for the 'sep' variant"),
        (["max_steps"], "not of the form key=value"),
        (["speed_perturbation=[0.9, 3.0]"], r"speed_perturbation must list factors between 0.5 and 2.0"),
        (["speed_perturbation=[]"], r"speed_perturbation must list factors"),
    ],
)
def test_bad_recipes(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_recipe("tiny_asr", overrides)


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="unknown recipe 'tiny_tts'.*tiny_asr, tiny_slu"):
        load_recipe("tiny_tts")


def test_cli_reports_errors_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "tiny_tts"])
    assert exit_info.value.code == 2
    assert "error: unknown recipe 'tiny_tts'" in capsys.readouterr().err


# --- data ------------------------------------------------------------------------------------------------


def write_bad_dataset(root, corpus_dir):
    """A manifest folder: good synthetic utterances plus one file of each kind of trouble in train."""
    corpus = load_source(corpus_dir)
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    splits = {}
    for split in ("train", "validation", "test"):
        rows = []
        for i, row in enumerate(corpus[split]):
            name = f"audio/{split}_{i}.wav"
            shutil.copy(row["audio"], root / name)
            rows.append({"audio": name, "text": row["text"], "intent": row["intent"]})
        splits[split] = rows
    speech, rate = sf.read(corpus["train"][0]["audio"], dtype="float32")
    bad = {
        "corrupt.wav": lambda path: path.write_bytes(b"RIFF\x00\x00not really a wave file" + rng.bytes(64)),
        "empty.wav": lambda path: path.write_bytes(b""),
        "silent.wav": lambda path: sf.write(path, np.zeros(16000, dtype="float32"), 16000),
        "nan.wav": lambda path: sf.write(
            path, np.full(16000, np.nan, dtype="float32"), 16000, subtype="FLOAT"
        ),
        "short.wav": lambda path: sf.write(path, speech[:200], rate),
        "stereo.wav": lambda path: sf.write(path, np.stack([speech, 0.5 * speech], axis=1), rate),
        "resampled.wav": lambda path: sf.write(
            path, np.interp(np.arange(0, len(speech), 16000 / 44100), np.arange(len(speech)), speech), 44100
        ),
    }
    for name, write in bad.items():
        write(root / "audio" / name)
        splits["train"].append(
            {"audio": f"audio/{name}", "text": "turn on the lights", "intent": "iot_lights_on"}
        )
    for split, rows in splits.items():
        with open(root / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return len(corpus["train"])


@pytest.fixture(scope="module")
def corpus_dir(cache_dir):
    path = cache_dir / "manifest_source"
    build_corpus(path, **SIZES)
    return path


def test_prepare_split_converts_and_skips(tmp_path, corpus_dir, caplog):
    num_good = write_bad_dataset(tmp_path / "bad", corpus_dir)
    dataset = load_source(tmp_path / "bad")
    tokenizer = build_tokenizer(dataset["train"]["text"])
    with caplog.at_level(logging.WARNING):
        split = prepare_split(
            dataset["train"], "text", lambda t: tokenizer(t).input_ids, "train", keep_audio=True
        )
    assert split.skipped_counts == {"corrupt": 1, "empty": 1, "nan": 1, "silent": 1, "too_short": 1}
    assert len(split) == num_good + 2  # stereo and 44.1 kHz are converted
    for name in ("corrupt.wav", "empty.wav", "nan.wav", "silent.wav", "short.wav"):
        assert name in caplog.text
    stereo, resampled = split[len(split) - 2]["input_values"], split[len(split) - 1]["input_values"]
    speech = split[0]["input_values"]
    assert stereo.ndim == 1 and stereo.dtype == np.float32 and len(stereo) == len(speech)
    assert abs(len(resampled) - len(speech)) <= 2  # back at 16 kHz

    lazy = prepare_split(dataset["train"], "text", lambda t: tokenizer(t).input_ids, "train")
    assert lazy.audio is None and lazy.skipped_counts == split.skipped_counts
    np.testing.assert_array_equal(lazy[3]["input_values"], split[3]["input_values"])


def test_collator_normalises_and_pads():
    collator = SpeechCollator(build_feature_extractor())
    items = [
        {"input_values": np.linspace(-2, 6, 800, dtype=np.float32), "labels": [3, 4, 5]},
        {"input_values": np.linspace(0, 1, 500, dtype=np.float32), "labels": [6]},
    ]
    batch = collator(items)
    assert batch["input_values"].shape == (2, 800)
    assert batch["attention_mask"].sum(-1).tolist() == [800, 500]
    short = batch["input_values"][1, :500]
    assert abs(float(short.mean())) < 1e-4 and abs(float(short.std(unbiased=False)) - 1) < 1e-2
    assert batch["input_values"][1, 500:].abs().sum() == 0
    assert batch["labels"].tolist() == [[3, 4, 5], [6, -100, -100]]
    classes = collator([{**items[0], "labels": 2}, {**items[1], "labels": 0}])
    assert classes["labels"].tolist() == [2, 0]


def test_speed_perturbation_plays_each_training_utterance_at_a_drawn_factor():
    items = [
        {"input_values": np.sin(np.arange(16000, dtype=np.float32) / 7), "labels": [3]} for _ in range(64)
    ]
    plain = SpeechCollator(build_feature_extractor())
    perturbed = dataclasses.replace(plain, speed_factors=(0.9, 1.0, 1.1))
    torch.manual_seed(0)
    lengths = perturbed(items)["attention_mask"].sum(-1).tolist()
    assert set(lengths) == {17778, 16000, 14545}  # 16000 samples played at 0.9, 1.0 and 1.1
    torch.manual_seed(0)
    assert perturbed(items)["attention_mask"].sum(-1).tolist() == lengths  # drawn from torch's generator
    assert plain(items)["attention_mask"].sum(-1).tolist() == [16000] * 64
    # Only the training batches are perturbed.
    audio = [item["input_values"] for item in items[:4]]
    split = PreparedSplit(audio, [0, 1, 2, 3], [[3]] * 4, [16000] * 4, audio=audio)
    recipe = load_recipe("tiny_asr", ["speed_perturbation=[0.9, 1.1]", "batch_size=4"])
    loaders = build_dataloaders(recipe, dict.fromkeys(("train", "validation", "test"), split), plain)
    train, validation, test = (next(iter(loader))["attention_mask"].sum(-1).tolist() for loader in loaders)
    assert set(train) <= {17778, 14545} and validation == test == [16000] * 4


def test_training_batches_are_shuffled_by_seed_and_epoch_and_grouped_by_length():
    lengths = np.random.default_rng(1).integers(8_000, 60_000, size=400).tolist()
    # No audio: the training sampler reads only the lengths.
    split = PreparedSplit([None] * 400, list(range(400)), [[3]] * 400, lengths)
    splits = dict.fromkeys(("train", "validation", "test"), split)
    collator = SpeechCollator(build_feature_extractor())

    def epoch_order(grouped: bool, epoch: int = 0, seed: int = 0) -> list[int]:
        recipe = load_recipe(
            "tiny_asr", [f"group_by_length={str(grouped).lower()}", "batch_size=4", f"seed={seed}"]
        )
        sampler = build_dataloaders(recipe, splits, collator)[0].sampler
        sampler.set_epoch(epoch)
        return list(sampler)

    shuffled, grouped = epoch_order(False), epoch_order(True)
    assert sorted(shuffled) == sorted(grouped) == list(range(400))
    assert epoch_order(True) == grouped  # a resumed run sees the same order
    assert epoch_order(True, epoch=1) != grouped and epoch_order(True, seed=1) != grouped
    # Groups of 50 batches: the shuffled items of each group, longest first.
    group = 50 * 4
    for start in range(0, 400, group):
        assert grouped[start : start + group] == sorted(
            shuffled[start : start + group], key=lambda i: -lengths[i]
        )

    def padded(order: list[int]) -> int:  # samples computed, padding included
        return sum(4 * max(lengths[i] for i in order[start : start + 4]) for start in range(0, 400, 4))

    assert padded(grouped) < 0.8 * padded(shuffled)


def test_bad_audio_is_skipped_with_counts_in_the_summary(tmp_path, corpus_dir, cache_dir, caplog):
    write_bad_dataset(tmp_path / "bad", corpus_dir)
    with caplog.at_level(logging.WARNING):
        summary = run("tiny_asr", cache_dir, tmp_path / "run", f"data={tmp_path / 'bad'}", "data_options={}")
    assert summary["skipped_files"]["train"] == {
        "corrupt": 1,
        "empty": 1,
        "nan": 1,
        "silent": 1,
        "too_short": 1,
    }
    assert summary["skipped_files"]["test"] == {}
    assert "corrupt.wav" in caplog.text and summary["steps"] == 4


def test_missing_column_fails_before_training(tmp_path, corpus_dir, cache_dir):
    root = tmp_path / "no_text"
    write_bad_dataset(root, corpus_dir)
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
        (root / f"{split}.jsonl").write_text("".join(json.dumps({"audio": r["audio"]}) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"no 'text' column.*available columns: \['audio'\]"):
        run("tiny_asr", cache_dir, tmp_path / "run", f"data={root}", "data_options={}")
    assert not (tmp_path / "run").exists()


def test_no_usable_audio_fails_before_training(tmp_path, cache_dir):
    root = tmp_path / "silent"
    root.mkdir()
    sf.write(root / "a.wav", np.zeros(8000, dtype="float32"), 16000)
    for split in ("train", "validation", "test"):
        (root / f"{split}.jsonl").write_text(json.dumps({"audio": "a.wav", "intent": "iot_coffee"}) + "\n")
    with pytest.raises(ValueError, match=r"no usable audio in the train split.*'silent': 1"):
        run("tiny_slu", cache_dir, tmp_path / "run", f"data={root}", "data_options={}")


def test_unknown_model_fails_before_training(tmp_path, cache_dir):
    with pytest.raises(ValueError, match="cannot load the model 'nobody/no-such-model'"):
        run("tiny_asr", cache_dir, tmp_path / "run", "model=nobody/no-such-model")


def test_unreachable_target_fails_before_training(tmp_path, cache_dir):
    with pytest.raises(ValueError, match="not reachable"):
        run("tiny_asr", cache_dir, tmp_path / "run", "target=0.99")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("head", ["ctc", "classification"])
def test_optimizer_groups_and_head_learning_rate(head):
    config = tiny_config("wav2vec2", use_weighted_layer_sum=True)
    model = (Wav2Vec2ForCTC if head == "ctc" else Wav2Vec2ForSequenceClassification)(config)
    pruner = HJPruner(model, target=0.2)
    recipe = load_recipe("tiny_slu", ["learning_rate=1e-3", "head_learning_rate=1e-2", "max_steps=10"])
    optimizer, scheduler = build_optimizer(recipe, model, pruner)
    body, head_group, gates, lambdas = optimizer.param_groups
    head_names = [name for name, _ in model.named_parameters() if name.split(".")[0] in HEAD_MODULES]
    assert len(head_group["params"]) == len(head_names) > 0
    assert len(body["params"]) + len(head_names) == len(list(model.parameters()))
    assert {id(p) for p in gates["params"]} == {id(p) for p in pruner.gate_parameters()}
    assert {id(p) for p in lambdas["params"]} == {id(p) for p in pruner.lagrangian_parameters()}
    assert optimizer.defaults["fused"]  # one kernel for every tensor on a CPU
    for _ in range(recipe.num_warmup_steps):
        optimizer.step()  # no gradients: only the schedule moves
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
        [1e-3, 1e-2, recipe.gate_learning_rate, recipe.lambda_learning_rate]
    )
    without = load_recipe("tiny_slu", ["learning_rate=1e-3", "max_steps=10"])
    assert {group["initial_lr"] for group in build_optimizer(without, model, None)[0].param_groups} == {1e-3}


def test_a_new_weighted_layer_sum_starts_as_an_equal_mix(tmp_path):
    """transformers leaves a `layer_weights` missing from the checkpoint uninitialised (garbage)."""
    Wav2Vec2ForCTC(tiny_config("wav2vec2")).save_pretrained(tmp_path / "ctc")
    overrides = [f"model={tmp_path / 'ctc'}", "model_config={use_weighted_layer_sum: true}"]
    recipe = load_recipe("tiny_slu", overrides)
    for _ in range(3):
        model = build_model(recipe, label2id={"a": 0, "b": 1})
        count = len(model.layer_weights)
        assert torch.equal(model.layer_weights, torch.full_like(model.layer_weights, 1 / count))
    model.layer_weights.data.copy_(torch.arange(count) / count)
    model.save_pretrained(tmp_path / "slu")
    trained = load_recipe("tiny_slu", [f"model={tmp_path / 'slu'}", "model_config={}"])
    assert torch.equal(build_model(trained, label2id={"a": 0, "b": 1}).layer_weights, model.layer_weights)


# --- training runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["none", "macs", "sep", "params", "transformer"])
@pytest.mark.parametrize("task", ["asr", "slu"])
def test_run_writes_a_loadable_model_and_a_summary(task, variant, tmp_path, cache_dir):
    output_dir = tmp_path / "run"
    summary = run(f"tiny_{task}", cache_dir, output_dir, f"variant={variant}", *TARGETS[variant])
    assert SUMMARY_KEYS <= set(summary) and summary["steps"] == 4
    assert json.loads((output_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for part in ("params", "macs"):
        before, after = summary[part]["before"], summary[part]["after"]
        assert {"cnn", "transformer", "total"} <= set(before)
        assert after["total"] <= before["total"]
    metric = "wer" if task == "asr" else "accuracy"
    assert metric in summary["metrics"]["before"] and metric in summary["metrics"]["after"]
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert any("validation/" + metric in r for r in records)
    if variant != "none":
        assert any(key.startswith("pruning/") for key in records[0])

    auto_class = AutoModelForCTC if task == "asr" else AutoModelForAudioClassification
    model = auto_class.from_pretrained(output_dir / "model").eval()
    expected_type = "wav2vec2" if variant == "none" else "hjpruned_wav2vec2"
    assert model.config.model_type == expected_type
    processor = Wav2Vec2Processor.from_pretrained(output_dir / "model") if task == "asr" else None
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(audio)[None]).logits
    if task == "asr":
        assert logits.shape[-1] == len(processor.tokenizer)
        assert isinstance(processor.batch_decode(logits.argmax(-1))[0], str)
    else:
        assert logits.shape == (1, len(model.config.id2label))


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, cache_dir):
    """A run killed right after writing checkpoint step_3, resumed, matches the uninterrupted run."""
    overrides = ["max_steps=6", "checkpoint_steps=3", "gradient_accumulation_steps=2", "eval_steps=3"]
    full = run("tiny_asr", cache_dir, tmp_path / "full", *overrides)
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["step_3", "step_6"]

    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_3", killed / "checkpoints" / "step_3")
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:5]) + "\n")  # the killed run logged past step 3
    resumed = train(load_recipe("tiny_asr", quick(cache_dir, killed, *overrides)), resume=True)

    expected, actual = (
        load_file(tmp_path / "full" / "model" / "model.safetensors"),
        load_file(killed / "model" / "model.safetensors"),
    )
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert resumed["metrics"] == full["metrics"] and resumed["steps"] == 6
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in lines]


def test_a_new_run_does_not_mix_with_an_earlier_one(tmp_path, cache_dir):
    (tmp_path / "run" / "checkpoints" / "step_5").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"checkpoints of an earlier run \(up to step_5\): pass --resume"):
        run("tiny_slu", cache_dir, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps({"step": 9, "train/loss": 1.0}) + "\n")
    run("tiny_slu", cache_dir, tmp_path / "run", "variant=none")
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert 9 not in steps and steps[0] == 1


def test_keep_checkpoints(tmp_path, cache_dir):
    run("tiny_slu", cache_dir, tmp_path / "run", "variant=none", "checkpoint_steps=1", "keep_checkpoints=2")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_3", "step_4"]


@pytest.mark.parametrize("extra", [[], ["final_finetune_steps=2"]], ids=["prune", "prune-then-finetune"])
def test_accelerate_launch_two_processes(tmp_path, cache_dir, extra):
    """`accelerate launch` with two CPU processes (gloo) runs to the end (< 60 s), also with two
    trainings in one process (a final fine-tune after pruning: the process group outlives each run).

    `--cpu` starts a single process (without mpirun); torchrun's processes (`--multi_gpu`) train on
    the CPU with `ACCELERATE_USE_CPU=1`.
    """
    output_dir = tmp_path / "launch"
    command = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "hf_hjprune.train",
        "tiny_asr",
        *(
            arg
            for override in quick(cache_dir, output_dir, "max_steps=3", *extra)
            for arg in ("--set", override)
        ),
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_in_session(command, environment, timeout=120)  # a timeout kills the launcher's workers too
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 3 + (2 if extra else 0)
    assert summary["metrics"]["after"]["num_utterances"] == SIZES["num_test"]
    if extra:
        assert summary["final_finetune"]["steps"] == 2
    AutoModelForCTC.from_pretrained(output_dir / "model")


@pytest.mark.skipif(not flite_available(), reason="flite is not installed (apt-get install flite)")
def test_out_of_domain_test_set_spoken_by_flite(tmp_path, cache_dir):
    summary = run("tiny_asr", cache_dir, tmp_path / "run", "variant=none", "ood_test=flite")
    assert summary["ood_test"]["source"] == "flite"
    assert summary["ood_test"]["metrics"]["num_utterances"] == SIZES["num_test"]
    rows = [json.loads(line) for line in next(cache_dir.glob("*-flite")).joinpath("test.jsonl").open()]
    assert {row["speaker"] for row in rows} <= {f"flite-{voice}" for voice in FLITE_VOICES}
    test_texts = sorted(load_source("synthetic", cache_dir=cache_dir, **SIZES)["test"]["text"])
    assert sorted(row["text"] for row in rows) == test_texts


def test_out_of_domain_test_is_skipped_without_flite(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(train_module, "flite_available", lambda: False)
    summary = run("tiny_asr", cache_dir, tmp_path / "run", "variant=none", "ood_test=flite")
    assert summary["ood_test"] == {"source": "flite", "skipped": "flite is not installed"}


def test_a_finished_run_is_reused_only_for_its_own_recipe(tmp_path):
    recipe = load_recipe("tiny_asr", [f"output_dir={tmp_path}"])
    assert finished_summary(recipe) is None
    saved = recipe.to_dict()
    del saved["freeze_feature_encoder"]  # a field added since: its default
    (tmp_path / "summary.json").write_text(json.dumps({"recipe": saved, "steps": 3}))
    assert finished_summary(recipe)["steps"] == 3
    changed = load_recipe("tiny_asr", [f"output_dir={tmp_path}", "learning_rate=0.5"])
    with pytest.raises(HJPruneInputError, match=r"learning_rate: 0\.001 there, 0\.5 now"):
        finished_summary(changed)
