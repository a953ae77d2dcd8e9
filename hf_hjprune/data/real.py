"""Real speech data sets from the Hugging Face Hub, mapped to the project's common schema.

Every split has the columns `audio` (undecoded: a `{"bytes": ..., "path": ...}` dict, read it with
[`load_audio`]; an `Audio(decode=False)` feature, or a plain struct when streaming), `text` (the transcript)
and, depending on the data set, `intent` and `speaker` (strings).

* [`load_librispeech`] reads LibriSpeech for ASR from `openslr/librispeech_asr` (Parquet; configs `clean`,
  `other` and `all`, whose split names differ: `clean` has `train.100`, `train.360`, `validation` and `test`,
  `all` has `train.clean.100`, ..., `validation.clean`, `test.clean`, `test.other`).
* [`load_slurp`] reads SLURP for intent classification from `marcel-gohsen/slurp` (Parquet; splits `train`,
  `devel` and `test`; columns `id`, `transcript`, `audio`, `intent`, `slots:` and `cam`).

Both also read a local directory laid out like the Hub repository, and download only the splits asked for.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import (
    Audio,
    ClassLabel,
    Dataset,
    DatasetDict,
    IterableDataset,
    IterableDatasetDict,
    Value,
    load_dataset,
    load_dataset_builder,
)
from datasets.features.features import FeatureType

from ..errors import HJPruneInputError

logger = logging.getLogger(__name__)

LIBRISPEECH_REPO = "openslr/librispeech_asr"
SLURP_REPO = "marcel-gohsen/slurp"

SLURP_SCENARIOS: tuple[str, ...] = (
    "alarm",
    "audio",
    "calendar",
    "cooking",
    "datetime",
    "email",
    "general",
    "iot",
    "lists",
    "music",
    "news",
    "play",
    "qa",
    "recommendation",
    "social",
    "takeaway",
    "transport",
    "weather",
)
"""SLURP's 18 scenarios; an intent is `f"{scenario}_{action}"`."""


@dataclass(frozen=True)
class ColumnMapping:
    """Names of the source columns that become the columns of the common schema.

    Attributes:
        audio: Audio column: an `Audio` feature, a `{"bytes", "path"}` struct or a path string. Relative paths
            of a local data set are resolved against its directory.
        text: Transcript column.
        intent: Intent label column (string or `ClassLabel`), or `None` for data sets without intents.
        scenario: Scenario column; with `action`, the intent is `f"{scenario}_{action}"`, as SLURP defines it,
            and `intent` is not read.
        action: Action column, used with `scenario`.
        speaker: Speaker column, or `None` if the data set has none.
        id: Utterance id column, used to join SLURP's own annotations (see [`load_slurp`]).
    """

    audio: str = "audio"
    text: str = "text"
    intent: str | None = None
    scenario: str | None = None
    action: str | None = None
    speaker: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if (self.scenario is None) != (self.action is None):
            raise HJPruneInputError("Give both `scenario` and `action` columns, or neither.")

    @property
    def has_intent(self) -> bool:
        return self.intent is not None or self.scenario is not None


LIBRISPEECH_COLUMNS = ColumnMapping(audio="audio", text="text", speaker="speaker_id")
"""Columns of `openslr/librispeech_asr`: file, audio, text, speaker_id, chapter_id, id."""

SLURP_COLUMNS = ColumnMapping(audio="audio", text="transcript", intent="intent", id="id")
"""Columns of `marcel-gohsen/slurp`: id, transcript, audio, intent, `slots:`, cam (no speaker)."""

# Keyword arguments of `load_dataset` that `load_dataset_builder` does not take.
_LOAD_ONLY_KWARGS = frozenset({"keep_in_memory", "num_proc", "save_infos", "verification_mode"})
_STRING = Value("string")
_AUDIO_STRUCT = {"bytes": Value("binary"), "path": _STRING}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_ALLOWED = re.compile(r"[^a-z' ]+")


