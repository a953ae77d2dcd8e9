"""A SLURP-like corpus of synthetic spoken commands, synthesised with eSpeak NG and cached on disk.

Layout of a corpus directory::

    corpus.json                 parameters, cache key and split sizes; written last
    {split}.jsonl               one JSON row per utterance, audio paths relative to the directory
    {split}/00000.wav ...       16 kHz mono 16-bit PCM

The test split is spoken by held-out speakers (accent and variant combinations never used in train or
validation) and contains held-out sentence templates, so it measures generalisation; validation shares
speakers and templates with train but no utterance (same transcript and speaker).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ..errors import HJPruneInputError
from .speech_synth import ACCENTS, SAMPLE_RATE, VARIANTS, SynthesisRequest, synthesize_batch

logger = logging.getLogger(__name__)

CORPUS_VERSION = 1
"""Part of the cache key: bump it whenever a change to this module changes the generated corpus."""

SPLITS = ("train", "validation", "test")

# Sentence templates per intent. The LAST template of each intent is used only in the test split.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "iot_lights_on": (
        "turn on the lights in the {room}",
        "switch on the {room} lights",
        "lights on in the {room}",
        "can you turn the {room} lights on",
        "i need some light in the {room}",
    ),
    "iot_lights_off": (
        "turn off the lights in the {room}",
        "switch off the {room} lights",
        "lights off in the {room}",
        "can you turn the {room} lights off",
        "make it dark in the {room}",
    ),
    "iot_coffee": (
        "make me {coffee}",
        "i'd like {coffee} please",
        "can you brew {coffee}",
        "start the machine and make {coffee}",
        "i could really use {coffee}",
    ),
    "weather_query": (
        "what's the weather in {city} {day}",
        "will it rain in {city} {day}",
        "how hot will it be in {city} {day}",
        "tell me the forecast for {city}",
        "do i need an umbrella in {city} {day}",
    ),
    "alarm_set": (
        "set an alarm for {time}",
        "wake me up at {time}",
        "i need an alarm at {time} {day}",
        "please set my alarm to {time}",
        "make sure i'm up by {time}",
    ),
    "alarm_query": (
        "what alarms do i have",
        "show me my alarms for {day}",
        "is my alarm set for {time}",
        "when is my next alarm",
        "have i got any alarms {day}",
    ),
    "timer_set": (
        "set a timer for {duration}",
        "start a {duration} timer",
        "count down {duration}",
        "remind me in {duration}",
        "time me for {duration}",
    ),
    "play_music": (
        "play some {genre}",
        "play {artist}",
        "i want to listen to {artist}",
        "put on some {genre} please",
        "could you play a song by {artist}",
    ),
    "audio_volume_up": (
        "turn the volume up",
        "louder please",
        "increase the volume to {level}",
        "make it louder",
        "i can't hear it turn it up",
    ),
    "audio_volume_down": (
        "turn the volume down",
        "quieter please",
        "lower the volume to {level}",
        "make it quieter",
        "that's too loud turn it down",
    ),
    "audio_volume_mute": (
        "mute the speaker",
        "be quiet",
        "turn the sound off",
        "mute the volume",
        "stop making noise",
    ),
    "news_query": (
        "what's the latest {topic} news",
        "tell me the news",
        "any {topic} headlines today",
        "read me the {topic} news",
        "what's new in {topic}",
    ),
    "calendar_set": (
        "add {event} to my calendar {day}",
        "schedule {event} at {time}",
        "put {event} in my diary",
        "remind me about {event} {day}",
        "book {event} for {time}",
    ),
    "calendar_query": (
        "what's on my calendar {day}",
        "do i have any meetings {day}",
        "what's my schedule {day}",
        "am i free {day}",
        "is there anything in my diary {day}",
    ),
    "datetime_query": (
        "what time is it",
        "what time is it in {city}",
        "what's the date today",
        "tell me the time in {city}",
        "what's the local time in {city}",
    ),
    "general_joke": (
        "tell me a joke",
        "say something funny",
        "make me laugh",
        "do you know any jokes",
        "i'd like to hear a joke",
    ),
}

_SLOTS: dict[str, tuple[str, ...]] = {
    "room": ("kitchen", "living room", "bedroom", "bathroom", "hallway", "office", "garage", "dining room"),
    "coffee": ("a coffee", "an espresso", "a latte", "a cappuccino", "a black coffee", "a flat white"),
    "city": (
        "london",
        "paris",
        "tokyo",
        "berlin",
        "madrid",
        "chicago",
        "boston",
        "sydney",
        "toronto",
        "dublin",
        "rome",
        "seattle",
    ),
    "day": ("today", "tomorrow", "tonight", "this weekend", "on monday", "on friday", "on sunday"),
    "time": (
        "six in the morning",
        "seven thirty",
        "half past eight",
        "nine fifteen",
        "noon",
        "midnight",
        "ten o'clock",
        "quarter to seven",
        "five forty five",
    ),
    "duration": (
        "five minutes",
        "ten minutes",
        "twenty minutes",
        "half an hour",
        "one hour",
        "ninety seconds",
        "three minutes",
        "forty five minutes",
        "two hours",
    ),
    "genre": ("jazz", "rock", "classical music", "hip hop", "country", "reggae", "blues", "pop"),
    "artist": (
        "the beatles",
        "taylor swift",
        "miles davis",
        "queen",
        "adele",
        "bob marley",
        "coldplay",
        "mozart",
        "nirvana",
    ),
    "level": ("five", "six", "seven", "eight", "nine", "ten", "maximum"),
    "topic": ("sports", "politics", "technology", "business", "science", "world"),
    "event": (
        "a meeting",
        "lunch with sam",
        "a dentist appointment",
        "a call with the team",
        "dinner with my parents",
        "a haircut",
    ),
}

INTENTS: tuple[str, ...] = tuple(_TEMPLATES)
"""Intent names, in the order of the `intent` class label."""

SCENARIOS: tuple[str, ...] = tuple(dict.fromkeys(intent.split("_")[0] for intent in INTENTS))
"""Scenario names; an intent's scenario is its name up to the first underscore, as in SLURP."""

