"""From rows of a data source to model batches: audio validation, vocabularies, padding.

[`prepare_split`] decodes every file of a split once with [`decode_audio`] (mono, 16 kHz) before
training, drops the unusable ones with a count per reason and counts the converted ones (stereo,
other sample rates), so a bad file never stops a run midway. [`SpeechCollator`] pads a batch the way `Wav2Vec2FeatureExtractor` does (per-utterance
normalisation, attention mask) and pads CTC labels with -100.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

from ..errors import HJPruneInputError
from ..structure import SAMPLING_RATE
from .audio import AudioError, decode_audio, load_audio
from .augment import speed_perturb

logger = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER = "<pad>", "<unk>", "|"


def normalize_transcript(text: str) -> str:
    """Collapse runs of whitespace: the tokenizer turns each space into one word delimiter."""
    return " ".join(text.split())


def build_tokenizer(transcripts: Sequence[str]) -> Wav2Vec2CTCTokenizer:
    """A character CTC tokenizer over the characters of `transcripts`; `<pad>` (id 0) is the blank."""
    characters = sorted({char for text in transcripts for char in normalize_transcript(text)} - {" "})
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1, WORD_DELIMITER: 2}
    vocab.update((char, i) for i, char in enumerate(characters, start=len(vocab)))
    with tempfile.TemporaryDirectory() as directory:
        vocab_file = os.path.join(directory, "vocab.json")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        return Wav2Vec2CTCTokenizer(
            vocab_file,
            pad_token=PAD_TOKEN,
            unk_token=UNK_TOKEN,
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,
            eos_token=None,
        )


def build_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """The feature extractor of every model here: 16 kHz, per-utterance normalisation, attention mask."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def build_label2id(intents: Sequence[str]) -> dict[str, int]:
    """Class ids of the sorted distinct intents."""
    return {name: i for i, name in enumerate(sorted(set(intents)))}


@dataclass
class PreparedSplit(torch.utils.data.Dataset):
    """The usable rows of a split: `{"input_values": float32 array, "labels": target}` items, and
    their lengths in samples.

    Audio is kept decoded when `audio` is set, otherwise it is read from `sources` (the split's
    `audio` column) and decoded again on access; the files were validated by [`prepare_split`].
    `skipped` and `converted` name the files by reason and by conversion.
    """

    sources: Sequence[Any]
    rows: list[int]
    targets: list[Any]
    lengths: list[int]
    audio: list[np.ndarray] | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)
    converted: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.audio is not None:
            audio = self.audio[index]
        else:
            audio = load_audio(self.sources[self.rows[index]], SAMPLING_RATE)
        return {"input_values": audio, "labels": self.targets[index]}

    @property
    def skipped_counts(self) -> dict[str, int]:
        """Number of skipped files per reason."""
        return {reason: len(names) for reason, names in self.skipped.items()}

    @property
    def converted_counts(self) -> dict[str, int]:
        """Number of used files per conversion (`downmixed_to_mono`, `resampled_from_{rate}_hz`)."""
        return {conversion: len(names) for conversion, names in self.converted.items()}


