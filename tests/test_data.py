"""The synthetic spoken-command corpus, eSpeak NG synthesis and robust audio loading."""

import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from hf_hjprune.data import (
    AUDIO_ERROR_REASONS,
    INTENTS,
    SCENARIOS,
    SPLITS,
    TEST_ONLY_TEMPLATES,
    AudioError,
    SpeechSynthesisError,
    SynthesisRequest,
    build_corpus,
    load_audio,
    load_corpus,
    speech_synth,
    synthesize,
    synthesize_batch,
)
from hf_hjprune.data import corpus as corpus_module

SIZES = {"num_train": 30, "num_validation": 10, "num_test": 10}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "slurp"
    build_corpus(path, seed=0, **SIZES)
    return path


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    return load_corpus(corpus_dir)


def rows(dataset):
    return [{k: v for k, v in row.items() if k != "audio"} for row in dataset]


def wav_files(path):
    return sorted(p for p in path.rglob("*") if p.is_file())


# --- corpus ---------------------------------------------------------------------------------------------


def test_labels():
    assert len(INTENTS) >= 10 and len(set(INTENTS)) == len(INTENTS)
    assert {"iot_lights_on", "weather_query", "alarm_set", "play_music", "audio_volume_up"} <= set(INTENTS)
    assert {intent.split("_")[0] for intent in INTENTS} == set(SCENARIOS)
    assert {t.split("/")[0] for t in TEST_ONLY_TEMPLATES} == set(INTENTS)


def test_columns_and_sizes(corpus):
    assert list(corpus) == list(SPLITS)
    assert {split: len(corpus[split]) for split in SPLITS} == {"train": 30, "validation": 10, "test": 10}
    assert corpus["train"].features["intent"].names == list(INTENTS)
    for split in SPLITS:
        for row in corpus[split]:
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", row["text"]), row["text"]
            intent = INTENTS[row["intent"]]
            assert row["scenario"] == intent.split("_")[0]
            assert row["template"].startswith(intent + "/")


def test_every_intent_in_train(corpus):
    assert set(corpus["train"]["intent"]) == set(range(len(INTENTS)))


def test_splits_are_disjoint(corpus):
    utterances = {split: {(r["text"], r["speaker"]) for r in corpus[split]} for split in SPLITS}
    assert not utterances["train"] & utterances["validation"]
    assert not utterances["train"] & utterances["test"]
    assert not utterances["validation"] & utterances["test"]
    seen_speakers = set(corpus["train"]["speaker"]) | set(corpus["validation"]["speaker"])
    assert not seen_speakers & set(corpus["test"]["speaker"])
    assert not TEST_ONLY_TEMPLATES & (
        set(corpus["train"]["template"]) | set(corpus["validation"]["template"])
    )


def test_audio_files(corpus, corpus_dir):
    for split in SPLITS:
        for row in corpus[split]:
            assert row["audio"].startswith(str(corpus_dir.resolve() / split))
            info = sf.info(row["audio"])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            audio = load_audio(row["audio"])
            assert audio.dtype == np.float32 and audio.ndim == 1
            assert 0.05 < np.abs(audio).max() <= 1.0
            assert row["duration"] == pytest.approx(len(audio) / 16000)
            assert 0.5 < row["duration"] < 5.0


def test_build_is_deterministic(corpus_dir, corpus, tmp_path):
    again = build_corpus(tmp_path / "again", seed=0, num_workers=1, **SIZES)
    for split in SPLITS:
        assert rows(again[split]) == rows(corpus[split])
        for a, b in zip(again[split]["audio"], corpus[split]["audio"], strict=True):
            np.testing.assert_array_equal(load_audio(a), load_audio(b))
    assert [p.read_bytes() for p in wav_files(tmp_path / "again")] == [
        p.read_bytes() for p in wav_files(corpus_dir)
    ]


