"""Audio augmentation for pretraining: speed, reverberation, band-limiting, noise and utterance mixing.

Each effect is a plain function of a float32 signal and a `numpy.random.Generator`, so a batch is
reproducible from its seed. [`Augmentation`] draws which effects apply to an utterance. Speed
perturbation changes the duration, so it is applied first, to the clean signal that the targets are
computed from; the other effects leave the time axis aligned (a reverberation's direct path is at lag
0), so targets computed from the clean signal still describe each frame of the degraded one — the
denoising masked prediction of WavLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from .speech_synth import SAMPLE_RATE


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of the effects; every range is uniform between its bounds.

    Attributes:
        speed_prob: Probability of speed perturbation (tempo and pitch together, as Kaldi's).
        speed_range: Speed factors.
        reverb_prob: Probability of a synthetic room (exponentially decaying noise impulse response).
        rt60_range: Reverberation times, seconds.
        band_limit_prob: Probability of a band-pass filter (telephone-like to wide band).
        noise_prob: Probability of additive noise (white, or red: low-pass filtered white).
        snr_range: Noise signal-to-noise ratios, dB.
        mix_prob: Probability of mixing in another utterance (WavLM's utterance mixing).
        mix_snr_range: Level of the primary utterance over the mixed-in one, dB.
        gain_range: Level of the result, dB relative to full scale of the stored peak.
    """

    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    reverb_prob: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.8)
    band_limit_prob: float = 0.2
    noise_prob: float = 0.7
    snr_range: tuple[float, float] = (0.0, 30.0)
    mix_prob: float = 0.15
    mix_snr_range: tuple[float, float] = (2.0, 10.0)
    gain_range: tuple[float, float] = (-20.0, 6.0)

    @classmethod
    def none(cls) -> Augmentation:
        """No effect at all."""
        return cls(speed_prob=0.0, reverb_prob=0.0, band_limit_prob=0.0, noise_prob=0.0, mix_prob=0.0,
                   gain_range=(0.0, 0.0))  # fmt: skip

    def speed(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The clean signal, speed-perturbed with probability `speed_prob`."""
        if rng.random() >= self.speed_prob:
            return clean
        return speed_perturb(clean, float(rng.uniform(*self.speed_range)))

    def degrade(
        self, clean: np.ndarray, rng: np.random.Generator, other: Callable[[int], np.ndarray] | None = None
    ) -> np.ndarray:
        """The degraded version of `clean` (same length); `other(n)` gives n samples of another utterance."""
        audio = clean
        if rng.random() < self.reverb_prob:
            audio = reverberate(audio, rng, float(rng.uniform(*self.rt60_range)))
        if other is not None and rng.random() < self.mix_prob:
            audio = mix(audio, other(len(audio)), float(rng.uniform(*self.mix_snr_range)))
        if rng.random() < self.band_limit_prob:
            low, high = float(rng.uniform(50.0, 400.0)), float(rng.uniform(3000.0, 7500.0))
            audio = band_limit(audio, low, high)
        if rng.random() < self.noise_prob:
            audio = add_noise(audio, rng, float(rng.uniform(*self.snr_range)), red=bool(rng.random() < 0.5))
        return (audio * 10 ** (float(rng.uniform(*self.gain_range)) / 20)).astype(np.float32)


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `audio` `factor` times faster (higher pitch, shorter), by resampling."""
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32, copy=False)


def reverberate(audio: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room impulse response (direct path at lag 0, decaying noise tail
    reaching -60 dB after `rt60` seconds), at the input's energy."""
    time = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(len(time)) * np.exp(-6.9 * time / rt60) * 0.3
    response[0] = 1.0
    wet = signal.fftconvolve(audio, response)[: len(audio)]
    return (wet * np.sqrt(_power(audio) / max(_power(wet), 1e-12))).astype(np.float32)


def band_limit(audio: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """A 4th-order Butterworth band-pass between `low_hz` and `high_hz`."""
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, audio).astype(np.float32)


def add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float, red: bool = False) -> np.ndarray:
    """Add white (or red: one-pole low-passed) Gaussian noise at `snr_db` below the signal's power."""
    noise = rng.standard_normal(len(audio))
    if red:
        noise = signal.lfilter([1.0], [1.0, -0.98], noise)
    noise *= np.sqrt(_power(audio) / max(_power(noise), 1e-12) / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def mix(audio: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `other` (same length) at `snr_db` below `audio`'s power."""
    scale = np.sqrt(_power(audio) / max(_power(other), 1e-12) / 10 ** (snr_db / 10))
    return (audio + other * scale).astype(np.float32)


def _power(audio: np.ndarray) -> float:
    return float(np.mean(np.square(audio, dtype=np.float64))) if len(audio) else 0.0