def to_lowercase_letters(text: str) -> str:
    """Lower-case `text`, strip accents, and keep only the letters a-z, apostrophes and single spaces.

    Any other character (punctuation, digits) becomes a word boundary, so `"Hello,world!"` gives
    `"hello world"`.
    """
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES)).encode("ascii", "ignore").decode()
    return " ".join(_NOT_ALLOWED.sub(" ", text.lower()).split())


def load_librispeech(
    train_split: str = "train.clean.100",
    validation_split: str = "validation.clean",
    test_split: str | Sequence[str] = "test.clean",
    name_or_path: str | os.PathLike = LIBRISPEECH_REPO,
    config: str | None = "all",
    streaming: bool = False,
    *,
    columns: ColumnMapping = LIBRISPEECH_COLUMNS,
    normalize_text: bool = True,
    **load_kwargs: Any,
) -> DatasetDict | IterableDatasetDict:
    """Load LibriSpeech for ASR as splits `train`, `validation` and `test` with columns `audio`, `text`, `speaker`.

    The default split names are those of the `all` config; the `clean` config names the same data `train.100`,
    `validation` and `test`. Only the requested splits are downloaded.

    Args:
        train_split: Source split of `train`.
        validation_split: Source split of `validation`.
        test_split: Source split of `test`, or several: the first becomes `test` and each other one an extra
            split named after it with non-alphanumerics replaced by `_` (`"test.other"` -> `"test_other"`).
        name_or_path: Hub dataset id, or a local directory laid out like it.
        config: Dataset config (subset).
        streaming: Return an [`IterableDatasetDict`] that reads the data as it is iterated.
        columns: Source columns of the schema.
        normalize_text: Normalise transcripts with [`to_lowercase_letters`] (LibriSpeech is upper-case).
        **load_kwargs: Passed to `datasets.load_dataset` (e.g. `cache_dir`, `revision`, `token`, `num_proc`).

    Raises:
        HJPruneInputError: A split or a column does not exist; the message lists the available ones.
    """
    return _load(
        name_or_path,
        config,
        _split_names(train_split, validation_split, test_split),
        streaming,
        columns,
        normalize_text=normalize_text,
        intents_by_id=None,
        load_kwargs=load_kwargs,
    )


def load_slurp(
    name_or_path: str | os.PathLike = SLURP_REPO,
    config: str | None = None,
    train_split: str = "train",
    validation_split: str = "devel",
    test_split: str | Sequence[str] = "test",
    streaming: bool = False,
    *,
    columns: ColumnMapping = SLURP_COLUMNS,
    annotations: str | os.PathLike | None = None,
    normalize_text: bool = False,
    **load_kwargs: Any,
) -> DatasetDict | IterableDatasetDict:
    """Load SLURP for intent classification as splits `train`, `validation` and `test` with columns `audio`,
    `text`, `intent` (and `speaker` if `columns.speaker` is set).

    SLURP's own `intent` field, which Hub mirrors copy, lost the scenario for about 2% of the utterances
    (`"query"` instead of `"weather_query"`, `"hue_lightoff"` instead of `"iot_hue_lightoff"`). Pass
    `annotations` to relabel every utterance `f"{scenario}_{action}"` from SLURP's annotation files; without
    them, such labels are kept and counted in a warning.

    Args:
        name_or_path: Hub dataset id, or a local directory laid out like it.
        config: Dataset config (subset).
        train_split: Source split of `train`.
        validation_split: Source split of `validation`.
        test_split: Source split of `test`, or several (see [`load_librispeech`]).
        streaming: Return an [`IterableDatasetDict`] that reads the data as it is iterated.
        columns: Source columns of the schema; set `scenario` and `action` for a layout that has them.
        annotations: SLURP's annotation JSON-lines (`dataset/slurp/*.jsonl` of github.com/pswietojanski/slurp),
            as a file or a directory of `.jsonl` files, joined with the `columns.id` column on `slurp_id`.
        normalize_text: Normalise transcripts with [`to_lowercase_letters`].
        **load_kwargs: Passed to `datasets.load_dataset` (e.g. `cache_dir`, `revision`, `token`, `num_proc`).

    Raises:
        HJPruneInputError: A split or a column does not exist, or an utterance is missing from `annotations`.
    """
    if not columns.has_intent:
        raise HJPruneInputError("SLURP needs an `intent` column, or `scenario` and `action` columns.")
    intents_by_id = None
    if annotations is not None:
        if columns.id is None:
            raise HJPruneInputError("Joining `annotations` needs the utterance id column `columns.id`.")
        intents_by_id = _read_annotations(Path(annotations))
    return _load(
        name_or_path,
        config,
        _split_names(train_split, validation_split, test_split),
        streaming,
        columns,
        normalize_text=normalize_text,
        intents_by_id=intents_by_id,
        load_kwargs=load_kwargs,
    )


