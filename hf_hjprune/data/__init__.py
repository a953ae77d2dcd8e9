"""Data: a synthetic SLURP-like spoken-command corpus (eSpeak NG) and robust audio loading."""

from .audio import AUDIO_ERROR_REASONS, AudioError, DecodedAudio, decode_audio, load_audio
from .corpus import FEATURES, INTENTS, SCENARIOS, SPLITS, TEST_ONLY_TEMPLATES, build_corpus, load_corpus
from .real import ColumnMapping, load_librispeech, load_slurp, to_lowercase_letters
from .speech_synth import (
    ACCENTS,
    SAMPLE_RATE,
    VARIANTS,
    SpeechSynthesisError,
    SynthesisRequest,
    synthesize,
    synthesize_batch,
)

__all__ = [
    "ACCENTS",
    "AUDIO_ERROR_REASONS",
    "AudioError",
    "ColumnMapping",
    "DecodedAudio",
    "FEATURES",
    "INTENTS",
    "SAMPLE_RATE",
    "SCENARIOS",
    "SPLITS",
    "SpeechSynthesisError",
    "SynthesisRequest",
    "TEST_ONLY_TEMPLATES",
    "VARIANTS",
    "build_corpus",
    "decode_audio",
    "load_audio",
    "load_corpus",
    "load_librispeech",
    "load_slurp",
    "synthesize",
    "synthesize_batch",
    "to_lowercase_letters",
]
