"""Loading audio files robustly: mono float32 at a fixed sample rate, or an [`AudioError`] saying why not."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile as sf
import soxr

AUDIO_ERROR_REASONS = ("corrupt", "empty", "nan", "too_short", "silent")
"""The possible values of [`AudioError.reason`]."""


class AudioError(ValueError):
    """An audio file that cannot be used; `reason` is one of [`AUDIO_ERROR_REASONS`].

    Attributes:
        source: The file path, or `"<bytes>"` for in-memory audio.
        reason: A short category, for counting skipped files.
    """

    def __init__(self, source: str, reason: str, detail: str) -> None:
        super().__init__(f"Cannot use audio {source!r}: {detail}")
        self.source = source
        self.reason = reason


def load_audio(
    source: str | os.PathLike | bytes | Mapping[str, Any],
    target_sr: int = 16_000,
    *,
    min_samples: int = 400,
    silence_threshold: float = 1e-3,
) -> np.ndarray:
    """Read an audio file as mono float32 at `target_sr` Hz.

    Channels are averaged; other sample rates are resampled with soxr.

    Args:
        source: A path, the file's bytes, or a `{"path": ..., "bytes": ...}` dict as produced by
            `datasets.Audio(decode=False)` (the bytes are used when present).
        target_sr: Sample rate of the returned audio.
        min_samples: Minimum length after resampling; 400 samples is 25 ms at 16 kHz, one wav2vec2 frame.
        silence_threshold: Audio whose absolute peak is below this is rejected as silent.

    Raises:
        AudioError: The file is corrupt or not audio (`"corrupt"`), has no samples (`"empty"`), contains NaN or
            infinite samples (`"nan"`), is shorter than `min_samples` (`"too_short"`), or is silent (`"silent"`).
        FileNotFoundError: `source` is a path that does not exist.
    """
    if isinstance(source, Mapping):
        data, path = source.get("bytes"), source.get("path")
        source = data if data is not None else path
        if source is None:
            raise ValueError("An audio dict needs a 'bytes' or a 'path' entry.")
    if isinstance(source, bytes | bytearray):
        name, size, file = "<bytes>", len(source), io.BytesIO(source)
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"No audio file at {name!r}.")
        size, file = os.path.getsize(name), name

    if size == 0:
        raise AudioError(name, "empty", "the file is empty (0 bytes).")
    try:
        audio, sample_rate = sf.read(file, dtype="float32", always_2d=True)
    except sf.SoundFileError as err:
        raise AudioError(name, "corrupt", f"the file cannot be decoded ({err}).") from err

    if audio.size == 0:
        raise AudioError(name, "empty", "the file contains no samples.")
    if not np.isfinite(audio).all():
        raise AudioError(name, "nan", "the file contains NaN or infinite samples.")
    audio = audio.mean(axis=1, dtype=np.float32)
    if sample_rate != target_sr:
        audio = soxr.resample(audio, sample_rate, target_sr, quality="HQ").astype(np.float32, copy=False)
    if len(audio) < min_samples:
        raise AudioError(
            name,
            "too_short",
            f"{len(audio)} samples at {target_sr} Hz, fewer than the minimum of {min_samples}.",
        )
    peak = float(np.abs(audio).max())
    if peak < silence_threshold:
        raise AudioError(name, "silent", f"the peak amplitude {peak:.2e} is below {silence_threshold:.0e}.")
    return np.ascontiguousarray(audio)