def _split_names(train: str, validation: str, test: str | Sequence[str]) -> dict[str, str]:
    """Map each output split to its source split."""
    tests = [test] if isinstance(test, str) else list(test)
    if not tests:
        raise HJPruneInputError("`test_split` needs at least one split.")
    names = {"train": train, "validation": validation, "test": tests[0]}
    for source in tests[1:]:
        name = re.sub(r"\W+", "_", source)
        if name in names:
            raise HJPruneInputError(f"Test split {source!r} would be named {name!r}, which is already taken.")
        names[name] = source
    return names


def _load(
    name_or_path: str | os.PathLike,
    config: str | None,
    splits: Mapping[str, str],
    streaming: bool,
    columns: ColumnMapping,
    *,
    normalize_text: bool,
    intents_by_id: Mapping[str, str] | None,
    load_kwargs: dict[str, Any],
) -> DatasetDict | IterableDatasetDict:
    name_or_path = os.fspath(name_or_path)
    builder_kwargs = {k: v for k, v in load_kwargs.items() if k not in _LOAD_ONLY_KWARGS}
    data_files = load_dataset_builder(name_or_path, config, **builder_kwargs).config.data_files
    missing = [s for s in dict.fromkeys(splits.values()) if s not in data_files]
    if missing:
        raise HJPruneInputError(
            f"Split(s) {missing} not found in {name_or_path!r} (config {config!r}); "
            f"available splits: {list(data_files)}."
        )
    # Naming the files of the wanted splits stops `load_dataset` from downloading every split of the config
    # (all of LibriSpeech for one 100-hour split).
    wanted = {source: list(data_files[source]) for source in dict.fromkeys(splits.values())}
    loaded = load_dataset(name_or_path, config, streaming=streaming, **{**load_kwargs, "data_files": wanted})
    root = Path(name_or_path) if os.path.isdir(name_or_path) else None
    out = {
        name: _to_schema(
            loaded[source], columns, f"{name_or_path}:{source}", root, normalize_text, intents_by_id
        )
        for name, source in splits.items()
    }
    return IterableDatasetDict(out) if streaming else DatasetDict(out)


def _to_schema(
    ds: Dataset | IterableDataset,
    columns: ColumnMapping,
    where: str,
    root: Path | None,
    normalize_text: bool,
    intents_by_id: Mapping[str, str] | None,
) -> Dataset | IterableDataset:
    """Select, convert and rename the columns of one split into the common schema."""
    sources = {"audio": columns.audio, "text": columns.text}
    if intents_by_id is not None:
        sources["id"] = columns.id
    elif columns.scenario is not None:
        sources.update(scenario=columns.scenario, action=columns.action)
    elif columns.intent is not None:
        sources["intent"] = columns.intent
    if columns.speaker is not None:
        sources["speaker"] = columns.speaker
    missing = sorted({c for c in sources.values() if c not in ds.column_names})
    if missing:
        raise HJPruneInputError(
            f"Column(s) {missing} not found in {where}; available columns: {ds.column_names}."
        )

    ds = _undecoded_audio(ds.select_columns(list(dict.fromkeys(sources.values()))), columns.audio, root)
    ds = ds.rename_columns({source: name for name, source in sources.items() if source != name})
    for name in sources.keys() - {"audio"}:
        ds = _as_string(ds, name)
    if normalize_text:
        ds = _replace(ds, "text", to_lowercase_letters, ["text"])
    if intents_by_id is not None:
        ds = _replace(ds, "intent", lambda uid: _lookup(intents_by_id, uid, where), ["id"])
    elif "scenario" in sources:
        ds = _replace(ds, "intent", lambda scenario, action: f"{scenario}_{action}", ["scenario", "action"])
    schema = [c for c in ("audio", "text", "intent", "speaker") if c in ds.column_names]
    ds = ds.select_columns(schema)
    if "intent" in schema and isinstance(ds, Dataset):
        _warn_unscoped_intents(ds["intent"], where)
    return ds


