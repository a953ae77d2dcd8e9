"""Reliability with real users' inputs and real failures: one test per guarantee of the README's
"Reliability" section (start models with their own vocabulary, body mismatches, kill -9 and SIGTERM
then --resume, errors, recipe checks, bad audio, progress output, the base-size path under
Accelerate, declared dependencies and test hygiene)."""

import ast
import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import finish, quick_overrides, run_in_session, tiny_config
from huggingface_hub import HfApi, constants
from safetensors.torch import load_file
from transformers import (
    AutoModelForCTC,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Processor,
)

import hf_hjprune.train as train_module
from hf_hjprune import HJPruner, bench, cli
from hf_hjprune.atomic import append_jsonl, atomic_write_text, read_jsonl
from hf_hjprune.data.corpus import build_corpus
from hf_hjprune.data.sources import load_source
from hf_hjprune.errors import HJPruneInputError, UnreachableTargetError
from hf_hjprune.progress import ProgressReporter
from hf_hjprune.recipes import load_recipe
from hf_hjprune.testing import hub_env, run_hub_server
from hf_hjprune.train import build_model, checkpoints, load_label2id, load_tokenizer, train, train_all

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"num_train": 16, "num_validation": 4, "num_test": 4, "seed": 0}
# facebook/wav2vec2-base-960h's 32-entry vocabulary layout, lower-cased to fit the synthetic transcripts.
VOCAB = "<pad> <s> </s> <unk> | e t a o n i h s r d l u m w c f g y p b v k ' x j q z".split()


def quick(cache_dir, output_dir, *overrides):
    """Overrides that make the tiny ASR recipe run in a few seconds (no validation runs)."""
    return quick_overrides(SIZES, cache_dir, output_dir, "eval_steps=0", *overrides)


def save_ctc_checkpoint(folder: Path, config=None) -> Wav2Vec2ForCTC:
    """A fine-tuned-style CTC checkpoint as on the Hub: weights, config, tokenizer and feature extractor."""
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), bos_token="<s>", eos_token="</s>")
    feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config or tiny_config(vocab_size=len(VOCAB), pad_token_id=0)).eval()
    model.save_pretrained(folder)
    return model


def logits_of(model, seed: int = 0) -> torch.Tensor:
    audio = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 8000)).astype(np.float32))
    with torch.no_grad():
        return model.eval()(audio).logits


# --- 1. start models as users have them --------------------------------------------------------------


HUB_BUILD = """
import json, sys
import numpy as np, torch
from hf_hjprune.recipes import load_recipe
from hf_hjprune.data.sources import load_source
from hf_hjprune.train import build_model, load_tokenizer

overrides, output = json.loads(sys.argv[1]), sys.argv[2]
recipe = load_recipe("tiny_asr", overrides)
texts = list(load_source(recipe.data, **recipe.data_options)["train"]["text"])
tokenizer = load_tokenizer(recipe, texts)
model = build_model(recipe, tokenizer).eval()
audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32))
with torch.no_grad():
    np.save(output, model(audio).logits.numpy())
with open(output + ".json", "w") as f:
    json.dump(tokenizer.get_vocab(), f)
"""


