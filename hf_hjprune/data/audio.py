"""Loading audio files robustly: mono float32 at a fixed sample rate, or an [`AudioError`] saying why not."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..structure import SAMPLING_RATE

AUDIO_ERROR_REASONS = ("corrupt", "empty", "truncated", "nan", "too_short", "too_long", "silent")
"""The possible values of [`AudioError.reason`]."""

_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)
"""WAV data sizes that streaming writers put in the header when they do not know the length."""
_WAV_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


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


@dataclass
class DecodedAudio:
    """Audio as [`decode_audio`] returns it: mono float32 at the requested rate, and what it was.

    Attributes:
        audio: The samples.
        sample_rate: The file's own sample rate (resampled when it differs from the requested one).
        channels: The file's channel count (averaged to mono when more than one).
    """

    audio: np.ndarray
    sample_rate: int
    channels: int

    def conversions(self, target_sr: int) -> list[str]:
        """What was done to the file: `downmixed_to_mono`, `resampled_from_{rate}_hz`."""
        done = ["downmixed_to_mono"] if self.channels > 1 else []
        if self.sample_rate != target_sr:
            done.append(f"resampled_from_{self.sample_rate}_hz")
        return done


def load_audio(
    source: str | os.PathLike | bytes | Mapping[str, Any],
    target_sr: int = SAMPLING_RATE,
    *,
    min_samples: int = 400,
    max_seconds: float | None = None,
    silence_threshold: float = 1e-3,
) -> np.ndarray:
    """Read an audio file as mono float32 at `target_sr` Hz ([`decode_audio`] without the details)."""
    return decode_audio(
        source,
        target_sr,
        min_samples=min_samples,
        max_seconds=max_seconds,
        silence_threshold=silence_threshold,
    ).audio


def decode_audio(
    source: str | os.PathLike | bytes | Mapping[str, Any],
    target_sr: int = SAMPLING_RATE,
    *,
    min_samples: int = 400,
    max_seconds: float | None = None,
    silence_threshold: float = 1e-3,
) -> DecodedAudio:
    """Read an audio file as mono float32 at `target_sr` Hz.

    Channels are averaged; other sample rates are resampled with soxr.

    Args:
        source: A path, the file's bytes, or a `{"path": ..., "bytes": ...}` dict as produced by
            `datasets.Audio(decode=False)` (the bytes are used when present).
        target_sr: Sample rate of the returned audio.
        min_samples: Minimum length after resampling; 400 samples is 25 ms at 16 kHz, one wav2vec2 frame.
        max_seconds: Maximum duration (None: no limit); checked from the header, before decoding.
        silence_threshold: Audio whose absolute peak is below this is rejected as silent.

    Raises:
        AudioError: The file is corrupt or not audio (`"corrupt"`), has no samples (`"empty"`), holds
            less audio than its header announces (`"truncated"`), contains NaN or infinite samples
            (`"nan"`), is shorter than `min_samples` (`"too_short"`) or longer than `max_seconds`
            (`"too_long"`), or is silent (`"silent"`).
        FileNotFoundError: `source` is a path that does not exist.
    """
    name, size, file = _open_source(source)
    audio, sample_rate, channels = _read_whole(name, size, file, max_seconds)

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
    return DecodedAudio(np.ascontiguousarray(audio), sample_rate, channels)


def _open_source(source: str | os.PathLike | bytes | Mapping[str, Any]) -> tuple[str, int, Any]:
    """`(name, size in bytes, what soundfile opens)` of a path, bytes or `datasets` audio dict."""
    if isinstance(source, Mapping):
        data, path = source.get("bytes"), source.get("path")
        source = data if data is not None else path
        if source is None:
            raise ValueError("An audio dict needs a 'bytes' or a 'path' entry.")
    if isinstance(source, bytes | bytearray):
        return "<bytes>", len(source), io.BytesIO(source)
    name = os.fspath(source)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"No audio file at {name!r}.")
    return name, os.path.getsize(name), name


def _read_whole(name: str, size: int, file: Any, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """`(frames × channels float32, sample rate, channels)`, or an `AudioError` for an empty, corrupt,
    too long or truncated file (the length is checked from the header, before decoding)."""
    if size == 0:
        raise AudioError(name, "empty", "the file is empty (0 bytes).")
    try:
        sound = sf.SoundFile(file)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(name, "corrupt", f"the file cannot be decoded ({err}).") from err
    with sound:
        sample_rate, channels, frames = sound.samplerate, sound.channels, sound.frames
        if max_seconds is not None and frames > max_seconds * sample_rate:
            raise AudioError(
                name,
                "too_long",
                f"{frames / sample_rate:.1f} s of audio, more than the maximum of {max_seconds:g} s.",
            )
        declared = _declared_wav_bytes(sound.extra_info)
        if declared is not None:
            raise AudioError(
                name,
                "truncated",
                f"the header announces {declared[0]} bytes of audio, the file holds {declared[1]}.",
            )
        try:
            audio = sound.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:  # the header opened, the data stops short
            raise AudioError(name, "truncated", f"decoding stopped early ({err}).") from err
    if frames > 0 and len(audio) < frames:
        raise AudioError(
            name, "truncated", f"the header announces {frames} frames, the file holds {len(audio)}."
        )
    return audio, sample_rate, channels


def _declared_wav_bytes(extra_info: str) -> tuple[int, int] | None:
    """`(announced, present)` bytes of a WAV data chunk cut short, from libsndfile's header report.

    libsndfile reads a cut WAV file without an error, shortening it to the bytes present and noting
    `data : ANNOUNCED (should be PRESENT)`; sizes that streaming writers leave unknown do not count.
    """
    match = _WAV_DATA_SIZE.search(extra_info)
    if match is None:
        return None
    announced, present = int(match.group(1)), int(match.group(2))
    if announced in _UNKNOWN_SIZES or announced <= present:
        return None
    return announced, present
