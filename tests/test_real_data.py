"""LibriSpeech and SLURP loaders, on small local copies laid out like their Hub repositories."""

import io
import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, IterableDatasetDict, Sequence, Value

from hf_hjprune.data import load_audio
from hf_hjprune.data.real import (
    ColumnMapping,
    load_librispeech,
    load_slurp,
    to_lowercase_letters,
)

SR = 16_000
SOURCE_AUDIO = {"bytes": Value("binary"), "path": Value("string")}

# openslr/librispeech_asr: one directory of Parquet shards per split, under a directory per config.
LIBRISPEECH_README = """---
configs:
- config_name: all
  data_files:
  - split: train.clean.100
    path: all/train.clean.100/*
  - split: validation.clean
    path: all/validation.clean/*
  - split: test.clean
    path: all/test.clean/*
  - split: test.other
    path: all/test.other/*
- config_name: clean
  data_files:
  - split: train.100
    path: clean/train.100/*
  - split: validation
    path: clean/validation/*
  - split: test
    path: clean/test/*
---
"""
LIBRISPEECH_FEATURES = {
    "file": Value("string"),
    "audio": SOURCE_AUDIO,
    "text": Value("string"),
    "speaker_id": Value("int64"),
    "chapter_id": Value("int64"),
    "id": Value("string"),
}
LIBRISPEECH_SPLITS = {
    "all": ("train.clean.100", "validation.clean", "test.clean", "test.other"),
    "clean": ("train.100", "validation", "test"),
}

# marcel-gohsen/slurp: data/{split}-0000n-of-0000m.parquet, splits train, devel and test.
SLURP_README = """---
dataset_info:
  features:
  - name: id
    dtype: int64
  - name: transcript
    dtype: string
  - name: audio
    dtype: audio
  - name: intent
    dtype: string
  - name: 'slots:'
    sequence: string
  - name: cam
    dtype: string
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
  - split: devel
    path: data/devel-*
---
"""
SLURP_FEATURES = {
    "id": Value("int64"),
    "transcript": Value("string"),
    "audio": SOURCE_AUDIO,
    "intent": Value("string"),
    "slots:": Sequence(Value("string")),
    "cam": Value("string"),
}
SLURP_ROWS = {
    "train": [
        (1, "wake me up at eight o'clock", "alarm_set"),
        (2, "turn the lights off", "iot_hue_lightoff"),
    ],
    "devel": [(3, "what's the weather like", "weather_query")],
    # As in the mirrors, some intents lost their scenario.
    "test": [(4, "will it rain today", "query"), (5, "dim the lights", "hue_lightdim")],
}
SLURP_ANNOTATIONS = {
    1: ("alarm", "set"),
    2: ("iot", "hue_lightoff"),
    3: ("weather", "query"),
    4: ("weather", "query"),
    5: ("iot", "hue_lightdim"),
}


def flac(freq: float, seconds: float = 0.5, sample_rate: int = SR) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t), sample_rate, format="FLAC")
    return buffer.getvalue()


