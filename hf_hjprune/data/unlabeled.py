"""Unlabeled audio sources for pretraining, all with one interface: `lengths` (samples) and `audio(i)`.

- `"broad_speech"`: the eSpeak NG multilingual corpus of `hf_hjprune.data.broad_speech`.
- a local directory: every audio file below it (`.wav`, `.flac`, `.ogg`), decoded with [`load_audio`]
  (mono, 16 kHz); unusable files are skipped with a count per reason, and every 50th usable file is
  held out for validation.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import HJPruneInputError
from ..structure import SAMPLING_RATE
from .audio import AudioError, load_audio

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
VALIDATION_EVERY = 50
"""A local folder holds out every this-many-th usable file (at least one) for validation."""


class UnlabeledAudio(Protocol):
    """What pretraining reads: utterance lengths in samples, and each utterance as float32 at 16 kHz."""

    lengths: list[int]

    def audio(self, index: int) -> np.ndarray: ...


class AudioFolder:
    """Audio files decoded on access (`lengths`, in samples at 16 kHz, were measured once)."""

    def __init__(self, files: list[Path], lengths: list[int]):
        self.files, self.lengths = files, lengths

    def __len__(self) -> int:
        return len(self.files)

    def audio(self, index: int) -> np.ndarray:
        return load_audio(self.files[index], SAMPLING_RATE)


def _usable(files: list[Path]) -> tuple[list[Path], list[int], Counter]:
    """The files that decode to usable audio, their lengths, and the others' count by reason."""
    usable, lengths, skipped = [], [], Counter()
    for path in files:
        try:
            lengths.append(len(load_audio(path, SAMPLING_RATE)))
            usable.append(path)
        except AudioError as err:
            skipped[err.reason] += 1
    return usable, lengths, skipped


def load_unlabeled(
    name_or_path: str | os.PathLike, **options: Any
) -> tuple[UnlabeledAudio, UnlabeledAudio, dict]:
    """The training and validation audio of a source, and a description of it (hours, skipped files).

    Raises:
        ValueError: Unknown source, options a local folder does not take, or no usable audio.
    """
    name = os.fspath(name_or_path)
    if name == "broad_speech":
        from .broad_speech import load_broad_speech

        corpus = load_broad_speech(**options)
        info = {"source": "broad_speech", "directory": str(corpus.directory), **corpus.metadata["params"]}
        return corpus.train, corpus.validation, {**info, "hours": corpus.hours}
    path = Path(name).expanduser()
    if not path.is_dir():
        raise HJPruneInputError(
            f"unknown unlabeled data source {name!r}: expected 'broad_speech' or a folder of audio files"
        )
    if options:
        raise HJPruneInputError(f"a local audio folder takes no data_options, got {sorted(options)}")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    usable, lengths, skipped = _usable(files)
    if skipped:
        logger.warning("%s: skipped %d unusable audio files (%s)", path, sum(skipped.values()), dict(skipped))
    if len(usable) < 2:
        raise HJPruneInputError(
            f"{path}: {len(usable)} usable audio files of {len(files)} ({dict(skipped)} skipped); pretraining "
            f"needs at least 2 ({', '.join(AUDIO_SUFFIXES)} files that decode and are not silent)"
        )
    held_out = set(range(0, len(usable), VALIDATION_EVERY))
    split = {
        name: AudioFolder([usable[i] for i in indices], [lengths[i] for i in indices])
        for name, indices in (
            ("train", [i for i in range(len(usable)) if i not in held_out]),
            ("validation", sorted(held_out)),
        )
    }
    hours = sum(split["train"].lengths) / SAMPLING_RATE / 3600
    return (
        split["train"],
        split["validation"],
        {"source": str(path), "hours": hours, "skipped_files": dict(skipped)},
    )
