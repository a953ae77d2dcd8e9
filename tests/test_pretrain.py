"""Self-supervised pretraining: the broad-speech corpus, augmentation, frame targets, and `hjprune pretrain`
end to end (both objectives, iteration 2, resume, two processes, bad input)."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import finish, run_in_session
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCTC, HubertConfig, HubertModel

from hf_hjprune import cli
from hf_hjprune.data import augment
from hf_hjprune.data.broad_speech import build_broad_speech, plan_utterances
from hf_hjprune.data.corpus import _TEMPLATES, held_out_speakers
from hf_hjprune.errors import HJPruneInputError
from hf_hjprune.pretrain import (
    PretrainingCollapsedError,
    PretrainRecipe,
    WindowSampler,
    check_collapse,
    clean_phonemes,
    export_checkpoint,
    load_pretrain_recipe,
    pretrain,
    ship_command,
)
from hf_hjprune.recipes import load_recipe
from hf_hjprune.start_models import resolve_model
from hf_hjprune.targets import Codebook, TargetError, mfcc_features
from hf_hjprune.train import train

CORPUS = {"hours": 0.02, "seed": 0, "shard_utterances": 10, "validation_utterances": 4}


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    """One tiny broad-speech corpus for the module (built once, then reused)."""
    return tmp_path_factory.mktemp("broad_speech")


def quick(corpus_cache, output_dir, *overrides):
    return [f"data_options.cache_dir={corpus_cache}", f"output_dir={output_dir}", *overrides]


def run(corpus_cache, output_dir, *overrides, resume=False):
    return pretrain(
        load_pretrain_recipe("tiny_test", quick(corpus_cache, output_dir, *overrides)), resume=resume
    )


def pretrain_export(corpus_cache, output_dir, step, *overrides):
    return export_checkpoint(
        load_pretrain_recipe("tiny_test", quick(corpus_cache, output_dir, *overrides)), step
    )


# --- data ------------------------------------------------------------------------------------------------


def test_broad_speech_is_broad_deterministic_and_resumable(tmp_path):
    corpus = build_broad_speech(tmp_path / "a", hours=0.02, shard_utterances=10, validation_utterances=4)
    assert len(corpus.train.lengths) == 20 and len(corpus.validation.lengths) == 4
    assert corpus.hours > 0 and all(length > 1600 for length in corpus.train.lengths)
    assert 0.49 < max(float(np.abs(corpus.train.audio(i)).max()) for i in range(20)) <= 0.5

    # A killed build (one shard missing) is completed; the result equals a fresh build.
    (tmp_path / "a" / "shard_00001.jsonl").unlink()
    (tmp_path / "a" / "broad_speech.json").unlink()
    rebuilt = build_broad_speech(tmp_path / "a", hours=0.02, shard_utterances=10, validation_utterances=4)
    other = build_broad_speech(tmp_path / "b", hours=0.02, shard_utterances=10, validation_utterances=4)
    for i in range(20):
        np.testing.assert_array_equal(rebuilt.train.audio(i), other.train.audio(i))
    with pytest.raises(ValueError, match="built with other parameters"):
        build_broad_speech(tmp_path / "a", hours=0.02, seed=1, shard_utterances=10, validation_utterances=4)


def test_broad_speech_text_and_voices_are_not_the_command_tasks():
    rows = plan_utterances([0, 1, 0], 600)
    assert {row["kind"] for row in rows} == {"english", "language", "babble"}
    assert len({row["language"] for row in rows}) > 20
    held_out = set(held_out_speakers(seed=0))
    assert not any(row["voice"] in held_out for row in rows)  # the command corpus's test voices stay unheard
    prefixes = {t.split("{")[0].strip() for ts in _TEMPLATES.values() for t in ts}
    prefixes = {prefix for prefix in prefixes if len(prefix.split()) >= 3}  # e.g. "turn on the lights in the"
    assert not any(prefix in row["text"] for row in rows for prefix in prefixes)
    assert plan_utterances([0, 1, 0], 5) == rows[:5]  # deterministic per random stream


def test_augmentation_keeps_time_aligned():
    rng = np.random.default_rng(0)
    clean = np.sin(np.arange(16000) / 5).astype(np.float32) * 0.3
    degraded = augment.Augmentation(noise_prob=1, reverb_prob=1, band_limit_prob=1, mix_prob=1).degrade(
        clean, rng, lambda n: np.ones(n, dtype=np.float32) * 0.1
    )
    assert degraded.shape == clean.shape and degraded.dtype == np.float32
    assert not np.allclose(degraded, clean)
    assert len(augment.speed_perturb(clean, 1.1)) == pytest.approx(16000 / 1.1, abs=2)
    np.testing.assert_array_equal(augment.Augmentation.none().degrade(clean, rng), clean)
    reverberated = augment.reverberate(clean, rng, 0.5)
    assert np.mean(reverberated**2) == pytest.approx(np.mean(clean**2), rel=1e-3)


def test_window_sampler_crosses_utterance_boundaries():
    class Source:
        lengths = [3, 4, 5]

        def audio(self, i):
            return np.arange(sum(self.lengths[:i]), sum(self.lengths[: i + 1]), dtype=np.float32)

    sampler = WindowSampler(Source())
    rng = np.random.default_rng(0)
    for _ in range(20):
        window = sampler.window(rng, 6)
        np.testing.assert_array_equal(window, np.arange(window[0], window[0] + 6))
    with pytest.raises(ValueError, match="less than one"):
        sampler.window(rng, 13)


# --- targets ---------------------------------------------------------------------------------------------


def test_mfcc_frames_are_the_encoders_frames():
    model = HubertModel(HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, conv_dim=(4,) * 7))  # fmt: skip
    for length in (400, 719, 720, 16000, 48001):
        features = mfcc_features(np.random.default_rng(length).standard_normal(length).astype(np.float32))
        assert features.shape == (int(model._get_feat_extract_output_lengths(torch.tensor(length))), 39)
    with pytest.raises(TargetError, match="shorter than one MFCC frame"):
        mfcc_features(np.zeros(399, dtype=np.float32))


def test_codebook_labels_the_nearest_cluster(tmp_path):
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    features = (centers[rng.integers(3, size=600)] + rng.standard_normal((600, 2)) * 0.1).astype(np.float32)
    codebook = Codebook.fit(features, 3, seed=0)
    labels = codebook.assign(torch.from_numpy(centers).float())
    assert sorted(labels.tolist()) == [0, 1, 2]
    codebook.save(tmp_path / "codebook.npz")
    assert torch.equal(Codebook.load(tmp_path / "codebook.npz").assign(features), codebook.assign(features))
    with pytest.raises(TargetError, match="cannot make 1000 clusters"):
        Codebook.fit(features, 1000)


# --- pretraining -----------------------------------------------------------------------------------------


def test_pretrain_writes_an_encoder_that_fine_tunes(tmp_path, corpus_cache):
    summary = run(corpus_cache, tmp_path / "ssl")
    assert summary["steps"] == 6 and summary["objective"] == "hubert" and summary["family"] == "hubert"
    assert summary["audio_hours_seen"] == pytest.approx(6 * 2 * 1.0 / 3600)
    assert set(summary["validation"]) >= {"masked_loss", "masked_accuracy"}
    assert summary["macs"]["cnn"] > 0 and summary["data"]["hours"] > 0
    lines = [json.loads(line) for line in (tmp_path / "ssl" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(line["train/loss"]) for line in lines if "train/loss" in line)
    validated = [line["step"] for line in lines if "validation/masked_loss" in line]
    assert validated == [3, 6]  # every eval_steps, and the last step's (the final validation) once

    model_dir = tmp_path / "ssl" / "model"
    encoder = AutoModel.from_pretrained(model_dir)
    assert type(encoder).__name__ == "HubertModel" and encoder.config.mask_time_prob == 0.05
    assert AutoModelForCTC.from_pretrained(model_dir, vocab_size=8).hubert.encoder.layers[0] is not None

    # `hjprune train` takes it as its start model, with the pretrained weights.
    run_dir = tmp_path / "finetune"
    overrides = [f"model={model_dir}", "max_steps=1", "batch_size=4", "eval_steps=0", f"output_dir={run_dir}",
                 "data_options.num_train=16", "data_options.num_validation=4", "data_options.num_test=4",
                 f"data_options.cache_dir={tmp_path / 'corpus'}", "model_config={}", "variant=none"]  # fmt: skip
    train(load_recipe("tiny_asr", overrides))
    ssl_weights = load_file(model_dir / "model.safetensors")
    tuned = AutoModelForCTC.from_pretrained(run_dir / "model")
    assert tuned.config.hidden_size == encoder.config.hidden_size
    assert not torch.equal(tuned.hubert.feature_projection.projection.weight,
                           torch.zeros_like(ssl_weights["feature_projection.projection.weight"]))  # fmt: skip


def test_init_random_keeps_the_shape_but_not_the_weights(tmp_path, corpus_cache):
    run(corpus_cache, tmp_path / "ssl", "max_steps=2", "eval_steps=0", "checkpoint_steps=0")
    model_dir = tmp_path / "ssl" / "model"
    common = [f"model={model_dir}", "max_steps=1", "batch_size=4", "eval_steps=0", "variant=none",
              "data_options.num_train=16", "data_options.num_validation=4", "data_options.num_test=4",
              f"data_options.cache_dir={tmp_path / 'corpus'}", "model_config={}", "learning_rate=1e-12"]  # fmt: skip
    pretrained = train(load_recipe("tiny_asr", [*common, f"output_dir={tmp_path / 'a'}"]))
    scratch = train(load_recipe("tiny_asr", [*common, "init=random", f"output_dir={tmp_path / 'b'}"]))
    assert pretrained["params"] == scratch["params"] and pretrained["macs"] == scratch["macs"]
    ssl = load_file(model_dir / "model.safetensors")["encoder.layers.0.feed_forward.output_dense.weight"]
    a = AutoModelForCTC.from_pretrained(tmp_path / "a" / "model").hubert.encoder.layers[0].feed_forward
    b = AutoModelForCTC.from_pretrained(tmp_path / "b" / "model").hubert.encoder.layers[0].feed_forward
    torch.testing.assert_close(a.output_dense.weight, ssl)  # learning rate ~0: unchanged
    assert not torch.allclose(b.output_dense.weight, ssl)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, corpus_cache):
    full = run(corpus_cache, tmp_path / "full")
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_3", killed / "checkpoints" / "step_3")
    shutil.copy(tmp_path / "full" / "codebook.npz", killed / "codebook.npz")
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:6]) + "\n")  # logged past step 3 before dying
    resumed = run(corpus_cache, killed, resume=True)

    expected = load_file(tmp_path / "full" / "model" / "model.safetensors")
    actual = load_file(killed / "model" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert resumed["validation"] == pytest.approx(full["validation"])
    assert [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()] == [
        json.loads(line)["step"] for line in lines
    ]


def test_iteration_two_clusters_a_layer_of_the_first(tmp_path, corpus_cache):
    run(corpus_cache, tmp_path / "iter1", "max_steps=2", "eval_steps=0", "checkpoint_steps=0")
    summary = run(corpus_cache, tmp_path / "iter2", "max_steps=2", "eval_steps=0", "checkpoint_steps=0",
                  "targets=layer", "target_layer=1", f"init_from={tmp_path / 'iter1' / 'model'}")  # fmt: skip
    assert summary["targets"] == "layer" and summary["steps"] == 2
    assert Codebook.load(tmp_path / "iter2" / "codebook.npz").centroids.shape == (8, 32)  # hidden size 32


def test_contrastive_objective_and_collapse_detection(tmp_path, corpus_cache):
    summary = run(corpus_cache, tmp_path / "w2v", "family=wav2vec2", "objective=wav2vec2", "max_steps=2",
                  "eval_steps=0", "checkpoint_steps=0", "num_negatives=5",
                  "model_config.codevector_dim=16", "model_config.proj_codevector_dim=16",
                  "model_config.num_codevectors_per_group=8")  # fmt: skip
    assert "codevector_perplexity" in summary["validation"]
    assert type(AutoModel.from_pretrained(tmp_path / "w2v" / "model")).__name__ == "Wav2Vec2Model"

    recipe = PretrainRecipe(max_steps=100, warmup_ratio=0.1, collapse_perplexity=4.0)
    low = {"train/codevector_perplexity": 2.0}
    assert check_collapse(recipe, 5, low, 0) == 0  # still warming up
    assert check_collapse(recipe, 50, {"train/codevector_perplexity": 30.0}, 2) == 0
    with pytest.raises(PretrainingCollapsedError, match="collapsed at step 50"):
        check_collapse(recipe, 50, low, check_collapse(recipe, 40, low, 1))


def test_supervised_phoneme_ctc_fallback(tmp_path, corpus_cache):
    summary = run(corpus_cache, tmp_path / "ctc", "objective=ctc", "mask_time_prob=0.05", "mask_time_length=2",
                  "max_steps=3", "eval_steps=0")  # fmt: skip
    assert 0.0 <= summary["validation"]["phoneme_error_rate"] and summary["objective"] == "ctc"
    vocabulary = json.loads((tmp_path / "ctc" / "phoneme_ctc" / "vocab.json").read_text())
    assert "ə" in vocabulary and "ˈ" not in vocabulary  # IPA phonemes, stress marks dropped
    assert type(AutoModel.from_pretrained(tmp_path / "ctc" / "model")).__name__ == "HubertModel"
    exported = pretrain_export(corpus_cache, tmp_path / "ctc", "step_3", "objective=ctc", "mask_time_prob=0.05",
                               "mask_time_length=2", "max_steps=3")  # fmt: skip
    for name, tensor in load_file(exported / "model.safetensors").items():
        torch.testing.assert_close(tensor, load_file(tmp_path / "ctc" / "model" / "model.safetensors")[name])
    assert clean_phonemes("(en)fˈeɪz(ko) ˌa-b?") == "feɪz ab"


def test_supervised_english_text_ctc_is_a_speech_recogniser(tmp_path, corpus_cache):
    summary = run(corpus_cache, tmp_path / "ctc", "objective=ctc", "ctc_targets=text", "languages=[en]",
                  "mask_time_prob=0.05", "mask_time_length=2", "max_steps=2", "eval_steps=0", "checkpoint_steps=0")  # fmt: skip
    assert "character_error_rate" in summary["validation"]
    model_dir = tmp_path / "ctc" / "model"
    vocabulary = json.loads((model_dir / "vocab.json").read_text())
    assert set(vocabulary) - {"<pad>", "<unk>", "|"} <= set("abcdefghijklmnopqrstuvwxyz'")
    recogniser = AutoModelForCTC.from_pretrained(model_dir)
    assert recogniser.lm_head.out_features == len(vocabulary)
    # Fine-tuning keeps its head: the command corpus is spelled with the same characters.
    overrides = [f"model={model_dir}", "model_config={}", "variant=none", "max_steps=1", "batch_size=4",
                 "eval_steps=0", "learning_rate=1e-12", "head_learning_rate=1e-12", f"output_dir={tmp_path / 'tuned'}",
                 "data_options.num_train=16", "data_options.num_validation=4", "data_options.num_test=4",
                 f"data_options.cache_dir={tmp_path / 'corpus'}"]  # fmt: skip
    train(load_recipe("tiny_asr", overrides))
    tuned = AutoModelForCTC.from_pretrained(tmp_path / "tuned" / "model")
    torch.testing.assert_close(tuned.lm_head.weight, recogniser.lm_head.weight)


def test_accelerate_launch_two_processes(tmp_path, corpus_cache):
    run(
        corpus_cache, tmp_path / "warm", "max_steps=1", "eval_steps=0", "checkpoint_steps=0"
    )  # builds the corpus
    output_dir = tmp_path / "launch"
    overrides = quick(corpus_cache, output_dir, "max_steps=3", "eval_steps=0")
    command = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "hf_hjprune.pretrain", "tiny_test", *(a for o in overrides for a in ("--set", o))]  # fmt: skip
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_in_session(command, environment, timeout=900)  # a timeout kills the launcher's workers too
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["audio_hours_seen"] == pytest.approx(3 * 2 * 2 / 3600)
    AutoModel.from_pretrained(output_dir / "model")


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, corpus_cache):
    """`hjprune pretrain` stops on SIGTERM as `hjprune train` does: a checkpoint of the last step, a one-line
    message, exit status 143, and `--resume` continues from it."""
    run(corpus_cache, tmp_path / "warm", "max_steps=1", "eval_steps=0", "checkpoint_steps=0")  # the corpus
    output_dir = tmp_path / "run"
    overrides = quick(corpus_cache, output_dir, "max_steps=100000", "eval_steps=0", "checkpoint_steps=0")
    command = [
        sys.executable,
        "-m",
        "hf_hjprune.pretrain",
        "tiny_test",
        *(a for o in overrides for a in ("--set", o)),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    metrics, deadline = output_dir / "metrics.jsonl", time.monotonic() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = finish(process, timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved in (\S+)", stderr)
    assert stopped and "Traceback" not in stderr, stderr[-3000:]
    assert (output_dir / "checkpoints" / f"step_{stopped.group(1)}").is_dir()
    assert not (output_dir / "summary.json").exists()


# --- bad input -------------------------------------------------------------------------------------------


def write_folder(folder, good=3, bad=True):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        sf.write(folder / f"good{i}.wav", (rng.standard_normal(24000) * 0.1).astype(np.float32), 16000)
    if bad:
        (folder / "empty.wav").write_bytes(b"")
        (folder / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
        sf.write(folder / "silent.flac", np.zeros(16000, dtype=np.float32), 16000)


def test_a_folder_of_audio_with_bad_files(tmp_path):
    folder = tmp_path / "audio"
    write_folder(folder, good=3)
    summary = pretrain(load_pretrain_recipe("tiny_test", [
        f"data={folder}", "data_options={}", "max_steps=2", "eval_steps=0", "checkpoint_steps=0",
        "kmeans_utterances=3", f"output_dir={tmp_path / 'run'}"]))  # fmt: skip
    assert summary["data"]["skipped_files"] == {"empty": 1, "corrupt": 1, "silent": 1}

    empty = tmp_path / "bad_only"
    write_folder(empty, good=0)
    with pytest.raises(ValueError, match="0 usable audio files of 3"):
        pretrain(
            load_pretrain_recipe(
                "tiny_test", [f"data={empty}", "data_options={}", f"output_dir={tmp_path / 'x'}"]
            )
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["objective=bert"], "objective must be one of hubert, wav2vec2"),
        (["objective=wav2vec2"], "needs the wav2vec2 family"),
        (["targets=layer"], "targets: layer needs a target_model"),
        (["augmentation.reverb=0.5"], r"unknown augmentation field\(s\) \['reverb'\]"),
        (["num_clusters=100000"], "cannot make 100000 clusters"),
        (["crop_seconds=0.15"], "fewer than mask_time_length"),
        (["colour=blue"], r"unknown pretraining recipe key\(s\) \['colour'\]"),
    ],
)
def test_bad_recipes_fail_before_training(tmp_path, corpus_cache, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(corpus_cache, tmp_path / "run", *overrides)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_pretrain_error_is_brief(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", "tiny_test", "--set", "objective=bert", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "objective must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_each_family_has_the_recipes_of_its_start_model(family):
    name = f"tiny-{family}-asr"
    stage1, stage2 = (load_pretrain_recipe(f"tiny_{family}_{stage}") for stage in ("phoneme_ctc", "asr"))
    assert stage1.family == family and stage2.init_from == f"{stage1.output_dir}/model"
    assert ship_command(name) == (
        f"hjprune pretrain tiny_{family}_phoneme_ctc && hjprune pretrain tiny_{family}_asr"
        f" && hjprune pretrain tiny_{family}_asr --ship {name}"
    )
    # The same encoder shape and training in every family: the zoo compares the families at one size. The
    # shipped HuBERT model was made in bf16 on a CPU that computes it natively; the others use bf16 only there (auto).
    hubert = load_pretrain_recipe("tiny_hubert_phoneme_ctc")
    same_as_hubert = dataclasses.replace(stage1, family="hubert", output_dir=hubert.output_dir)
    assert dataclasses.replace(same_as_hubert, mixed_precision=hubert.mixed_precision) == hubert


def test_a_missing_start_model_says_how_to_make_it():
    assert ship_command("tiny-nothing") is None
    with pytest.raises(HJPruneInputError, match=r"shipped: pretrained:tiny-hubert-asr.*\Z"):
        resolve_model("pretrained:tiny-nothing")