def write_parquet(path, columns: dict, features: dict) -> None:
    """Write a Parquet shard whose `audio` column is an `Audio` feature, as `push_to_hub` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Cast from a struct: encoding into `Audio` directly would need torchcodec.
    dataset = Dataset.from_dict(columns, features=Features(features))
    dataset.cast_column("audio", Audio(sampling_rate=SR)).to_parquet(str(path))


@pytest.fixture(scope="module")
def librispeech_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("librispeech_asr")
    (root / "README.md").write_text(LIBRISPEECH_README)
    for config, splits in LIBRISPEECH_SPLITS.items():
        for index, split in enumerate(splits):
            ids = [f"{103 + index}-1240-{i:04d}" for i in range(2)]
            columns = {
                "file": [f"{uid}.flac" for uid in ids],
                "audio": [{"bytes": flac(200 + 100 * i), "path": f"{uid}.flac"} for i, uid in enumerate(ids)],
                "text": [f"{split.upper()} CHAPTER ONE", "IT'S A  FINE DAY"],
                "speaker_id": [103 + index] * 2,
                "chapter_id": [1240] * 2,
                "id": ids,
            }
            write_parquet(root / config / split / "0000.parquet", columns, LIBRISPEECH_FEATURES)
    return root


@pytest.fixture(scope="module")
def slurp_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurp")
    (root / "README.md").write_text(SLURP_README)
    for split, rows in SLURP_ROWS.items():
        columns = {
            "id": [uid for uid, _, _ in rows],
            "transcript": [text for _, text, _ in rows],
            "audio": [{"bytes": flac(300 + uid), "path": f"audio-{uid}-headset.flac"} for uid, _, _ in rows],
            "intent": [intent for _, _, intent in rows],
            "slots:": [[] for _ in rows],
            "cam": ["headset"] * len(rows),
        }
        write_parquet(root / "data" / f"{split}-00000-of-00001.parquet", columns, SLURP_FEATURES)
    return root


@pytest.fixture(scope="module")
def slurp_annotations(tmp_path_factory):
    """SLURP's own annotation files (dataset/slurp/{split}.jsonl), reduced to the fields the loader reads."""
    root = tmp_path_factory.mktemp("slurp_annotations")
    for split, rows in SLURP_ROWS.items():
        with open(root / f"{split}.jsonl", "w") as f:
            for uid, text, intent in rows:
                scenario, action = SLURP_ANNOTATIONS[uid]
                entry = {"slurp_id": uid, "sentence": text, "intent": intent, "scenario": scenario}
                f.write(json.dumps({**entry, "action": action, "recordings": []}) + "\n")
    return root


def assert_decodes(row) -> None:
    audio = load_audio(row["audio"])
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == SR // 2


# --- text -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HE HOPED THERE WOULD BE STEW FOR DINNER", "he hoped there would be stew for dinner"),
        ("IT'S  A  FINE DAY ", "it's a fine day"),
        ("Hello,world! Don\u2019t go.", "hello world don't go"),
        ("Café naïve", "cafe naive"),
        ("wake me at 7", "wake me at"),
        ("", ""),
    ],
)
def test_to_lowercase_letters(text, expected):
    assert to_lowercase_letters(text) == expected


# --- LibriSpeech ----------------------------------------------------------------------------------------


def test_librispeech_schema(librispeech_dir, tmp_path):
    ds = load_librispeech(name_or_path=librispeech_dir, cache_dir=str(tmp_path))
    assert isinstance(ds, DatasetDict) and list(ds) == ["train", "validation", "test"]
    for split in ds.values():
        assert split.column_names == ["audio", "text", "speaker"]
        assert split.features["audio"] == Audio(decode=False)
        assert split.features["speaker"] == Value("string")
    assert ds["train"]["text"] == ["train clean chapter one", "it's a fine day"]
    assert ds["validation"]["text"][0] == "validation clean chapter one"
    assert ds["test"]["text"][0] == "test clean chapter one"
    row = ds["train"][0]
    assert row["speaker"] == "103"
    assert row["audio"]["path"] == "103-1240-0000.flac" and row["audio"]["bytes"][:4] == b"fLaC"
    assert_decodes(row)


def test_librispeech_several_test_splits(librispeech_dir, tmp_path):
    ds = load_librispeech(
        test_split=["test.clean", "test.other"], name_or_path=librispeech_dir, cache_dir=str(tmp_path)
    )
    assert list(ds) == ["train", "validation", "test", "test_other"]
    assert ds["test"]["text"][0] == "test clean chapter one"
    assert ds["test_other"]["text"][0] == "test other chapter one"


def test_librispeech_clean_config(librispeech_dir, tmp_path):
    ds = load_librispeech(
        "train.100", "validation", "test", librispeech_dir, config="clean", cache_dir=str(tmp_path)
    )
    assert ds["train"]["text"][0] == "train chapter one"  # digits are dropped
    assert ds["test"]["text"][0] == "test chapter one"