def test_other_parameters_replace_the_corpus(corpus_dir, corpus, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(corpus_dir, path)
    other = build_corpus(path, seed=1, **SIZES)
    assert other["train"]["text"] != corpus["train"]["text"]
    assert (path / "train" / "00000.wav").read_bytes() != (corpus_dir / "train" / "00000.wav").read_bytes()
    assert json.loads((path / "corpus.json").read_text())["params"]["seed"] == 1
    assert not list(tmp_path.glob(".copy.*"))


def test_cache_is_reused(corpus_dir, corpus):
    before = {p: p.stat().st_mtime_ns for p in wav_files(corpus_dir)}
    again = build_corpus(corpus_dir, seed=0, **SIZES)
    assert {p: p.stat().st_mtime_ns for p in wav_files(corpus_dir)} == before
    assert rows(again["train"]) == rows(corpus["train"])


def test_interrupted_builds_are_not_used(corpus_dir, corpus, tmp_path, monkeypatch):
    # A build that fails midway leaves neither the corpus nor its temporary directory.
    def fail(requests):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as m:
        m.setattr(corpus_module, "synthesize_batch", fail)
        with pytest.raises(RuntimeError, match="interrupted"):
            build_corpus(tmp_path / "slurp", seed=0, **SIZES)
    assert list(tmp_path.iterdir()) == []

    # A killed build leaves a temporary directory, which later builds ignore; a partial corpus without its
    # metadata (written last) is rebuilt.
    leftover = tmp_path / ".slurp.1234.partial"
    shutil.copytree(corpus_dir, leftover)
    (leftover / "train" / "00000.wav").write_bytes(b"truncated")
    partial = tmp_path / "slurp"
    (partial / "train").mkdir(parents=True)
    (partial / "train" / "00000.wav").write_bytes(b"truncated")
    rebuilt = build_corpus(partial, seed=0, **SIZES)
    assert rows(rebuilt["train"]) == rows(corpus["train"])
    assert (partial / "train" / "00000.wav").read_bytes() == (corpus_dir / "train" / "00000.wav").read_bytes()
    assert (leftover / "train" / "00000.wav").read_bytes() == b"truncated"


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        build_corpus(tmp_path / "mine", seed=0, **SIZES)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_load_corpus_requires_a_complete_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_corpus"):
        load_corpus(tmp_path)


# --- speech synthesis -----------------------------------------------------------------------------------


def test_synthesize():
    audio = synthesize("set an alarm for seven", voice="en-gb-scotland+f2", rate=180, pitch=60)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < len(audio) / 16000 < 3.0
    assert 0.05 < np.abs(audio).max() <= 1.0
    with pytest.raises(ValueError, match="voice"):
        synthesize("hello", voice="xx-yy")
    with pytest.raises(ValueError, match="variant"):
        synthesize("hello", voice="en-us+q9")


def test_missing_library_is_reported(monkeypatch):
    import espeakng_loader

    monkeypatch.setattr(speech_synth, "_ENGINE", None)
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nonexistent/libespeak-ng.so")
    with pytest.raises(SpeechSynthesisError, match="espeakng-loader"):
        synthesize("hello")


def test_synthesize_batch_is_reproducible():
    requests = [
        SynthesisRequest("turn the volume up", v, 170, 50, seed=i)
        for i, v in enumerate(["en-us+f5", "en-gb+m1"])
    ]
    first, second = synthesize_batch(requests), synthesize_batch(requests)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# --- audio loading --------------------------------------------------------------------------------------


def sine(seconds, sr, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_stereo_44k(tmp_path):
    path = tmp_path / "stereo.wav"
    left = sine(1.0, 44100)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert np.abs(audio).max() == pytest.approx(0.25, abs=0.01)  # the mean of the two channels


def test_load_8k_bytes_and_dict(tmp_path):
    path = tmp_path / "narrow.flac"
    sf.write(path, sine(0.5, 8000), 8000)
    assert load_audio(path).shape == (8000,)
    assert load_audio(path.read_bytes()).shape == (8000,)
    assert load_audio({"path": str(path), "bytes": None}).shape == (8000,)
    assert load_audio(path, target_sr=8000).shape == (4000,)


@pytest.mark.parametrize("reason", AUDIO_ERROR_REASONS)
def test_load_errors(tmp_path, reason):
    path = tmp_path / f"bad_{reason}.wav"
    if reason == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif reason == "empty":
        path.write_bytes(b"")
    elif reason == "nan":
        audio = sine(0.5, 16000)
        audio[100] = np.nan
        sf.write(path, audio, 16000, subtype="FLOAT")
    elif reason == "too_short":
        sf.write(path, sine(0.01, 16000), 16000)
    elif reason == "truncated":
        sf.write(path, sine(0.5, 16000), 16000)
        path.write_bytes(path.read_bytes()[:9000])  # the header still announces 0.5 s
    elif reason == "too_long":
        sf.write(path, sine(2.0, 16000), 16000)
    else:
        sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(AudioError) as info:
        load_audio(path, max_seconds=1.5)
    assert isinstance(info.value, ValueError)
    assert info.value.reason == reason
    assert path.name in str(info.value)


def test_load_edge_cases(tmp_path):
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="header_only.wav") as info:
        load_audio(path)
    assert info.value.reason == "empty"

    path = tmp_path / "short_8k.wav"
    sf.write(path, sine(150 / 8000, 8000), 8000)  # 300 samples once resampled to 16 kHz
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason == "too_short"

    with pytest.raises(AudioError, match="<bytes>") as info:
        load_audio(b"not audio at all")
    assert info.value.reason == "corrupt"

    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
