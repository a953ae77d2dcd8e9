"""Broad unlabeled speech for self-supervised pretraining, synthesised with eSpeak NG and sharded on disk.

Not the downstream task's data: many languages and voices, wide rate and pitch ranges, and text that is
never a command template — sequences of frequent words of each language (from the `wordfreq` package)
and nonsense syllables ("babble", spoken by a random language's voice). The English part leaves out the
voices that the command corpus holds out for its test split (seed 0), so that split stays unheard.

The audio is stored clean (peak at -6 dBFS, 16-bit); augmentation (`hf_hjprune.data.augment`) happens when
batches are drawn, so the clean signal remains available for denoising targets.

Layout of a corpus directory (every shard is written once, deterministically from the seed and its index,
and a build that was killed continues with the missing shards)::

    broad_speech.json           parameters, cache key, shard list and total hours; written last
    shard_00000.npy ...         the shard's utterances, concatenated (int16, 16 kHz)
    shard_00000.jsonl ...       one row per utterance: offset, length, language, voice, kind, text
    validation.npy, .jsonl      a held-out shard drawn from its own random stream
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import HJPruneInputError
from .corpus import held_out_speakers
from .sources import default_cache_dir
from .speech_synth import ACCENTS, SAMPLE_RATE, SynthesisRequest, phonemize_batch, synthesize_batch

logger = logging.getLogger(__name__)

BROAD_SPEECH_VERSION = 1
"""Part of the cache key: bump it whenever a change here changes the generated audio."""

LANGUAGES: dict[str, str] = {
    # eSpeak NG voice -> wordfreq language
    "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "sv": "sv", "da": "da",
    "nb": "nb", "pl": "pl", "cs": "cs", "sk": "sk", "ru": "ru", "uk": "uk", "bg": "bg", "el": "el",
    "tr": "tr", "fi": "fi", "hu": "hu", "ro": "ro", "ca": "ca", "id": "id", "ms": "ms", "vi": "vi",
    "hi": "hi", "bn": "bn", "ta": "ta", "ur": "ur", "fa": "fa", "ar": "ar", "he": "he", "ja": "ja",
    "cmn": "zh", "ko": "ko", "lt": "lt", "lv": "lv", "sl": "sl", "mk": "mk", "is": "is",
}  # fmt: skip
"""Languages besides English, by eSpeak NG voice name, with the `wordfreq` list of each."""

VOICE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andrea", "Andy", "Annie", "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee",
    "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed", "Storm", "adam", "anika", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "croak", "david", "ed", "edward",
    "grandma", "grandpa", "gustave", "ian", "iven", "john", "kaukovalta", "klatt", "klatt2", "klatt3",
    "klatt4", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "steph", "travis", "victor", "whisper", "zac",
)  # fmt: skip
"""eSpeak NG voice variants used (its robotic and novelty variants left out)."""

KIND_WEIGHTS = {"english": 0.4, "language": 0.5, "babble": 0.1}
"""Share of utterances: English words, words of another language, nonsense syllables."""

RATE_RANGE = (90, 300)
"""Speaking rate, words per minute."""
PITCH_RANGE = (0, 99)
WORDS_RANGE = (2, 16)
"""Words per utterance."""
VOCABULARY_SIZE = 30_000
"""Words drawn from each language's most frequent ones, with probability ∝ frequency^0.6."""
ZIPF_FLATTENING = 0.6
STORED_PEAK = 0.5
"""Peak amplitude of the stored clean audio: headroom for augmentation gains."""
ASSUMED_SECONDS = 4.0
"""Average utterance length assumed when turning `hours` into a number of shards."""

_METADATA = "broad_speech.json"
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "sh", "ch", "")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou", "ee")
_CODAS = ("", "", "", "n", "m", "s", "t", "k", "l", "r")


@dataclass(frozen=True)
class Utterance:
    """Where one utterance lies: shard name and sample range."""

    shard: str
    offset: int
    length: int