def test_librispeech_reads_only_requested_splits(librispeech_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(librispeech_dir, root)
    (root / "all" / "test.other" / "0000.parquet").write_bytes(b"not parquet")
    ds = load_librispeech(name_or_path=root, cache_dir=str(tmp_path / "cache"))
    assert ds["test"].num_rows == 2


def test_librispeech_keeps_raw_text(librispeech_dir, tmp_path):
    ds = load_librispeech(name_or_path=librispeech_dir, normalize_text=False, cache_dir=str(tmp_path))
    assert ds["train"]["text"][1] == "IT'S A  FINE DAY"


def test_librispeech_streaming(librispeech_dir, tmp_path):
    ds = load_librispeech(name_or_path=librispeech_dir, streaming=True, cache_dir=str(tmp_path))
    assert isinstance(ds, IterableDatasetDict) and list(ds) == ["train", "validation", "test"]
    rows = list(ds["train"])
    assert [r["text"] for r in rows] == ["train clean chapter one", "it's a fine day"]
    assert set(rows[0]) == {"audio", "text", "speaker"} and rows[0]["speaker"] == "103"
    assert_decodes(rows[0])


def test_missing_split(librispeech_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\['train\.clean\.360'\] not found") as err:
        load_librispeech("train.clean.360", name_or_path=librispeech_dir, cache_dir=str(tmp_path))
    assert "available splits: ['train.clean.100', 'validation.clean', 'test.clean', 'test.other']" in str(
        err.value
    )
    with pytest.raises(
        ValueError, match=r"\['train\.clean\.100', 'validation\.clean', 'test\.clean'\] not found"
    ):
        load_librispeech(name_or_path=librispeech_dir, config="clean", cache_dir=str(tmp_path))


def test_missing_column(librispeech_dir, tmp_path):
    columns = ColumnMapping(text="transcription", speaker="speaker")
    with pytest.raises(ValueError, match=r"\['speaker', 'transcription'\] not found") as err:
        load_librispeech(name_or_path=librispeech_dir, columns=columns, cache_dir=str(tmp_path))
    assert "available columns: ['file', 'audio', 'text', 'speaker_id', 'chapter_id', 'id']" in str(err.value)


def test_clashing_test_split_names(librispeech_dir):
    with pytest.raises(ValueError, match="already taken"):
        load_librispeech(test_split=["test.clean", "train"], name_or_path=librispeech_dir)


# --- SLURP ----------------------------------------------------------------------------------------------


def test_slurp_schema(slurp_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_hjprune.data.real"):
        ds = load_slurp(slurp_dir, cache_dir=str(tmp_path))
    assert list(ds) == ["train", "validation", "test"]
    for split in ds.values():
        assert split.column_names == ["audio", "text", "intent"]
        assert split.features["intent"] == Value("string")
    assert ds["train"]["intent"] == ["alarm_set", "iot_hue_lightoff"]
    assert ds["train"]["text"][0] == "wake me up at eight o'clock"
    assert ds["validation"]["intent"] == ["weather_query"]
    assert ds["test"]["intent"] == ["query", "hue_lightdim"]
    assert ds["test"][0]["audio"]["path"] == "audio-4-headset.flac"
    assert_decodes(ds["validation"][0])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "2 utterance(s)" in warnings[0] and ":test" in warnings[0]


def test_slurp_annotations(slurp_dir, slurp_annotations, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_hjprune.data.real"):
        ds = load_slurp(slurp_dir, annotations=slurp_annotations, cache_dir=str(tmp_path))
    assert ds["test"]["intent"] == ["weather_query", "iot_hue_lightdim"]
    assert ds["train"]["intent"] == ["alarm_set", "iot_hue_lightoff"]
    assert not caplog.records

    (tmp_path / "partial.jsonl").write_text(json.dumps({"slurp_id": 1, "scenario": "alarm", "action": "set"}))
    with pytest.raises(ValueError, match="Utterance id 2 of .*:train is not in the SLURP annotations"):
        load_slurp(slurp_dir, annotations=tmp_path / "partial.jsonl", cache_dir=str(tmp_path))


def test_slurp_streaming(slurp_dir, slurp_annotations, tmp_path):
    ds = load_slurp(slurp_dir, streaming=True, annotations=slurp_annotations, cache_dir=str(tmp_path))
    rows = list(ds["test"])
    assert [r["intent"] for r in rows] == ["weather_query", "iot_hue_lightdim"]
    assert set(rows[0]) == {"audio", "text", "intent"}
    assert_decodes(rows[0])


def test_slurp_scenario_action_layout(tmp_path):
    """A JSON-lines layout with relative audio paths, scenario and action columns and a speaker."""
    root = tmp_path / "slurp_jsonl"
    (root / "audio").mkdir(parents=True)
    for split, rows in {
        "train": SLURP_ROWS["train"],
        "dev": SLURP_ROWS["devel"],
        "test": SLURP_ROWS["test"],
    }.items():
        with open(root / f"{split}.jsonl", "w") as f:
            for uid, text, _ in rows:
                (root / "audio" / f"{uid}.flac").write_bytes(flac(300 + uid))
                scenario, action = SLURP_ANNOTATIONS[uid]
                entry = {"recording": f"audio/{uid}.flac", "sentence": text.upper(), "user_id": f"FO-{uid}"}
                f.write(json.dumps({**entry, "scenario": scenario, "action": action}) + "\n")
    columns = ColumnMapping(
        audio="recording", text="sentence", scenario="scenario", action="action", speaker="user_id"
    )
    ds = load_slurp(
        root,
        validation_split="validation",
        columns=columns,
        normalize_text=True,
        cache_dir=str(tmp_path / "c"),
    )
    assert ds["train"].column_names == ["audio", "text", "intent", "speaker"]
    assert ds["test"]["intent"] == ["weather_query", "iot_hue_lightdim"]
    assert ds["validation"]["text"] == ["what's the weather like"]
    row = ds["train"][0]
    assert row["speaker"] == "FO-1"
    assert row["audio"] == {"bytes": None, "path": str(root / "audio" / "1.flac")}
    assert_decodes(row)

    stream = load_slurp(
        root, None, "train", "validation", "test", True, columns=columns, cache_dir=str(tmp_path)
    )
    assert next(iter(stream["train"])) == {**row, "text": "WAKE ME UP AT EIGHT O'CLOCK"}


def test_slurp_class_label_intents(tmp_path):
    """A layout whose intent column is a `ClassLabel` (as `qmeeus/slurp`)."""
    names = ["alarm_set", "weather_query"]
    features = {"slurp_id": Value("int64"), "sentence": Value("string"), "audio": SOURCE_AUDIO}
    features["intent"] = ClassLabel(names=names)
    for split in ("train", "devel", "test"):
        columns = {
            "slurp_id": [1, 3],
            "sentence": ["wake me up", "is it sunny"],
            "audio": [{"bytes": flac(300), "path": "a.flac"}, {"bytes": flac(400), "path": "b.flac"}],
            "intent": [0, 1],
        }
        write_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet", columns, features)
    columns = ColumnMapping(text="sentence", intent="intent", id="slurp_id")
    ds = load_slurp(tmp_path, columns=columns, cache_dir=str(tmp_path / "cache"))
    assert ds["test"]["intent"] == names


def test_slurp_argument_errors(slurp_dir, tmp_path):
    with pytest.raises(ValueError, match="both `scenario` and `action`"):
        ColumnMapping(scenario="scenario")
    with pytest.raises(ValueError, match="needs an `intent` column"):
        load_slurp(slurp_dir, columns=ColumnMapping(text="transcript"))
    with pytest.raises(
        ValueError, match=r"\['dev'\] not found .*available splits: \['train', 'test', 'devel'\]"
    ):
        load_slurp(slurp_dir, validation_split="dev", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No .jsonl annotation files"):
        load_slurp(slurp_dir, annotations=tmp_path, cache_dir=str(tmp_path))