def _undecoded_audio(
    ds: Dataset | IterableDataset, name: str, root: Path | None
) -> Dataset | IterableDataset:
    """Make the audio column undecoded `{"bytes", "path"}` dicts, with paths resolved against `root`.

    A streamed split gets a plain struct rather than `Audio(decode=False)`: datasets re-encodes the rows of a
    typed streaming `map` through the feature, which for `Audio` needs torchcodec.
    """
    feature = Audio(decode=False) if isinstance(ds, Dataset) else _AUDIO_STRUCT
    if ds.features[name] != _STRING:
        return ds.cast_column(name, feature)
    if isinstance(ds, Dataset):
        if root is not None:
            ds = _replace(ds, name, lambda path: str(root / path), [name])
        return ds.cast_column(name, feature)
    return _replace(
        ds, name, lambda path: {"bytes": None, "path": str(root / path) if root else path}, [name], feature
    )


def _as_string(ds: Dataset | IterableDataset, name: str) -> Dataset | IterableDataset:
    feature = ds.features[name]
    if isinstance(feature, ClassLabel):
        return _replace(ds, name, feature.int2str, [name])
    if feature != _STRING:
        # Not `cast_column`, which also rewrites every column of a `Dataset` (see `_replace`).
        return _replace(ds, name, str, [name])
    return ds


def _replace(
    ds: Dataset | IterableDataset,
    name: str,
    fn: Callable[..., Any],
    inputs: list[str],
    feature: FeatureType = _STRING,
) -> Dataset | IterableDataset:
    """Set the column `name` (new or not) to `fn` of the `inputs` columns, row by row."""
    if isinstance(ds, IterableDataset):
        features = ds.features.copy()
        features[name] = feature
        return ds.map(
            lambda *cols: {name: [fn(*row) for row in zip(*cols)]},
            input_columns=inputs,
            batched=True,
            features=features,
        )
    # Not `Dataset.map`, which would rewrite every column, audio bytes included, to the cache.
    values = [fn(*row) for row in zip(*(ds[c] for c in inputs))]
    if name in ds.column_names:
        ds = ds.remove_columns(name)
    return ds.add_column(name, values, feature=feature)


def _read_annotations(path: Path) -> dict[str, str]:
    """Map each `slurp_id` of SLURP's annotation files to its intent `f"{scenario}_{action}"`."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"No .jsonl annotation files in {path}.")
    intents = {}
    for file in files:
        with open(file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    intents[str(entry["slurp_id"])] = f"{entry['scenario']}_{entry['action']}"
    return intents


def _lookup(intents_by_id: Mapping[str, str], uid: Any, where: str) -> str:
    try:
        return intents_by_id[str(uid)]
    except KeyError:
        raise HJPruneInputError(f"Utterance id {uid} of {where} is not in the SLURP annotations.") from None


def _warn_unscoped_intents(intents: Iterable[str], where: str) -> None:
    unscoped = Counter(i for i in intents if i.split("_", 1)[0] not in SLURP_SCENARIOS)
    if unscoped:
        examples = ", ".join(repr(i) for i, _ in unscoped.most_common(3))
        logger.warning(
            "%d utterance(s) of %s have an intent without a SLURP scenario (%s); pass `annotations` to "
            "relabel them scenario_action.",
            unscoped.total(),
            where,
            examples,
        )