class ShardedAudio:
    """Utterances stored in memory-mapped shards: `lengths` and `audio(i)`, as every unlabeled source,
    and for supervised pretraining their `rows` (text, language) and the `phonemes()` eSpeak NG spoke."""

    def __init__(self, directory: Path, utterances: list[Utterance], rows: list[dict[str, Any]]):
        self.directory = directory
        self.utterances = utterances
        self.rows = rows
        """Each utterance's metadata: `language`, `voice`, `kind`, `text`, `rate`, `pitch`."""
        self.lengths = [u.length for u in utterances]
        self._shards: dict[str, np.ndarray] = {}

    def phonemes(self) -> list[str]:
        """The IPA phonemes of every utterance, computed once per shard (`{shard}.phonemes.json`)."""
        by_shard: dict[str, list[str]] = {}
        for shard in dict.fromkeys(u.shard for u in self.utterances):
            path = self.directory / f"{shard}.phonemes.json"
            if not path.is_file():
                rows = _read_rows(self.directory / f"{shard}.jsonl")
                requests = [SynthesisRequest(r["text"], r["voice"]) for r in rows]
                atomic_write_text(path, json.dumps(phonemize_batch(requests), ensure_ascii=False))
            by_shard[shard] = json.loads(path.read_text(encoding="utf-8"))
        positions: dict[str, int] = {}
        result = []
        for u in self.utterances:  # utterances are in shard order
            index = positions.get(u.shard, 0)
            result.append(by_shard[u.shard][index])
            positions[u.shard] = index + 1
        return result

    def __len__(self) -> int:
        return len(self.utterances)

    def audio(self, index: int) -> np.ndarray:
        """The clean audio of utterance `index`, float32 at 16 kHz."""
        u = self.utterances[index]
        if u.shard not in self._shards:
            self._shards[u.shard] = np.load(self.directory / f"{u.shard}.npy", mmap_mode="r")
        return self._shards[u.shard][u.offset : u.offset + u.length].astype(np.float32) / 32768.0


class BroadSpeech:
    """A built corpus: its `train` and `validation` utterances and the rows describing them.

    Attributes:
        directory: The corpus directory.
        metadata: Its parameters and size (`broad_speech.json`).
        train: Every shard but the validation one.
        validation: The held-out utterances.
        rows: Metadata of each training utterance (language, voice, kind, text, rate, pitch).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        metadata = _read_metadata(self.directory)
        if metadata is None:
            raise FileNotFoundError(
                f"no complete broad-speech corpus in {self.directory}; build one with `build_broad_speech`"
            )
        self.metadata = metadata
        self.rows = [
            row for shard in metadata["shards"] for row in _read_rows(self.directory / f"{shard}.jsonl")
        ]
        shards = [
            shard for shard in metadata["shards"] for _ in _read_rows(self.directory / f"{shard}.jsonl")
        ]
        self.train = ShardedAudio(
            self.directory,
            [Utterance(shard, r["offset"], r["length"]) for shard, r in zip(shards, self.rows)],
            self.rows,
        )
        validation_rows = _read_rows(self.directory / "validation.jsonl")
        self.validation = ShardedAudio(
            self.directory,
            [Utterance("validation", r["offset"], r["length"]) for r in validation_rows],
            validation_rows,
        )

    @property
    def hours(self) -> float:
        """Hours of training audio."""
        return sum(self.train.lengths) / SAMPLE_RATE / 3600


def load_broad_speech(
    hours: float = 24.0, seed: int = 0, cache_dir: str | os.PathLike | None = None, **options: Any
) -> BroadSpeech:
    """The broad-speech corpus of `hours` and `seed`, built once into `cache_dir` (default: the
    `hf_hjprune` folder of the Hugging Face cache) and reused; `options` go to [`build_broad_speech`]."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return build_broad_speech(root / f"broad-speech-seed{seed}-{hours:g}h", hours=hours, seed=seed, **options)


