"""An out-of-domain test set: the command corpus's test sentences spoken by flite, another synthesizer.

Every model here learns from eSpeak NG (pretraining and fine-tuning alike); flite (Debian package
`flite`, voices awb, rms, slt, kal16 and the 8 kHz kal) is reserved for this evaluation and never trained
on. Each test row keeps its text and intent and is spoken by one flite voice in turn, then degraded as
the corpus degrades its audio (silence padding, level, white noise at 25-40 dB SNR). The set is built
once next to the corpus::

    flite_test/test.jsonl, flite_test/00000.wav ...
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from datasets import Dataset

from .audio import load_audio
from .corpus import _degrade
from .speech_synth import SAMPLE_RATE

FLITE_VOICES = ("awb", "rms", "slt", "kal16", "kal")
FLITE_TEST_VERSION = 1
_METADATA = "flite_test.json"


class FliteNotInstalledError(RuntimeError):
    """The `flite` program is not on the PATH."""


def flite_available() -> bool:
    """Whether the `flite` program is installed."""
    return shutil.which("flite") is not None


def build_flite_test(test_split: Dataset, output_dir: str | os.PathLike, seed: int = 0) -> Dataset:
    """The rows of `test_split` (`text`, `intent`) spoken by flite, as a split with `audio` paths.

    Raises:
        FliteNotInstalledError: flite is not installed (`apt-get install flite`).
    """
    if not flite_available():
        raise FliteNotInstalledError("flite is not installed (Debian: apt-get install flite)")
    output_dir = Path(output_dir)
    texts, intents = list(test_split["text"]), list(test_split["intent"])
    key = hashlib.sha256(json.dumps([FLITE_TEST_VERSION, seed, texts, intents]).encode()).hexdigest()[:16]
    if _cache_key(output_dir) != key:
        _build(output_dir, texts, intents, seed, key)
    with open(output_dir / "test.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row["audio"] = str(output_dir.resolve() / row["audio"])
    return Dataset.from_list(rows)


def _build(output_dir: Path, texts: list[str], intents: list, seed: int, key: str) -> None:
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=output_dir.parent if output_dir.parent.exists() else None))
    try:
        rows = []
        for i, (text, intent) in enumerate(zip(texts, intents, strict=True)):
            voice = FLITE_VOICES[i % len(FLITE_VOICES)]
            raw = tmp_dir / "raw.wav"
            subprocess.run(
                ["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True
            )
            rng = np.random.default_rng([seed, 99, i])
            row = {"text": text, "speaker": f"flite-{voice}", "seed": int(rng.integers(2**31)),
                   "gain_db": float(rng.uniform(-18.0, -3.0)), "snr_db": float(rng.uniform(25.0, 40.0))}  # fmt: skip
            audio = _degrade(load_audio(raw, SAMPLE_RATE), row)
            sf.write(tmp_dir / f"{i:05d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
            rows.append(
                {"audio": f"{i:05d}.wav", "text": text, "intent": intent, "speaker": f"flite-{voice}"}
            )
        (tmp_dir / "raw.wav").unlink(missing_ok=True)
        (tmp_dir / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tmp_dir / _METADATA).write_text(
            json.dumps({"key": key, "voices": FLITE_VOICES}) + "\n", encoding="utf-8"
        )
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.rename(output_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _cache_key(output_dir: Path) -> str | None:
    try:
        return json.loads((output_dir / _METADATA).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None