def test_a_hub_ctc_checkpoint_keeps_its_vocabulary_and_head(tmp_path, cache_dir, monkeypatch):
    """Started from a Hub repository with its own tokenizer, the model's logits are unchanged before training."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    expected = logits_of(save_ctc_checkpoint(tmp_path / "checkpoint"))
    load_source("synthetic", **SIZES, cache_dir=cache_dir)  # the subprocess finds the corpus built
    with run_hub_server() as server:
        api = HfApi(endpoint=server.url, token=server.token)
        api.create_repo("org/w2v2-960h-like")
        api.upload_folder(repo_id="org/w2v2-960h-like", folder_path=tmp_path / "checkpoint")
        overrides = quick(cache_dir, tmp_path / "run", "model=org/w2v2-960h-like", "model_config={}")
        env = {**os.environ, **hub_env(server, tmp_path / "hf_home")}
        result = subprocess.run(
            [sys.executable, "-c", HUB_BUILD, json.dumps(overrides), str(tmp_path / "logits.npy")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "logits.npy.json").read_text()) == {
        token: i for i, token in enumerate(VOCAB)
    }
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "logits.npy")), expected, rtol=0, atol=0)


def test_characters_outside_the_vocabulary_are_an_error_unless_new_vocabulary(tmp_path, cache_dir, caplog):
    save_ctc_checkpoint(tmp_path / "checkpoint")
    vocabulary = json.loads((tmp_path / "checkpoint" / "vocab.json").read_text())
    del vocabulary["q"], vocabulary["z"]  # a vocabulary missing two characters of the transcripts
    vocabulary = {token: i for i, token in enumerate(vocabulary)}
    (tmp_path / "checkpoint" / "vocab.json").write_text(json.dumps(vocabulary))
    texts = list(load_source("synthetic", **SIZES, cache_dir=cache_dir)["train"]["text"])
    texts.append("a quiz")
    recipe = load_recipe("tiny_asr", [f"model={tmp_path / 'checkpoint'}", "model_config={}"])
    with pytest.raises(
        HJPruneInputError, match=r"2 character\(s\).*'q' \(\d+x\), 'z' \(\d+x\).*new_vocabulary: true"
    ):
        load_tokenizer(recipe, texts)

    renewed = load_recipe(
        "tiny_asr", [f"model={tmp_path / 'checkpoint'}", "model_config={}", "new_vocabulary=true"]
    )
    with caplog.at_level(logging.INFO):
        tokenizer = load_tokenizer(renewed, texts)
        assert {"q", "z"} <= set(tokenizer.get_vocab())
        model = build_model(renewed, tokenizer)
    assert "new_vocabulary" in caplog.text and "Task head trained from scratch: lm_head" in caplog.text
    start = Wav2Vec2ForCTC.from_pretrained(tmp_path / "checkpoint")
    for name, param in start.wav2vec2.state_dict().items():  # the body is the checkpoint's
        torch.testing.assert_close(model.wav2vec2.state_dict()[name], param, rtol=0, atol=0, msg=name)


def test_new_vocabulary_of_the_same_size_still_gets_a_new_head(tmp_path):
    """Same size, other characters: keeping the old head would keep scrambled labels."""
    start = save_ctc_checkpoint(tmp_path / "checkpoint")
    recipe = load_recipe(
        "tiny_asr", [f"model={tmp_path / 'checkpoint'}", "model_config={}", "new_vocabulary=true"]
    )
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "checkpoint")  # any 32-entry vocabulary
    model = build_model(recipe, tokenizer)
    assert model.lm_head.weight.shape == start.lm_head.weight.shape
    assert not torch.equal(model.lm_head.weight, start.lm_head.weight)
    assert torch.equal(model.lm_head.bias, torch.zeros_like(model.lm_head.bias))


def test_an_intent_classifier_keeps_its_labels(tmp_path):
    config = tiny_config(num_labels=3, id2label={0: "lights_on", 1: "lights_off", 2: "weather"})
    Wav2Vec2ForSequenceClassification(config).save_pretrained(tmp_path / "classifier")
    recipe = load_recipe("tiny_slu", [f"model={tmp_path / 'classifier'}", "model_config={}"])
    start = train_module.load_start_config(recipe)
    assert load_label2id(recipe, ["weather", "lights_on"], start) == {
        "lights_on": 0,
        "lights_off": 1,
        "weather": 2,
    }
    with pytest.raises(HJPruneInputError, match=r"1 intent\(s\).*\['coffee'\].*new_vocabulary: true"):
        load_label2id(recipe, ["weather", "coffee"], start)


def test_a_body_mismatch_is_an_error_naming_the_tensors(tmp_path):
    save_ctc_checkpoint(tmp_path / "checkpoint")
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "checkpoint")
    for override, message in (
        (
            "model_config={intermediate_size: 40}",
            r"intermediate_dense.weight: \(48, 32\) in the checkpoint, \(40, 32\)",
        ),
        (
            "model_config={num_hidden_layers: 4}",
            r"encoder.layers.3.attention.k_proj.weight: not in the checkpoint",
        ),
        ("model_config={num_hidden_layers: 2}", r"encoder.layers.2.*: in the checkpoint, not in the model"),
    ):
        recipe = load_recipe("tiny_asr", [f"model={tmp_path / 'checkpoint'}", override])
        with pytest.raises(HJPruneInputError, match=message):
            build_model(recipe, tokenizer)
    # A head of another size is fine (the new head starts from scratch), so is a new masking vector.
    other = load_recipe(
        "tiny_slu", [f"model={tmp_path / 'checkpoint'}", "model_config={mask_time_prob: 0.1}"]
    )
    assert build_model(other, label2id={"a": 0, "b": 1}).classifier.out_features == 2


# --- 3. errors: brief for input mistakes, tracebacks for everything else ---------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["max_step=3"], r"recipe key 'max_step' \(did you mean 'max_steps'\?\)"),
        (["data_option.num_train=3"], r"recipe key 'data_option' \(did you mean 'data_options'\?\)"),
        (["batch_size=two"], r"batch_size must be int, got 'two'"),
        (["cache_audio=maybe"], r"cache_audio must be bool"),
        (["learning_rate=-1e-4"], r"learning_rate must be positive"),
        (["max_audio_seconds=0"], r"max_audio_seconds must be positive"),
        (["target=1.5"], r"target must be a relative reduction in \(0, 1\)"),
        (
            ["variant=sep", "target.cnnn=0.2", "target.transformer=0.2"],
            r"key 'cnnn' \(did you mean 'cnn'\?\) in target",
        ),
        (["variant=mac"], r"variant must be one of .* got 'mac' \(did you mean 'macs'\?\)"),
        (["model_config=[1, 2]"], r"model_config must be dict"),
        (["max_steps=[1"], r"override 'max_steps=\[1': the value is not valid YAML"),
    ],
)
def test_recipe_errors_name_the_key(overrides, message):
    with pytest.raises(HJPruneInputError, match=message):
        load_recipe("tiny_asr", overrides)


def test_recipe_errors_come_before_any_data_is_built(tmp_path, cache_dir):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("task: asr\nmax_steps: [1\n")
    with pytest.raises(HJPruneInputError, match=r"bad.yaml is not valid YAML"):
        load_recipe(bad_yaml)
    fresh = tmp_path / "fresh_cache"
    for override, message in (
        ("data_options.num_trian=8", r"option 'num_trian' \(did you mean 'num_train'\?\) in data_options"),
        (
            "model_config.hiden_size=8",
            r"model_config: Wav2Vec2Config has no attribute 'hiden_size' \(did you mean 'hidden_size'\?\)",
        ),
        ("model=nobody/no-such-model", r"cannot load the model 'nobody/no-such-model'"),
    ):
        recipe = load_recipe("tiny_asr", quick(fresh, tmp_path / "run", override))
        with pytest.raises(HJPruneInputError, match=message):
            train(recipe)
        assert not fresh.exists() and not (tmp_path / "run").exists()


def test_cli_is_brief_for_input_errors_and_keeps_tracebacks_for_the_rest(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "tiny_asr", "--set", "max_step=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "did you mean 'max_steps'" in err and "Traceback" not in err

    def broken(recipe, resume=False):
        raise ValueError("Expected input batch_size (3) to match target batch_size (4).")  # as torch says

    monkeypatch.setattr(train_module, "train", broken)
    with pytest.raises(ValueError, match="Expected input batch_size"):  # not turned into a one-line "error:"
        cli.main(["train", "tiny_asr"])


def test_keep_going_only_swallows_input_errors(tmp_path, cache_dir, monkeypatch):
    unreachable = load_recipe("tiny_asr", quick(cache_dir, tmp_path / "a", "target=0.99"))
    [result] = train_all([unreachable], keep_going=True)
    assert result["error_type"] == UnreachableTargetError.__name__ and "not reachable" in result["error"]

    def broken(recipe, resume=False):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(train_module, "train", broken)
    with pytest.raises(ValueError, match="a bug"):
        train_all([unreachable], keep_going=True)


# --- 2. crash safety: kill -9 anywhere, SIGTERM, requeue ---------------------------------------------


FAULTS = """
import json, os, signal, sys, time
from pathlib import Path

