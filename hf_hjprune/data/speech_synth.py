"""Text-to-speech with eSpeak NG, through the shared library shipped by the `espeakng-loader` package.

eSpeak NG keeps global state (one current voice, one set of parameters, a pitch-flutter phase that carries
over from one utterance to the next), so every call goes through one lock and the same text can come out a
few samples different depending on what was spoken before. [`synthesize_batch`] runs in a fresh interpreter
and is therefore reproducible: the same requests give bit-identical audio.

This module imports nothing from `hf_hjprune`, so that it can run as a stand-alone worker script.
"""

from __future__ import annotations

import ctypes
import io
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

SAMPLE_RATE = 16_000
"""Sample rate (Hz) of the audio returned by this module."""

ACCENTS = (
    "en-us",
    "en-us-nyc",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
"""English voices of eSpeak NG (American, New York, British, Received Pronunciation, Scottish, Lancastrian,
West Midlands, Caribbean)."""

VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
"""Voice variants, appended to an accent as `accent+variant`, e.g. `"en-us+f2"`."""

# eSpeak NG names the British English voice file "en"; its language code is the friendlier "en-gb".
_VOICE_FILE_NAMES = {"en-gb": "en"}

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0
_PHONEMES_IPA = 0x02
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechSynthesisError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesise."""


@dataclass(frozen=True)
class SynthesisRequest:
    """One utterance to synthesise; see [`synthesize`] for the meaning of the fields."""

    text: str
    voice: str = "en-us+m3"
    rate: int = 170
    pitch: int = 50
    seed: int = 0


class _Engine:
    """The process-wide eSpeak NG library, initialised once; callers must hold `_LOCK`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader

            library_path = espeakng_loader.get_library_path()
            self.data_path = Path(espeakng_loader.get_data_path())
            lib = ctypes.CDLL(library_path)
        except (ImportError, OSError, RuntimeError) as err:
            raise SpeechSynthesisError(
                f"Could not load the eSpeak NG library shipped by `espeakng-loader` ({err}). "
                "Install it with `pip install espeakng-loader`."
            ) from err

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        # Seeds the noise of breathy variants (f2, f3, f5), which is otherwise seeded from the clock.
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None

        self.native_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0
        )
        if self.native_rate <= 0:
            raise SpeechSynthesisError(f"espeak_Initialize failed with data path {self.data_path}.")
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes does not, and the library would call freed memory.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _collect(self, samples, num_samples: int, events) -> int:
        if num_samples > 0 and samples:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(num_samples,)).copy())
        return 0

    def _set_voice(self, voice: str) -> None:
        accent, _, variant = voice.partition("+")
        if variant and not (self.data_path / "voices" / "!v" / variant).is_file():
            raise ValueError(f"Unknown eSpeak NG voice variant {variant!r} in {voice!r}; known: {VARIANTS}.")
        name = _VOICE_FILE_NAMES.get(accent, accent) + (f"+{variant}" if variant else "")
        if self._lib.espeak_SetVoiceByName(name.encode()) != _EE_OK:
            raise ValueError(f"Unknown eSpeak NG voice {accent!r}; English voices: {ACCENTS}.")

    def phonemes(self, text: str, voice: str) -> str:
        """The IPA phonemes eSpeak NG speaks for `text` with `voice` (words separated by spaces)."""
        self._set_voice(voice)
        buffer = ctypes.c_char_p(text.encode("utf-8"))
        clauses = []
        while buffer.value:
            clause = self._lib.espeak_TextToPhonemes(ctypes.byref(buffer), _ESPEAK_CHARS_UTF8, _PHONEMES_IPA)
            if clause:
                clauses.append(clause.decode("utf-8"))
        return " ".join(" ".join(clauses).split())

    def synthesize(self, request: SynthesisRequest) -> np.ndarray:
        """Synthesise at the native rate, as int16 samples."""
        self._set_voice(request.voice)
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(request.rate), 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(request.pitch), 0)
        if self._set_rand_seed is not None:
            self._set_rand_seed(int(request.seed))
        text = request.text.encode("utf-8")
        self._chunks = []
        status = self._lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != _EE_OK:
            raise SpeechSynthesisError(f"espeak_Synth failed with status {status} for {request.text!r}.")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        self._chunks = []
        return samples


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def synthesize(
    text: str,
    voice: str = "en-us+m3",
    rate: int = 170,
    pitch: int = 50,
    *,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Speak `text` with eSpeak NG.

    Args:
        text: The text to speak.
        voice: An accent from [`ACCENTS`], optionally followed by `+` and a variant from [`VARIANTS`].
        rate: Speaking rate in words per minute (eSpeak NG accepts 80 to 450).
        pitch: Base pitch, 0 to 100 (50 is the voice's normal pitch).
        seed: Seed of the breath noise of the breathy variants.
        sample_rate: Sample rate of the returned audio; eSpeak's 22,050 Hz output is resampled with soxr.

    Returns:
        Mono float32 audio, full scale 1.0.

    Raises:
        ValueError: Empty text, or an unknown voice.
        SpeechSynthesisError: The library cannot be loaded or fails.
    """
    if not text.strip():
        raise ValueError("Cannot synthesise empty text.")
    request = SynthesisRequest(text=text, voice=voice, rate=rate, pitch=pitch, seed=seed)
    with _LOCK:
        engine = _engine()
        samples = engine.synthesize(request)
        native_rate = engine.native_rate
    audio = samples.astype(np.float32) / 32768.0
    if sample_rate != native_rate:
        audio = soxr.resample(audio, native_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return audio


def synthesize_batch(
    requests: Sequence[SynthesisRequest], sample_rate: int = SAMPLE_RATE
) -> list[np.ndarray]:
    """Synthesise `requests` in order in a fresh Python process, so that the output is reproducible.

    Returns one mono float32 array per request, as [`synthesize`] would.
    """
    stream = io.BytesIO(
        _run_worker({"sample_rate": sample_rate, "requests": [asdict(r) for r in requests]}, "synthesis")
    )
    return [np.load(stream, allow_pickle=False) for _ in requests]


def phonemize_batch(requests: Sequence[SynthesisRequest]) -> list[str]:
    """The IPA phonemes of each request's text in its voice's language, in a fresh Python process.

    These are exactly the phonemes that [`synthesize`] speaks (rate, pitch and seed do not change them).
    """
    return json.loads(
        _run_worker({"phonemes": True, "requests": [asdict(r) for r in requests]}, "phonemizer")
    )


def _run_worker(payload: dict, what: str) -> bytes:
    """Run this file as a worker process on the JSON `payload`; its standard output."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(payload).encode(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise SpeechSynthesisError(f"The {what} worker failed:\n{result.stderr.decode(errors='replace')}")
    return result.stdout


def _worker_main() -> None:
    """Read a JSON batch from stdin and write one `.npy` array per request to stdout (or, for a
    `phonemes` batch, a JSON list of phoneme strings)."""
    payload = json.load(sys.stdin)
    out = sys.stdout.buffer
    if payload.get("phonemes"):
        with _LOCK:
            engine = _engine()
            phonemes = [engine.phonemes(r["text"], r["voice"]) for r in payload["requests"]]
        out.write(json.dumps(phonemes).encode())
        out.flush()
        return
    for fields in payload["requests"]:
        request = SynthesisRequest(**fields)
        audio = synthesize(
            request.text,
            request.voice,
            request.rate,
            request.pitch,
            seed=request.seed,
            sample_rate=payload["sample_rate"],
        )
        np.save(out, audio, allow_pickle=False)
    out.flush()


if __name__ == "__main__":
    _worker_main()
