"""Training data sources in one schema: splits `train`/`validation`/`test` with `audio`, `text`, `intent`.

`audio` is a file path or a `{"bytes", "path"}` dict (decode it with [`load_audio`]); `text` is the
transcript (ASR), `intent` the intent name (SLU); `speaker` is optional. Nothing is decoded here.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any

from datasets import Audio, ClassLabel, Dataset, DatasetDict, Value, load_from_disk

from ..errors import HJPruneInputError, did_you_mean, unknown_keys_message
from .corpus import SPLITS, build_corpus

SOURCES = ("synthetic", "librispeech", "slurp")
"""Names accepted by [`load_source`] besides a local directory."""

TASK_COLUMNS = {"asr": ("audio", "text"), "slu": ("audio", "intent")}
"""The columns each task needs."""


def load_source(name_or_path: str | os.PathLike, **options: Any) -> DatasetDict:
    """Load a data source as a `DatasetDict` with the splits `train`, `validation` and `test`.

    Args:
        name_or_path: `"synthetic"` (the eSpeak NG spoken-command corpus, built once into a cache
            directory), `"librispeech"` or `"slurp"` (see `hf_hjprune.data.real`), or a local
            directory holding `{split}.jsonl` manifests (audio paths relative to the directory) or a
            `DatasetDict` saved with `save_to_disk`.
        options: Options of the source. For `"synthetic"`: `num_train`, `num_validation`, `num_test`,
            `seed` and `cache_dir`; for `"librispeech"` and `"slurp"`: the keyword arguments of their
            loaders. Local directories take none.

    Raises:
        HJPruneInputError: An unknown source or option (checked before anything is built or
            downloaded), or a local directory that is not a data set.
    """
    name = os.fspath(name_or_path)
    loader = _loader(name)
    check_options(name, options)
    return loader(**options)


def _loader(name: str) -> Any:
    if name == "synthetic":
        return _synthetic
    if name in ("librispeech", "slurp"):
        from . import real  # optional heavy loaders, imported only when asked for

        return getattr(real, f"load_{name}")
    path = Path(name).expanduser()
    if path.is_dir():
        return lambda: _local(path)
    raise HJPruneInputError(
        f"unknown data source {name!r}{did_you_mean(name, SOURCES)}: expected one of {', '.join(SOURCES)} "
        "or an existing directory with {split}.jsonl manifests or a save_to_disk DatasetDict"
    )


def check_options(name_or_path: str | os.PathLike, options: dict[str, Any]) -> None:
    """Raise [`HJPruneInputError`] for an option that the source does not take (with the closest one).

    A source that accepts arbitrary keyword arguments (the Hub loaders pass them to
    `datasets.load_dataset`) accepts any name.
    """
    name = os.fspath(name_or_path)
    parameters = inspect.signature(_loader(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = set(options) - set(parameters)
    if not unknown:
        return
    if not parameters:
        raise HJPruneInputError(f"a local dataset directory takes no data_options, got {sorted(options)}")
    raise HJPruneInputError(unknown_keys_message(unknown, parameters, f"data_options of {name!r}", "option"))


def check_columns(dataset: DatasetDict, task: str) -> None:
    """Raise an [`HJPruneInputError`] naming the missing column if a split lacks a column that `task` needs."""
    for split in SPLITS:
        columns = dataset[split].column_names
        missing = [column for column in TASK_COLUMNS[task] if column not in columns]
        if missing:
            raise HJPruneInputError(
                f"the {split} split has no {', '.join(map(repr, missing))} column, which the {task} task "
                f"needs; available columns: {columns}"
            )


def default_cache_dir() -> Path:
    """Where generated corpora are cached: `$HF_HOME/hf_hjprune`."""
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(hf_home).expanduser() / "hf_hjprune"


def _synthetic_dir(
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 300,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    # One directory per size and seed: build_corpus replaces a corpus built with other parameters.
    return root / f"synthetic-seed{seed}-{num_train}-{num_validation}-{num_test}"


def _synthetic(**options: Any) -> DatasetDict:
    corpus_dir = _synthetic_dir(**options)
    sizes = {k: v for k, v in options.items() if k != "cache_dir"}
    return _common_schema(build_corpus(corpus_dir, **sizes))


# It takes `_synthetic_dir`'s options: `inspect.signature` (and so `check_options`) follows `__wrapped__`.
functools.update_wrapper(_synthetic, _synthetic_dir, assigned=(), updated=())


def load_flite_test(test_split: Dataset, **options: Any) -> Dataset:
    """The test split of the `"synthetic"` source with these `options`, spoken by flite (an
    out-of-domain synthesizer), built once next to the corpus; see `hf_hjprune.data.flite`."""
    from .flite import build_flite_test

    corpus_dir = _synthetic_dir(**options)
    return build_flite_test(
        test_split, corpus_dir.with_name(f"{corpus_dir.name}-flite"), seed=options.get("seed", 0)
    )


def _local(path: Path) -> DatasetDict:
    if (path / "dataset_dict.json").is_file():
        dataset = load_from_disk(str(path))
        if not isinstance(dataset, DatasetDict):
            raise HJPruneInputError(
                f"{path} holds a single Dataset; save a DatasetDict with train/validation/test"
            )
    else:
        manifests = {split: path / f"{split}.jsonl" for split in SPLITS}
        if not any(manifest.is_file() for manifest in manifests.values()):
            raise HJPruneInputError(
                f"{path} is neither a save_to_disk DatasetDict nor a folder of {{split}}.jsonl manifests"
            )
        dataset = DatasetDict(
            {split: _read_manifest(manifest) for split, manifest in manifests.items() if manifest.is_file()}
        )
    missing = [split for split in SPLITS if split not in dataset]
    if missing:
        raise HJPruneInputError(f"{path} has no {', '.join(missing)} split; found {sorted(dataset)}")
    return _common_schema(DatasetDict({split: dataset[split] for split in SPLITS}))


def _read_manifest(manifest: Path) -> Dataset:
    rows = []
    with open(manifest, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise HJPruneInputError(f"{manifest}, line {number}: not a JSON object ({err})") from None
            if not isinstance(row, dict):
                raise HJPruneInputError(
                    f"{manifest}, line {number}: expected a JSON object, got {line.strip()!r}"
                )
            rows.append(row)
    if not rows:
        raise HJPruneInputError(f"{manifest} lists no utterances")
    for row in rows:
        if isinstance(row.get("audio"), str) and not os.path.isabs(row["audio"]):
            row["audio"] = str(manifest.parent.resolve() / row["audio"])
    return Dataset.from_list(rows)


def _common_schema(dataset: DatasetDict) -> DatasetDict:
    """Undecoded audio and intent names instead of class ids."""
    splits = {}
    for split, data in dataset.items():
        if isinstance(data.features.get("audio"), Audio):
            data = data.cast_column("audio", Audio(decode=False))
        if isinstance(data.features.get("intent"), ClassLabel):
            features = data.features.copy()
            features["intent"] = Value("string")
            data = data.map(
                _intent_names, batched=True, features=features, fn_kwargs={"label": data.features["intent"]}
            )
        splits[split] = data
    return DatasetDict(splits)


def _intent_names(batch: dict[str, list], label: ClassLabel) -> dict[str, list[str]]:
    return {"intent": label.int2str(batch["intent"])}