fault, at = sys.argv[1], int(sys.argv[2])


def die():
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as kill -9 from outside


if fault == "step":  # killed in the middle of a step: after the forward pass of batch `at`
    from accelerate import Accelerator

    backward, calls = Accelerator.backward, []

    def killed_backward(self, loss, **kwargs):
        calls.append(1)
        if len(calls) == at:
            die()
        return backward(self, loss, **kwargs)

    Accelerator.backward = killed_backward
elif fault == "checkpoint":  # killed while writing checkpoint step_`at`: half of a file on disk
    import accelerate.checkpointing

    save = accelerate.checkpointing.save

    def killed_save(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        if f"step_{at}.partial" in str(path) and "optimizer" in str(path):
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            die()

    accelerate.checkpointing.save = killed_save
elif fault == "metrics":  # killed while appending the metrics record of step `at`: a torn line
    import hf_hjprune.train

    append = hf_hjprune.train.append_jsonl

    def killed_append(path, record):
        if record.get("step") == at and "train/loss" in record:
            line = (json.dumps(record) + "\\n").encode()
            with open(path, "ab") as f:
                f.write(line[: len(line) // 2])
            die()
        append(path, record)

    hf_hjprune.train.append_jsonl = killed_append
elif fault == "published":  # killed right after checkpoint step_`at` is complete (main process)
    import hf_hjprune.train

    publish = hf_hjprune.train.publish_directory

    def killed_publish(partial, final):
        publish(partial, final)
        if Path(final).name == f"step_{at}":
            die()

    hf_hjprune.train.publish_directory = killed_publish
elif fault == "slow":  # `at` ms per batch, so that a test can signal the run mid-way
    from accelerate import Accelerator

    backward = Accelerator.backward

    def slow_backward(self, loss, **kwargs):
        time.sleep(at / 1000)
        return backward(self, loss, **kwargs)

    Accelerator.backward = slow_backward

from hf_hjprune.train import main

sys.exit(main(sys.argv[3:]))
"""
"""A `python -c` script: `FAULT AT TRAIN-ARGS...` runs `hjprune train TRAIN-ARGS` with a fault injected."""

RESUMABLE = ["max_steps=8", "checkpoint_steps=2", "keep_checkpoints=2", "gradient_accumulation_steps=2"]
"""A run with checkpoints every 2 of its 8 steps, 2 batches per step, old checkpoints deleted."""


def train_args(cache_dir, output_dir, *overrides):
    return [
        "tiny_asr",
        *(arg for o in quick(cache_dir, output_dir, *RESUMABLE, *overrides) for arg in ("--set", o)),
    ]


def start_with_fault(fault: str, at: int, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", FAULTS, fault, str(at), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model" / "model.safetensors")


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, tmp_path_factory):
    """The resumable run, never interrupted: what every interrupted run must end with."""
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(load_recipe("tiny_asr", quick(cache_dir, output_dir, *RESUMABLE)))
    return output_dir


@pytest.mark.parametrize(
    "fault,at,resumes_from",
    [
        ("step", 11, "step_4"),  # batch 11 is the first of step 6
        ("checkpoint", 6, "step_4"),
        ("metrics", 7, "step_6"),
    ],
)
def test_kill_9_then_resume_gives_the_same_weights(
    fault, at, resumes_from, tmp_path, cache_dir, uninterrupted, caplog
):
    output_dir = tmp_path / "run"
    process = start_with_fault(fault, at, train_args(cache_dir, output_dir))
    _, stderr = finish(process, timeout=600)
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]
    assert not (output_dir / "summary.json").exists() and not (output_dir / "model").exists()
    assert checkpoints(output_dir)[-1].name == resumes_from
    if fault == "checkpoint":
        assert (output_dir / "checkpoints" / f"step_{at}.partial").is_dir()
    if fault == "metrics":
        assert not (output_dir / "metrics.jsonl").read_text().endswith("\n")  # the torn line is there

    with caplog.at_level(logging.INFO):
        summary = train(load_recipe("tiny_asr", quick(cache_dir, output_dir, *RESUMABLE)), resume=True)
    assert f"Resuming from {output_dir / 'checkpoints' / resumes_from}" in caplog.text
    assert_same_weights(weights(output_dir), weights(uninterrupted))
    expected = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["metrics"] == expected["metrics"] and summary["steps"] == 8
    steps = [record["step"] for record in read_jsonl(output_dir / "metrics.jsonl")]
    assert steps == [record["step"] for record in read_jsonl(uninterrupted / "metrics.jsonl")]
    assert sorted(path.name for path in (output_dir / "checkpoints").iterdir()) == ["step_6", "step_8"]


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, cache_dir, uninterrupted):
    output_dir = tmp_path / "run"
    process = start_with_fault("slow", 300, train_args(cache_dir, output_dir))
    metrics = output_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and any(r["step"] >= 3 for r in read_jsonl(metrics))):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = finish(process, timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    stopped = re.search(
        r"stopped by SIGTERM at step (\d+); checkpoint saved in (\S+): run the same command", stderr
    )
    assert stopped and "Traceback" not in stderr, stderr[-3000:]
    step = int(stopped.group(1))
    assert 3 <= step < 8 and checkpoints(output_dir)[-1].name == f"step_{step}"

    summary = train(load_recipe("tiny_asr", quick(cache_dir, output_dir, *RESUMABLE)), resume=True)
    assert summary["steps"] == 8
    assert_same_weights(weights(output_dir), weights(uninterrupted))


def test_resume_before_the_first_checkpoint_starts_over_and_says_so(
    tmp_path, cache_dir, uninterrupted, caplog
):
    """A requeued job runs the same command, `--resume` included, after a kill before any checkpoint."""
    output_dir = tmp_path / "run"
    args = [*train_args(cache_dir, output_dir), "--resume"]
    process = start_with_fault("step", 3, args)  # killed during step 2, before checkpoint step_2
    finish(process, timeout=600)
    assert process.returncode == -signal.SIGKILL and checkpoints(output_dir) == []
    assert [r["step"] for r in read_jsonl(output_dir / "metrics.jsonl")] == [1]

    with caplog.at_level(logging.WARNING):
        assert train_module.main(args) == 0
    assert "no checkpoint" in caplog.text and "starting from the beginning" in caplog.text
    assert_same_weights(weights(output_dir), weights(uninterrupted))
    assert [r["step"] for r in read_jsonl(output_dir / "metrics.jsonl")] == [
        r["step"] for r in read_jsonl(uninterrupted / "metrics.jsonl")
    ]


def test_train_all_continues_the_runs_a_killed_comparison_stopped(tmp_path, cache_dir, uninterrupted):
    """What `paper_comparison` and `hjprune demo --resume` rely on: runs left with a checkpoint (a SIGTERM
    to a killed comparison saves one) continue from it, in the worker processes too."""
    recipes = []
    for name in ("first", "second"):  # two runs, so that they train in two worker processes
        output_dir = tmp_path / name
        shutil.copytree(uninterrupted, output_dir)  # then stopped after the checkpoint of step 6:
        shutil.rmtree(output_dir / "model")
        shutil.rmtree(output_dir / "checkpoints" / "step_8")
        (output_dir / "summary.json").unlink()
        recipes.append(load_recipe("tiny_asr", quick(cache_dir, output_dir, *RESUMABLE)))
    with pytest.raises(HJPruneInputError, match="holds checkpoints of an earlier run"):
        train_all(recipes[:1])

    summaries = train_all(recipes, jobs=2, resume=True)
    expected = weights(uninterrupted)
    for recipe, summary in zip(recipes, summaries):
        assert summary["steps"] == 8 and "error" not in summary
        # Two steps in a worker with its own thread count: equal up to float reordering.
        actual = weights(Path(recipe.output_dir))
        assert actual.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], msg=key)
        steps = [record["step"] for record in read_jsonl(Path(recipe.output_dir) / "metrics.jsonl")]
        assert steps == [record["step"] for record in read_jsonl(uninterrupted / "metrics.jsonl")]


def test_atomic_files_and_torn_lines(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old\n")
    original = os.replace

    def interrupted(*args):
        raise KeyboardInterrupt  # the process is stopped between writing and renaming

    os.replace = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write_text(path, "new\n")
    finally:
        os.replace = original
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]

    metrics = tmp_path / "metrics.jsonl"
    for step in (1, 2):
        append_jsonl(metrics, {"step": step, "loss": 1.0 / step})
    with open(metrics, "a") as f:
        f.write('{"step": 3, "lo')  # a write cut short by a power failure
    assert [r["step"] for r in read_jsonl(metrics)] == [1, 2]
    train_module._truncate_metrics(metrics, 2)
    assert metrics.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n'
    metrics.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):  # damage inside the file is not a torn line
        read_jsonl(metrics)


# --- 4. bad audio in a local data folder -------------------------------------------------------------


BAD_AUDIO = {
    # file name: (how to write it from a good 16 kHz utterance, skip reason or conversion)
    "empty.wav": (lambda path, speech: path.write_bytes(b""), "empty"),
    "truncated.wav": (
        lambda path, speech: (sf.write(path, speech, 16000), path.write_bytes(path.read_bytes()[:-4000])),
        "truncated",
    ),
    "not_audio.wav": (
        lambda path, speech: path.write_text("this is a text file renamed to .wav\n" * 20),
        "corrupt",
    ),
    "nan.wav": (
        lambda path, speech: sf.write(
            path, np.where(np.arange(len(speech)) == 99, np.nan, speech), 16000, subtype="FLOAT"
        ),
        "nan",
    ),
    "inf.wav": (
        lambda path, speech: sf.write(
            path, np.where(np.arange(len(speech)) == 99, np.inf, speech), 16000, subtype="FLOAT"
        ),
        "nan",
    ),
    "silent.wav": (lambda path, speech: sf.write(path, np.zeros_like(speech), 16000), "silent"),
    "long.wav": (lambda path, speech: sf.write(path, np.resize(speech, 61 * 16000), 16000), "too_long"),
    "stereo.wav": (
        lambda path, speech: sf.write(path, np.stack([speech, 0.5 * speech], axis=1), 16000),
        "downmixed_to_mono",
    ),
    "8k.wav": (lambda path, speech: sf.write(path, resample(speech, 8000), 8000), "resampled_from_8000_hz"),
    "44k.wav": (
        lambda path, speech: sf.write(path, resample(speech, 44100), 44100),
        "resampled_from_44100_hz",
    ),
    "48k.wav": (
        lambda path, speech: sf.write(path, resample(speech, 48000), 48000),
        "resampled_from_48000_hz",
    ),
}
SKIPPED = {"empty": 1, "truncated": 1, "corrupt": 1, "nan": 2, "silent": 1, "too_long": 1}
CONVERTED = {
    "downmixed_to_mono": 1,
    "resampled_from_8000_hz": 1,
    "resampled_from_44100_hz": 1,
    "resampled_from_48000_hz": 1,
}


def resample(speech: np.ndarray, rate: int) -> np.ndarray:
    return np.interp(np.arange(0, len(speech), 16000 / rate), np.arange(len(speech)), speech).astype(
        np.float32
    )


def write_data_folder(root: Path, cache_dir: Path, bad: dict | None = None, good: bool = True) -> None:
    """A local folder of `{split}.jsonl` manifests: good utterances (when `good`), and the `bad` files in train."""
    build_corpus(cache_dir / "manifest_source", **SIZES)
    corpus = load_source(cache_dir / "manifest_source")
    speech, _ = sf.read(corpus["train"][0]["audio"], dtype="float32")
    (root / "audio").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = []
        for i, row in enumerate(corpus[split] if good else []):
            shutil.copy(row["audio"], root / "audio" / f"{split}_{i}.wav")
            rows.append({"audio": f"audio/{split}_{i}.wav", "text": row["text"], "intent": row["intent"]})
        if split == "train" or not good:
            for name, (write, _) in (bad or {}).items():
                write(root / "audio" / name, speech)
                rows.append(
                    {"audio": f"audio/{name}", "text": "turn on the lights", "intent": "iot_lights_on"}
                )
        (root / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_bad_audio_is_converted_or_skipped_with_counts_by_reason(tmp_path, cache_dir):
    write_data_folder(tmp_path / "data", cache_dir, BAD_AUDIO)
    overrides = quick(
        cache_dir, tmp_path / "run", f"data={tmp_path / 'data'}", "data_options={}", "max_steps=2"
    )
    summary = train(load_recipe("tiny_asr", overrides))
    assert summary["skipped_files"]["train"] == SKIPPED
    assert summary["converted_files"]["train"] == CONVERTED
    assert summary["skipped_files"]["test"] == {} and summary["converted_files"]["test"] == {}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_files"]["train"] == SKIPPED


def test_a_folder_of_only_bad_audio_is_an_error(tmp_path, cache_dir):
    bad_only = {name: entry for name, entry in BAD_AUDIO.items() if entry[1] in SKIPPED}
    write_data_folder(tmp_path / "data", cache_dir, bad_only, good=False)
    overrides = quick(cache_dir, tmp_path / "run", f"data={tmp_path / 'data'}", "data_options={}")
    with pytest.raises(
        HJPruneInputError, match=r"no usable audio in the train split: all 7 rows were skipped"
    ):
        train(load_recipe("tiny_asr", overrides))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_broken_manifest_line_is_an_input_error(tmp_path):
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"audio": "a.wav", "text": "hi"}\n{"audio": "b.wav", "te\n')
    with pytest.raises(HJPruneInputError, match=r"train.jsonl, line 2: not a JSON object"):
        load_source(tmp_path)


# --- 6. progress: bars on a terminal, periodic lines in files ------------------------------------------


def test_progress_lines_in_files(caplog, capsys):
    reporter = ProgressReporter(
        100, initial=40, interval=0.0, terminal=False, logger=logging.getLogger("progress")
    )
    with caplog.at_level(logging.INFO, logger="progress"):
        time.sleep(0.01)
        reporter.update(
            41, {"loss": "1.234", "macs reduction": "0.300 (target 0.400)", "λ macs": "0.01/0.02"}
        )
        reporter.close()
    line = caplog.records[-1].getMessage()
    assert re.fullmatch(
        r"train: step 41/100 \(41%\) \| loss 1\.234 \| macs reduction 0\.300 \(target 0\.400\) \| λ macs 0\.01/0\.02"
        r" \| [\d.]+ it/s \| ETA \d+(m\d\ds|s|h\d\dm)",
        line,
    ), line
    assert "\r" not in capsys.readouterr().err  # no bar

    quiet = ProgressReporter(100, interval=3600.0, terminal=False, logger=logging.getLogger("progress"))
    with caplog.at_level(logging.INFO, logger="progress"):
        caplog.clear()
        for step in range(1, 101):
            quiet.update(step)
    assert [record.getMessage().split(" |")[0] for record in caplog.records] == ["train: step 100/100 (100%)"]


def test_a_training_log_in_a_file_is_small_and_has_no_bars(tmp_path, cache_dir):
    """`make demo > log 2>&1` is a file: no carriage-return redraws, progress as periodic lines."""
    log = tmp_path / "demo.log"
    command = [
        sys.executable,
        "-m",
        "hf_hjprune.cli",
        "demo",
        "--quick",
        "--output-dir",
        str(tmp_path / "demo"),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as f:
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s]" not in text and "LOAD REPORT" not in text
    lines = re.findall(r"train: step 3/3 \(100%\) \| loss [\d.]+ .*\| [\d.]+ it/s", text)
    assert len(lines) == 4, text  # one per run: the runs take less than the 30 s between two lines
    assert sum("macs reduction" in line and "λ macs" in line for line in lines) == 2  # the two pruned runs
    assert len(text.encode()) < 50_000, len(text.encode())


# --- 7. declared dependencies and test hygiene --------------------------------------------------------


def test_every_third_party_import_is_a_declared_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in project["dependencies"]
    }
    optional = {  # the extras a feature asks for (space, export), not the dev tools
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower()
        for extra, requirements in project["optional-dependencies"].items()
        if extra != "dev"
        for r in requirements
    }
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in (ROOT / "hf_hjprune").rglob("*.py"):
        if "testing" in path.parts:
            continue  # the test Hub server uses the dev extra
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    undeclared = {
        name: distributions[name]
        for name in sorted(imported - set(sys.stdlib_module_names) - {"hf_hjprune"})
        if not {d.lower().replace("_", "-") for d in distributions.get(name, [name])} & (declared | optional)
    }
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"


def _test_functions():
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                yield path, node


def test_tests_seed_without_string_hashes():
    """`hash()` of a string changes with every process (PYTHONHASHSEED): a seed from it is not a seed."""
    calls = [
        f"{path.name}:{call.lineno}"
        for path, function in _test_functions()
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "hash"
    ]
    assert not calls, calls


def test_tests_restore_thread_counts():
    """A test that sets torch's thread count restores it (a fixture that yields, or try/finally), so the
    next test does not silently run on one thread. `conftest.py` also checks it after every test."""
    offenders = []
    for path, function in _test_functions():
        restores = any(isinstance(n, (ast.Yield, ast.Try)) for n in ast.walk(function))
        for call in ast.walk(function):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "set_num_threads"
                and not restores
            ):
                offenders.append(f"{path.name}:{call.lineno} ({function.name})")
    assert not offenders, offenders


# --- 5. the base-size path under Accelerate --------------------------------------------------------------


@pytest.mark.slow
def test_base_size_under_accelerate_bf16_kill_resume_export(tmp_path, cache_dir):
    """A wav2vec2-base-shaped CTC checkpoint (94.4M parameters, random weights) HJ-MAC-pruned for 3 steps
    by 2 CPU processes under `accelerate launch` (gloo), bf16 autocast, 2 batches per step, a checkpoint
    per step; killed after its first checkpoint, resumed, exported: the export reproduces the gated
    model in eval mode."""
    sizes = {"num_train": 16, "num_validation": 2, "num_test": 2, "seed": 0}
    load_source("synthetic", **sizes, cache_dir=cache_dir)  # built once here; both processes reuse it
    start = save_ctc_checkpoint(tmp_path / "base", Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0))
    assert sum(p.numel() for p in start.parameters()) == 94_396_320
    del start
    (tmp_path / "faults.py").write_text(FAULTS)
    output_dir = tmp_path / "run"
    overrides = [
        f"data_options={json.dumps({**sizes, 'cache_dir': str(cache_dir)})}",
        f"model={tmp_path / 'base'}",
        "model_config={layerdrop: 0.0}",  # as the shipped base recipes: DDP needs every layer to run
        "target=0.3",
        "target_tolerance=1.0",  # no end-of-run target matching: the export is the checkpoint's gated model
        "max_steps=3",
        "warmup_steps=1",
        "batch_size=1",
        "gradient_accumulation_steps=2",
        "mixed_precision=bf16",
        "checkpoint_steps=1",
        "keep_checkpoints=1",
        "eval_steps=0",
        "log_steps=1",
        f"output_dir={output_dir}",
    ]
    command = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"),
        "launch",
        "--multi_gpu",  # with ACCELERATE_USE_CPU=1: two gloo CPU processes (--cpu starts only one)
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
        str(tmp_path / "faults.py"),
    ]
    train_arguments = ["tiny_asr", *(arg for override in overrides for arg in ("--set", override))]
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }

    killed = run_in_session([*command, "published", "1", *train_arguments], env, timeout=1200)
    assert killed.returncode != 0 and [path.name for path in checkpoints(output_dir)] == ["step_1"], (
        killed.stderr[-3000:]
    )
    assert not (output_dir / "summary.json").exists()

    resumed = run_in_session([*command, "none", "0", *train_arguments, "--resume"], env, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr and "step_1" in resumed.stderr
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["num_processes"] == 2
    assert (
        summary["recipe"]["mixed_precision"] == "bf16"
        and summary["recipe"]["gradient_accumulation_steps"] == 2
    )
    assert summary["export_max_abs_difference"] < 1e-4
    weights_mib = 94_396_320 * 4 / 2**20
    assert len(summary["peak_rss_mib"]) == 2 and all(rss > weights_mib for rss in summary["peak_rss_mib"])

    # The same check, independently: the gated model of the last checkpoint against the exported model.
    model = Wav2Vec2ForCTC.from_pretrained(tmp_path / "base", layerdrop=0.0)
    gated = HJPruner(model, variant="macs", target=0.3, warmup_steps=1, seconds=1.0)
    gated.load_state_dict(load_file(output_dir / "checkpoints" / "step_3" / "model.safetensors"))
    exported = AutoModelForCTC.from_pretrained(output_dir / "model")
    assert sum(p.numel() for p in exported.parameters()) < 94_396_320
    torch.testing.assert_close(logits_of(exported), logits_of(gated), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_bench_reports_the_peak_memory_of_a_training_process(tmp_path, capsys):
    """`hjprune bench --training-overhead` on the base-size checkpoint: peak RSS of one training process."""
    save_ctc_checkpoint(
        tmp_path / "base", Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0, layerdrop=0.0)
    )
    arguments = ["--seconds", "1", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0"]
    arguments += ["--train-batch-size", "1", "--train-seconds", "1", "--threads", "1"]
    assert (
        bench.main(
            [
                str(tmp_path / "base"),
                "--training-overhead",
                *arguments,
                "--output-json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    [overhead] = json.loads((tmp_path / "b.json").read_text())["training_overhead"]
    memory = overhead["peak_rss_mib"]
    weights_mib = 94_396_320 * 4 / 2**20
    for kind in ("dense", "gated"):
        # Beyond the loaded model: gradients and two AdamW moments (3 copies of the weights) and
        # activations; well below what a second model in the same process would add.
        extra = memory[kind]["peak_mib"] - memory[kind]["after_loading_mib"]
        assert 3 * weights_mib < extra < 6 * weights_mib, memory
        assert memory[kind]["after_loading_mib"] > weights_mib
    assert "Peak resident memory (RSS) of one training process" in capsys.readouterr().out


PARENT = """
import sys
from hf_hjprune.recipes import load_recipe
from hf_hjprune.train import train_all

if __name__ == "__main__":  # spawned workers import this file
    runs = [load_recipe("tiny_asr", sys.argv[2:] + [f"output_dir={sys.argv[1]}/run{i}"]) for i in range(3)]
    train_all(runs, jobs=2)
"""


def test_workers_stop_when_their_parent_is_killed(tmp_path, cache_dir):
    # Three runs on two workers; the parent is killed (SIGKILL) while the first two train. The workers
    # get SIGTERM (checkpoint, stop), and the queued third run is never started.
    load_source("synthetic", **SIZES, cache_dir=cache_dir)
    (tmp_path / "parent.py").write_text(PARENT)
    overrides = quick(cache_dir, tmp_path / "unused", "max_steps=400", "checkpoint_steps=0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path), *overrides],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        started = [tmp_path / f"run{i}" / "metrics.jsonl" for i in range(3)]
        deadline = time.monotonic() + 300
        while sum(path.is_file() for path in started) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(path.is_file() for path in started) == 2, "two runs should be training"
        workers = [int(pid) for pid in subprocess.run(["pgrep", "-s", str(parent.pid)], capture_output=True,
                                                       text=True).stdout.split() if int(pid) != parent.pid]  # fmt: skip
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 120
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived their parent"
        stopped = [path.parent for path in started if path.is_file()]
        assert all(checkpoints(run) for run in stopped)  # each stopped run left a checkpoint to resume
        assert sum((tmp_path / f"run{i}").exists() for i in range(3)) == 2  # the queued run never started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, monkeypatch, caplog, native):
    # Emulated bf16 autocast made a training step ~9x slower than fp32 on an AVX2 CPU.
    monkeypatch.setattr(train_module, "cpu_computes_natively", lambda precision: native)
    recipe = load_recipe("tiny_asr", ["mixed_precision=bf16"])
    with caplog.at_level(logging.WARNING):
        accelerator = train_module.build_accelerator(recipe, tmp_path, [])
    assert accelerator.mixed_precision == "bf16"  # the recipe's choice stands
    warned = [r.getMessage() for r in caplog.records if "without native bf16" in r.getMessage()]
    assert bool(warned) == (not native)
    assert all("mixed_precision: no" in message for message in warned)
    fp32 = train_module.build_accelerator(load_recipe("tiny_asr", ['mixed_precision="no"']), tmp_path, [])
    assert fp32.mixed_precision == "no"


@pytest.mark.parametrize("native", [False, True])
def test_the_demo_recipes_train_in_bf16_only_where_the_cpu_computes_it(tmp_path, monkeypatch, native):
    monkeypatch.setattr(train_module, "cpu_computes_natively", lambda precision: native)
    for name in ("asr_dense", "asr_hjmac", "slu_dense", "slu_hjmac"):
        recipe = load_recipe(f"demo_{name}")
        assert recipe.mixed_precision == "auto"
        assert train_module.build_accelerator(recipe, tmp_path, []).mixed_precision == (
            "bf16" if native else "no"
        )
    assert train_module.resolve_precision("fp16") == "fp16"  # an explicit choice is never changed


def test_the_precision_benchmark_times_both_precisions():
    from hf_hjprune.benchmarks import precision

    times = precision.measure(threads=1, repeats=1, steps=1, batch=1, seconds=0.2)
    assert set(times) == {"fp32", "bf16"} and all(value > 0 for value in times.values())