def build_broad_speech(
    output_dir: str | os.PathLike,
    hours: float = 24.0,
    seed: int = 0,
    shard_utterances: int = 1000,
    validation_utterances: int = 200,
    num_workers: int | None = None,
) -> BroadSpeech:
    """Synthesise (or reuse) a broad-speech corpus of about `hours` hours in `output_dir`.

    Shards already present are kept, so a killed build continues where it stopped; a directory built
    with other parameters is an error rather than silently mixed.

    Raises:
        ValueError: Non-positive sizes, or `output_dir` holds a corpus built with other parameters.
    """
    if hours <= 0 or shard_utterances < 1 or validation_utterances < 1:
        raise HJPruneInputError(
            f"hours, shard_utterances and validation_utterances must be positive, got {hours}, "
            f"{shard_utterances}, {validation_utterances}"
        )
    output_dir = Path(output_dir)
    num_shards = max(1, round(hours * 3600 / (ASSUMED_SECONDS * shard_utterances)))
    params = {
        "version": BROAD_SPEECH_VERSION,
        "seed": seed,
        "num_shards": num_shards,
        "shard_utterances": shard_utterances,
        "validation_utterances": validation_utterances,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    metadata = _read_metadata(output_dir)
    if metadata is not None:
        if metadata["key"] == key:
            return BroadSpeech(output_dir)
        raise HJPruneInputError(
            f"{output_dir} holds a broad-speech corpus built with other parameters ({metadata['params']}); "
            "choose another directory"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(f"shard_{i:05d}", [seed, 1, i], shard_utterances) for i in range(num_shards)]
    jobs.append(("validation", [seed, 2], validation_utterances))
    missing = [job for job in jobs if not (output_dir / f"{job[0]}.jsonl").is_file()]
    if missing:
        logger.info("Synthesising %d of %d broad-speech shards into %s", len(missing), len(jobs), output_dir)
    workers = num_workers or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name in pool.map(lambda job: _write_shard(output_dir, *job), missing):
            logger.info("Wrote %s", name)
    seconds = sum(row["length"] for job in jobs[:-1] for row in _read_rows(output_dir / f"{job[0]}.jsonl"))
    metadata = {
        "key": key,
        "params": params,
        "shards": [name for name, _, _ in jobs[:-1]],
        "hours": seconds / SAMPLE_RATE / 3600,
    }
    atomic_write_text(output_dir / _METADATA, json.dumps(metadata, indent=2) + "\n")
    return BroadSpeech(output_dir)


def plan_utterances(seed: Sequence[int], count: int) -> list[dict[str, Any]]:
    """Draw `count` utterances (text, voice, rate, pitch, kind, language) from the random stream `seed`."""
    rng = np.random.default_rng(list(seed))
    english_voices = _english_voices()
    kinds = list(KIND_WEIGHTS)
    probabilities = np.array(list(KIND_WEIGHTS.values()))
    rows = []
    for _ in range(count):
        kind = kinds[rng.choice(len(kinds), p=probabilities / probabilities.sum())]
        if kind == "english":
            language, voice = "en", english_voices[rng.integers(len(english_voices))]
        else:
            language = list(LANGUAGES)[rng.integers(len(LANGUAGES))]
            voice = f"{language}+{VOICE_VARIANTS[rng.integers(len(VOICE_VARIANTS))]}"
        num_words = int(rng.integers(WORDS_RANGE[0], WORDS_RANGE[1] + 1))
        if kind == "babble":
            text = " ".join(_babble_word(rng) for _ in range(num_words))
        else:
            words, weights = _vocabulary(LANGUAGES.get(language, "en"))
            text = " ".join(words[i] for i in rng.choice(len(words), size=num_words, p=weights))
        rows.append(
            {
                "kind": kind,
                "language": language,
                "voice": voice,
                "text": text,
                "rate": int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                "seed": int(rng.integers(2**31)),
            }
        )
    return rows


def _english_voices() -> list[str]:
    held_out = set(held_out_speakers(seed=0))
    voices = (f"{accent}+{variant}" for accent in ACCENTS for variant in VOICE_VARIANTS)
    return [voice for voice in voices if voice not in held_out]


@cache
def _vocabulary(language: str) -> tuple[list[str], np.ndarray]:
    """The most frequent words of a language and their sampling probabilities (flattened Zipf)."""
    import wordfreq

    words = wordfreq.top_n_list(language, VOCABULARY_SIZE)
    # Word frequencies follow Zipf's law (∝ 1/rank): rank^-0.6 is frequency^0.6, without the per-word
    # look-ups (which need tokenizers such as MeCab for some languages).
    weights = np.arange(1, len(words) + 1, dtype=np.float64) ** -ZIPF_FLATTENING
    return words, weights / weights.sum()


def _babble_word(rng: np.random.Generator) -> str:
    syllables = int(rng.integers(1, 5))
    return "".join(
        _ONSETS[rng.integers(len(_ONSETS))]
        + _NUCLEI[rng.integers(len(_NUCLEI))]
        + _CODAS[rng.integers(len(_CODAS))]
        for _ in range(syllables)
    )


def _write_shard(output_dir: Path, name: str, seed: list[int], count: int) -> str:
    """Synthesise one shard; its `.jsonl`, written last by a rename, marks it complete."""
    rows = plan_utterances(seed, count)
    requests = [SynthesisRequest(r["text"], r["voice"], r["rate"], r["pitch"], r["seed"]) for r in rows]
    chunks, offset = [], 0
    for row, audio in zip(rows, synthesize_batch(requests), strict=True):
        peak = float(np.abs(audio).max()) if len(audio) else 0.0
        if peak == 0.0:
            raise ValueError(f"eSpeak NG produced silence for {row['text']!r} ({row['voice']})")
        samples = np.round(audio * (STORED_PEAK / peak) * 32767).astype(np.int16)
        row.update(offset=offset, length=len(samples))
        offset += len(samples)
        chunks.append(samples)
    with tempfile.NamedTemporaryFile(dir=output_dir, suffix=".npy", delete=False) as f:
        np.save(f, np.concatenate(chunks))
    os.replace(f.name, output_dir / f"{name}.npy")
    atomic_write_text(output_dir / f"{name}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    return name


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_metadata(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / _METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