TEST_ONLY_TEMPLATES: frozenset[str] = frozenset(f"{intent}/{len(t) - 1}" for intent, t in _TEMPLATES.items())
"""Ids (`"{intent}/{index}"`, the `template` column) of the templates that appear only in the test split."""

FEATURES = Features(
    {
        "audio": Value("string"),
        "text": Value("string"),
        "intent": ClassLabel(names=list(INTENTS)),
        "scenario": Value("string"),
        "speaker": Value("string"),
        "template": Value("string"),
        "duration": Value("float32"),
    }
)
"""Columns of every split. `audio` is an absolute path to a WAV file: decode it with [`load_audio`]."""

_CHUNK_SIZE = (
    200  # utterances per synthesis process; fixed so that the output does not depend on the CPU count
)
_PAD_SECONDS = (0.05, 0.3)
_METADATA = "corpus.json"


def build_corpus(
    output_dir: str | os.PathLike,
    seed: int = 0,
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 300,
    *,
    rate: tuple[int, int] = (140, 200),
    pitch: tuple[int, int] = (30, 70),
    snr_db: tuple[float, float] = (25.0, 40.0),
    gain_db: tuple[float, float] = (-18.0, -3.0),
    num_workers: int | None = None,
) -> DatasetDict:
    """Build the spoken-command corpus in `output_dir`, or load it if it was already built with these parameters.

    The corpus is a deterministic function of the parameters: the same arguments give the same rows and
    byte-identical WAV files. It is built in a temporary sibling directory that is renamed to `output_dir`
    once complete, so an interrupted build never leaves a corpus that looks valid.

    Args:
        output_dir: Directory of the corpus. An existing corpus built with other parameters is replaced;
            any other non-empty directory is refused.
        seed: Seed of every random choice (speakers, sentences, voice settings, noise).
        num_train: Number of training utterances; at least `len(INTENTS)` so that every intent appears.
        num_validation: Number of validation utterances.
        num_test: Number of test utterances.
        rate: Range of the speaking rate, in words per minute.
        pitch: Range of the eSpeak NG pitch setting (0 to 100).
        snr_db: Range of the signal-to-noise ratio of the added white noise, in dB.
        gain_db: Range of the peak level of the speech, in dB relative to full scale.
        num_workers: Number of synthesis processes run in parallel (default: the number of usable CPUs). It
            does not change the output.

    Returns:
        The splits `train`, `validation` and `test`, with the columns of [`FEATURES`].
    """
    if num_train < len(INTENTS):
        raise HJPruneInputError(
            f"num_train must be at least the number of intents ({len(INTENTS)}), got {num_train}."
        )
    params = {
        "version": CORPUS_VERSION,
        "seed": seed,
        "sizes": {"train": num_train, "validation": num_validation, "test": num_test},
        "rate": list(rate),
        "pitch": list(pitch),
        "snr_db": list(snr_db),
        "gain_db": list(gain_db),
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    output_dir = Path(output_dir)
    if _cache_key(output_dir) == key:
        logger.info("Reusing the corpus in %s.", output_dir)
        return load_corpus(output_dir)

    _check_replaceable(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    tmp_dir.chmod(0o755)  # mkdtemp's 0o700 would stay on the renamed corpus
    try:
        logger.info("Building the corpus in %s (seed %d, %s).", output_dir, seed, params["sizes"])
        plan = _plan(params)
        _synthesize(plan, tmp_dir, num_workers or _usable_cpus())
        for split, rows in plan.items():
            with open(tmp_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps({name: row[name] for name in FEATURES}) + "\n")
        metadata = {"key": key, "params": params, "intents": list(INTENTS)}
        (tmp_dir / _METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        _install(tmp_dir, output_dir, key)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return load_corpus(output_dir)


def load_corpus(output_dir: str | os.PathLike) -> DatasetDict:
    """Load a corpus written by [`build_corpus`]; `audio` paths are made absolute."""
    output_dir = Path(output_dir).resolve()
    if _cache_key(output_dir) is None:
        raise FileNotFoundError(f"No complete corpus in {output_dir}; build one with `build_corpus`.")
    splits = {}
    for split in SPLITS:
        with open(output_dir / f"{split}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        for row in rows:
            row["audio"] = str(output_dir / row["audio"])
        splits[split] = Dataset.from_list(rows, features=FEATURES)
    return DatasetDict(splits)


def _cache_key(output_dir: Path) -> str | None:
    try:
        return json.loads((output_dir / _METADATA).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _install(tmp_dir: Path, output_dir: Path, key: str) -> None:
    """Move the finished corpus to `output_dir`, replacing a stale corpus or a partial one of ours."""
    if _cache_key(output_dir) == key:
        return  # another process built the same corpus meanwhile
    stale = None
    if output_dir.exists():
        _check_replaceable(output_dir)
        stale = output_dir.with_name(f".{output_dir.name}.{uuid.uuid4().hex[:8]}.stale")
        output_dir.rename(stale)
    try:
        tmp_dir.rename(output_dir)
    except OSError:
        # Another process building the same corpus may have finished first.
        if _cache_key(output_dir) != key:
            raise
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def _check_replaceable(output_dir: Path) -> None:
    """Refuse to replace a directory holding anything that `build_corpus` does not write."""
    if not output_dir.exists():
        return
    ours = {_METADATA, *SPLITS, *(f"{split}.jsonl" for split in SPLITS)}
    foreign = sorted({p.name for p in output_dir.iterdir()} - ours)
    if foreign:
        raise FileExistsError(
            f"{output_dir} exists and does not hold a corpus (it contains {foreign[:5]}); choose another directory."
        )


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def held_out_speakers(seed: int = 0) -> list[str]:
    """The voices that speak only the test split of a corpus built with `seed`."""
    return _split_speakers(np.random.default_rng([seed, 0]))[1]


def _split_speakers(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Split the voices into train/validation speakers and test speakers: per accent, one male and one female
    variant are held out for the test split."""
    males = [v for v in VARIANTS if v.startswith("m")]
    females = [v for v in VARIANTS if v.startswith("f")]
    seen, held_out = [], []
    for accent in ACCENTS:
        held = {males[rng.integers(len(males))], females[rng.integers(len(females))]}
        for variant in VARIANTS:
            (held_out if variant in held else seen).append(f"{accent}+{variant}")
    return seen, held_out


def _plan(params: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Draw every utterance of every split: its text, labels, voice settings and audio effects."""
    seen_speakers, test_speakers = _split_speakers(np.random.default_rng([params["seed"], 0]))
    taken: set[tuple[str, str]] = set()
    plan = {}
    # Test, then validation, then train: utterances already taken are redrawn in the later splits, so the
    # validation and test splits do not change with num_train.
    for split_index, split in reversed(list(enumerate(SPLITS))):
        rng = np.random.default_rng([params["seed"], 1, split_index])
        speakers = test_speakers if split == "test" else seen_speakers
        count = params["sizes"][split]
        intents = [INTENTS[i % len(INTENTS)] for i in rng.permutation(count)]
        rows = []
        for index, intent in enumerate(intents):
            text, template, speaker = _draw_utterance(rng, intent, speakers, split == "test", taken)
            rows.append(
                {
                    "audio": f"{split}/{index:05d}.wav",
                    "text": text,
                    "intent": intent,
                    "scenario": intent.split("_")[0],
                    "speaker": speaker,
                    "template": template,
                    "rate": int(rng.integers(params["rate"][0], params["rate"][1] + 1)),
                    "pitch": int(rng.integers(params["pitch"][0], params["pitch"][1] + 1)),
                    "snr_db": float(rng.uniform(*params["snr_db"])),
                    "gain_db": float(rng.uniform(*params["gain_db"])),
                    "seed": int(rng.integers(2**31)),
                }
            )
        plan[split] = rows
    return {split: plan[split] for split in SPLITS}


def _draw_utterance(
    rng: np.random.Generator, intent: str, speakers: list[str], is_test: bool, taken: set[tuple[str, str]]
) -> tuple[str, str, str]:
    """Draw a (text, template id, speaker) not drawn before in any split."""
    templates = _TEMPLATES[intent] if is_test else _TEMPLATES[intent][:-1]
    for _ in range(1000):
        index = int(rng.integers(len(templates)))
        slots = {name: values[rng.integers(len(values))] for name, values in _SLOTS.items()}
        text = templates[index].format(**slots)
        speaker = speakers[rng.integers(len(speakers))]
        if (text, speaker) not in taken:
            taken.add((text, speaker))
            return text, f"{intent}/{index}", speaker
    raise HJPruneInputError(
        f"Cannot draw enough distinct utterances of {intent!r}; ask for a smaller corpus."
    )


def _synthesize(plan: dict[str, list[dict[str, Any]]], output_dir: Path, num_workers: int) -> None:
    """Synthesise, degrade and write every utterance, filling in each row's `duration`."""
    for split in plan:
        (output_dir / split).mkdir()

    def run(rows: list[dict[str, Any]]) -> None:
        requests = [SynthesisRequest(r["text"], r["speaker"], r["rate"], r["pitch"], r["seed"]) for r in rows]
        for row, clean in zip(rows, synthesize_batch(requests), strict=True):
            audio = _degrade(clean, row)
            sf.write(output_dir / row["audio"], audio, SAMPLE_RATE, subtype="PCM_16")
            row["duration"] = len(audio) / SAMPLE_RATE

    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        futures = [pool.submit(run, chunk) for chunk in _chunks(plan)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _chunks(plan: dict[str, list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    for rows in plan.values():
        for start in range(0, len(rows), _CHUNK_SIZE):
            yield rows[start : start + _CHUNK_SIZE]


def _degrade(clean: np.ndarray, row: dict[str, Any]) -> np.ndarray:
    """Pad with a little silence, set the level, add white noise at the row's SNR, quantise to 16 bits."""
    rng = np.random.default_rng(row["seed"])
    peak = float(np.abs(clean).max())
    if peak == 0.0:
        raise ValueError(f"eSpeak NG produced silence for {row['text']!r} ({row['speaker']}).")
    speech = clean * (10 ** (row["gain_db"] / 20) / peak)
    lead, trail = (int(rng.uniform(*_PAD_SECONDS) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise_power = np.mean(speech.astype(np.float64) ** 2) / 10 ** (row["snr_db"] / 10)
    audio += rng.standard_normal(len(audio)) * np.sqrt(noise_power)
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