def prepare_split(
    dataset: Dataset,
    target_column: str,
    encode: Callable[[Any], Any],
    name: str,
    keep_audio: bool = False,
    max_seconds: float | None = None,
) -> PreparedSplit:
    """Decode every file of a split once and keep the rows that can be trained on.

    A row is skipped, with its reason counted and its file named in the log, when its target is
    empty (`no_label`) or cannot be encoded (`unknown_label`), its file is `missing`, or its audio is
    unusable (an [`AudioError`] reason: corrupt, empty, truncated, nan, too_short, too_long,
    silent). Multi-channel files are averaged to mono and other sample rates resampled; those
    conversions are counted too.

    Args:
        dataset: A split of [`load_source`] (undecoded `audio` column).
        target_column: `"text"` or `"intent"`.
        encode: Turns a target value into the model's labels (token ids or a class id), or None
            when the value has no label (an intent unseen in training).
        name: The split's name, for messages.
        keep_audio: Keep the decoded audio in memory (small splits only): every process then
            decodes the whole split. Otherwise the check is shared between processes.
        max_seconds: Skip longer files (`too_long`); None: no limit.

    Raises:
        HJPruneInputError: No row of the split is usable.
    """
    state = PartialState()
    sources, values = dataset["audio"], list(dataset[target_column])
    targets = [None if _is_empty(value) else encode(value) for value in values]
    skipped = {
        i: "no_label" if _is_empty(value) else "unknown_label"
        for i, (value, target) in enumerate(zip(values, targets))
        if target is None
    }
    indices = list(range(len(dataset)))
    labelled = [i for i in indices if i not in skipped]
    if keep_audio:
        audio, bad_audio, conversions = _check_audio(sources, labelled, max_seconds=max_seconds)
        lengths = {i: len(decoded) for i, decoded in audio.items()}
    else:
        with state.split_between_processes(labelled) as shard:
            lengths, bad_audio, conversions = _check_audio(
                sources, shard, keep=False, max_seconds=max_seconds
            )
        lengths, bad_audio, conversions = (
            _merge(gather_object([part])) for part in (lengths, bad_audio, conversions)
        )
        audio = None
    skipped.update(bad_audio)
    valid = [i for i in indices if i not in skipped]

    by_reason, by_conversion = _by_kind(skipped, sources), _by_kind(conversions, sources)
    if by_reason and state.is_main_process:
        counts = ", ".join(f"{reason}: {len(names)}" for reason, names in by_reason.items())
        names = ", ".join(name for names in by_reason.values() for name in names)
        logger.warning("%s: skipped %d of %d files (%s): %s", name, len(skipped), len(indices), counts, names)
    if by_conversion and state.is_main_process:
        counts = ", ".join(f"{kind}: {len(names)}" for kind, names in by_conversion.items())
        logger.info("%s: converted files (%s)", name, counts)
    if not valid:
        counts = dict(Counter(skipped.values()))
        raise HJPruneInputError(
            f"no usable audio in the {name} split: all {len(indices)} rows were skipped ({counts}); "
            "check the audio files and the data source"
        )
    return PreparedSplit(
        sources=sources,
        rows=valid,
        targets=[targets[i] for i in valid],
        lengths=[lengths[i] for i in valid],
        audio=[audio[i] for i in valid] if audio is not None else None,
        skipped=by_reason,
        converted=by_conversion,
    )


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_audio(
    sources: Sequence[Any], indices: Sequence[int], keep: bool = True, max_seconds: float | None = None
) -> tuple[dict[int, np.ndarray | int], dict[int, str], dict[int, list[str]]]:
    """By index: the decoded audio (when `keep`, else its length) of the usable files, the skip
    reason of the others, and the conversions of the converted ones."""
    audio, skipped, conversions = {}, {}, {}
    for i in indices:
        try:
            decoded = decode_audio(sources[i], SAMPLING_RATE, max_seconds=max_seconds)
        except AudioError as err:
            skipped[i] = err.reason
            continue
        except FileNotFoundError:
            skipped[i] = "missing"
            continue
        audio[i] = decoded.audio if keep else len(decoded.audio)
        if decoded.conversions(SAMPLING_RATE):
            conversions[i] = decoded.conversions(SAMPLING_RATE)
    return audio, skipped, conversions


def _merge(parts: list[dict[int, Any]]) -> dict[int, Any]:
    return {key: value for part in parts for key, value in part.items()}


def _by_kind(kinds: Mapping[int, str | list[str]], sources: Sequence[Any]) -> dict[str, list[str]]:
    """File names grouped by skip reason or conversion (an index may have several conversions)."""
    grouped: dict[str, list[str]] = {}
    for i, kind in sorted(kinds.items()):
        for one in [kind] if isinstance(kind, str) else kind:
            grouped.setdefault(one, []).append(_source_name(sources[i], i))
    return grouped


def _source_name(source: Any, index: int) -> str:
    if isinstance(source, Mapping):
        source = source.get("path") or f"<bytes of row {index}>"
    return os.fspath(source)


@dataclass
class SpeechCollator:
    """Pads a list of [`PreparedSplit`] items into a model batch.

    `input_values` are normalised per utterance and zero-padded with an `attention_mask` by the
    feature extractor; CTC label sequences (lists) are padded with -100, class ids stacked. With
    `speed_factors` (training), each utterance is first played at one of them, drawn with torch's
    random generator (which a checkpoint saves, so a resumed run draws the same).
    """

    feature_extractor: Wav2Vec2FeatureExtractor
    speed_factors: tuple[float, ...] = ()

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        audio = [item["input_values"] for item in items]
        if self.speed_factors:
            factors = [self.speed_factors[i] for i in torch.randint(len(self.speed_factors), (len(audio),))]
            audio = [x if factor == 1.0 else speed_perturb(np.asarray(x, np.float32), factor)
                     for x, factor in zip(audio, factors)]  # fmt: skip
        batch = self.feature_extractor(
            audio,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        labels = [item["labels"] for item in items]
        if isinstance(labels[0], int):
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        else:
            padded = torch.full((len(labels), max(map(len, labels))), -100, dtype=torch.long)
            for row, ids in zip(padded, labels):
                row[: len(ids)] = torch.tensor(ids, dtype=torch.long)
            batch["labels"] = padded
        return dict(batch)
