"""Gradio Space: an original speech model and its HJ-pruned version, side by side.

Pick a model pair, record or upload speech (or pick a bundled synthetic example) and compare what the
two models say (greedy CTC transcript, or intent), how long this call took on each, their parameters
and MACs per second of audio, and which conv channels, heads and FFN units the pruned model kept.

Model pairs (`Entry`: name, task, original, pruned; each model a local folder or a Hub repo id) come
from the runs of `hjprune demo` found in `HJPRUNE_DEMO_DIR` (default `outputs/demo` under the current
directory or the repository root) and from a JSON file, `HJPRUNE_SPACE_MODELS` (default `models.json`
next to this file). Run `python app.py` to serve it; importing it starts nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf
import soxr
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
)

import hf_hjprune  # noqa: F401  (registers the pruned models with the Auto classes)
from hf_hjprune import count_macs, count_params
from hf_hjprune.data import AudioError, load_audio
from hf_hjprune.structure import SAMPLING_RATE, unit_counts

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).absolute().parent  # not resolve(): a symlinked app.py (Hub cache) keeps its folder
EXAMPLES_DIR = APP_DIR / "examples"
DEFAULT_MODELS_FILE = APP_DIR / "models.json"
DEFAULT_DEMO_DIR = Path("outputs/demo")

TITLE = "HJ-Pruning: original vs pruned speech model"
SELECTOR_LABEL = "Model pair"
TASKS = {"asr": "speech recognition (greedy CTC decoding)", "slu": "intent classification"}
MODEL_CLASS_SUFFIXES = {"asr": ("ForCTC",), "slu": ("ForSequenceClassification", "ForAudioClassification")}

MIN_SAMPLES = 400  # 25 ms: the receptive field of the wav2vec2 CNN, one output frame
MAX_SECONDS = 30.0  # longer audio is truncated (with a note): bounds the CPU time of one call
SILENCE_PEAK = 1e-3
TIMING_BUDGET_SECONDS = 1.0  # timed runs stop after this much time, or after MAX_TIMED_RUNS
MAX_TIMED_RUNS = 5
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 32
MAX_FILE_SIZE = "50mb"

NO_AUDIO = "**No audio yet.** Record with the microphone, upload a file, or pick one of the examples."
NO_ENTRIES = """**No model pair is available yet.** To create one, in a checkout of hf_hjprune run

```bash
make demo
```

It trains a small dense and an HJ-pruned model for speech recognition and for intent classification on
synthetic speech (a few minutes on a CPU) into `outputs/demo`; then restart this app. Or list pairs in
`models.json` next to `app.py` (or the file named by `HJPRUNE_SPACE_MODELS`):
`[{"name": "...", "task": "asr" or "slu", "original": "folder or org/repo", "pruned": "folder or org/repo"}]`.
`HJPRUNE_DEMO_DIR` points the app at another `hjprune demo` output folder."""
FILE_ERRORS = {
    "corrupt": "**This file is not audio that can be decoded.** Upload a WAV, FLAC or OGG recording of speech.",
    "empty": "**The audio file has no samples.**",
    "nan": "**The audio contains NaN or infinite values.**",
}
INTRO = (
    "[HJ-Pruning](https://arxiv.org/abs/2302.14132) removes conv channels of the CNN feature extractor "
    "and attention heads and FFN units of the Transformer of wav2vec2 / HuBERT / WavLM models, jointly, "
    "under a budget on MACs. Pick a pair of models, then record, upload or pick a clip: both models run "
    f"on it (at most {MAX_SECONDS:.0f} s are used) on this machine's CPU."
)


@dataclass(frozen=True)
class Entry:
    """A model pair to compare: `original` and `pruned` are local folders or Hub repo ids."""

    name: str
    task: str
    original: str
    pruned: str


class InputError(ValueError):
    """Input the app cannot use; the message (Markdown) is meant for the person using the app."""


class ModelLoadError(RuntimeError):
    """A model of an entry that cannot be loaded; the message says which one and why."""


# -- model pairs ----------------------------------------------------------------------------------


def _resolve_source(value: str, base: Path) -> str:
    """A folder (relative to `base`) as an absolute path, or a Hub repo id as it is.

    A value that names no folder is a repo id when it has the form of one (`name` or `org/name`).
    """
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        return str(path.resolve())
    try:
        validate_repo_id(value)
    except HFValidationError:
        return str(path.resolve())
    return value


def _is_local(source: str) -> bool:
    return os.path.isabs(source)


def entry_from_dict(item: Any, base: Path) -> Entry:
    """An entry from its JSON form; relative folders are relative to `base`."""
    if not isinstance(item, Mapping):
        raise ValueError("expected an object with name, task, original and pruned")
    missing = [key for key in ("name", "task", "original", "pruned") if not isinstance(item.get(key), str)]
    if missing:
        raise ValueError(f"missing or not a string: {', '.join(missing)}")
    if item["task"] not in TASKS:
        raise ValueError(f"task {item['task']!r} is not one of {', '.join(TASKS)}")
    return Entry(
        item["name"],
        item["task"],
        _resolve_source(item["original"], base),
        _resolve_source(item["pruned"], base),
    )


def load_entries_file(path: Path) -> tuple[list[Entry], list[str]]:
    """The entries of a JSON file (a list of entry objects) and notes on what was skipped."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [], [f"`{path}` cannot be read: {err}"]
    if not isinstance(items, list):
        return [], [f"`{path}` must hold a JSON list of entries"]
    entries, notes = [], []
    for number, item in enumerate(items, start=1):
        try:
            entries.append(entry_from_dict(item, path.parent))
        except ValueError as err:
            notes.append(f"`{path}`: entry {number} skipped ({err})")
    return entries, notes


def discover_demo_entries(demo_dir: Path) -> tuple[list[Entry], list[str]]:
    """One entry per pruned run of `hjprune demo`, paired with the dense run of the same task.

    A run is a folder with `summary.json` (its `recipe.task` and `variant`; `"none"` is dense) and `model/`.
    """
    dense: dict[str, list[Path]] = {}
    pruned: list[tuple[str, Path]] = []
    for summary_path in sorted(demo_dir.glob("*/summary.json")):
        run = summary_path.parent
        if not (run / "model" / "config.json").is_file():
            continue
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            task, variant = summary["recipe"]["task"], summary["variant"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if task not in TASKS:
            continue
        if variant == "none":
            dense.setdefault(task, []).append(run)
        else:
            pruned.append((task, run))
    entries, notes = [], []
    for task, run in pruned:
        candidates = dense.get(task)
        if not candidates:
            notes.append(f"demo run `{run.name}` has no dense {task.upper()} run to compare with")
            continue
        original = next((r for r in candidates if r.name == f"{task}_dense"), candidates[0])
        name = f"demo {task.upper()}: {original.name} vs {run.name}"
        entries.append(Entry(name, task, str((original / "model").resolve()), str((run / "model").resolve())))
    return entries, notes


def default_demo_dir() -> Path:
    """`HJPRUNE_DEMO_DIR`, else `outputs/demo` under the current directory or the repository root."""
    if os.environ.get("HJPRUNE_DEMO_DIR"):
        return Path(os.environ["HJPRUNE_DEMO_DIR"])
    candidates = [Path.cwd() / DEFAULT_DEMO_DIR, APP_DIR.parent.parent / DEFAULT_DEMO_DIR]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def _hub_available(source: str) -> bool:
    """A Hub repo can be used when online, or offline when its config is in the local cache."""
    return not hub_constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(source, "config.json"), str)


def load_entries(
    models_file: str | os.PathLike | None = None, demo_dir: str | os.PathLike | None = None
) -> tuple[list[Entry], list[str]]:
    """The available entries (demo runs first, then the models file) and notes on what was left out."""
    entries, notes = discover_demo_entries(Path(demo_dir) if demo_dir is not None else default_demo_dir())
    path = models_file or os.environ.get("HJPRUNE_SPACE_MODELS")
    if path or DEFAULT_MODELS_FILE.is_file():
        file_entries, file_notes = load_entries_file(Path(path or DEFAULT_MODELS_FILE))
        entries += file_entries
        notes += file_notes
    available, names = [], set()
    for entry in entries:
        offline = [s for s in (entry.original, entry.pruned) if not _is_local(s) and not _hub_available(s)]
        if entry.name in names:
            notes.append(f"duplicate entry name `{entry.name}`: only the first is used")
        elif offline:
            notes.append(
                f"`{entry.name}` hidden: offline (HF_HUB_OFFLINE) and not in the Hub cache: {', '.join(offline)}"
            )
        else:
            available.append(entry)
            names.add(entry.name)
    return available, notes


@functools.cache
def _default_entries() -> tuple[tuple[Entry, ...], tuple[str, ...]]:
    entries, notes = load_entries()
    return tuple(entries), tuple(notes)


def _find_entry(name: str | None, entries: Sequence[Entry]) -> Entry:
    if not entries:
        raise InputError(NO_ENTRIES)
    if not name:
        raise InputError(f"**Pick a model pair** ({SELECTOR_LABEL}).")
    for entry in entries:
        if entry.name == name:
            return entry
    raise InputError(f"**Unknown model pair {name!r}.** Pick one of: {', '.join(e.name for e in entries)}.")


# -- models ---------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model with its pre- and post-processing and its costs, loaded once per (source, task)."""

    source: str
    model: PreTrainedModel
    feature_extractor: Any
    tokenizer: Wav2Vec2CTCTokenizer | None
    params: float
    macs_per_second: float
    cnn_share: float
    min_samples: int

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config


_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def receptive_field(config: PretrainedConfig) -> int:
    """Input samples needed for one output frame of the CNN feature extractor."""
    size = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        size = (size - 1) * stride + kernel
    return size


def _load(source: str, task: str) -> LoadedModel:
    config = AutoConfig.from_pretrained(source)
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(MODEL_CLASS_SUFFIXES[task]) for a in architectures):
        raise ValueError(f"it is a {architectures[0]}, not a model for {TASKS[task]}")
    auto_class = AutoModelForCTC if task == "asr" else AutoModelForAudioClassification
    model = auto_class.from_pretrained(source, config=config).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(source)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(source) if task == "asr" else None
    macs = count_macs(model, seconds=1.0)
    return LoadedModel(
        source=source,
        model=model,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        params=float(count_params(model).total),
        macs_per_second=float(macs.total),
        cnn_share=float(macs.cnn / macs.total),
        min_samples=max(MIN_SAMPLES, receptive_field(config)),
    )


def load_model(source: str, task: str) -> LoadedModel:
    """The model at `source` (folder or Hub id) for `task`, loaded on first use and then cached.

    Raises:
        ModelLoadError: It cannot be downloaded or read, is not a model for `task`, or is of an
            unsupported family. Failures are not cached: the next call tries again.
    """
    key = (source, task)
    if key not in _MODELS:
        with _MODELS_LOCK:
            if key not in _MODELS:
                try:
                    _MODELS[key] = _load(source, task)
                # Whatever goes wrong in transformers / huggingface_hub, the user gets a message.
                except Exception as err:
                    logger.warning("cannot load %s: %s", source, err)
                    raise ModelLoadError(f"**Cannot load the model `{source}`:** {err}") from err
    return _MODELS[key]


def load_pair(entry: Entry) -> tuple[LoadedModel, LoadedModel]:
    """The original and pruned models of an entry."""
    return load_model(entry.original, entry.task), load_model(entry.pruned, entry.task)


# -- audio ----------------------------------------------------------------------------------------


@dataclass
class PreparedAudio:
    """Mono float32 audio at 16 kHz, and notes on what was done to the input."""

    samples: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLING_RATE


def _describe_input(rate: int, channels: int) -> str:
    changes = [f"resampled from {rate / 1000:g} kHz"] if rate != SAMPLING_RATE else []
    if channels > 1:
        changes.append(f"mixed down from {channels} channels")
    return ", ".join(changes)


def _read_file(path: str) -> tuple[np.ndarray, str]:
    try:
        # Length and silence are checked below, the same way as for arrays.
        samples = load_audio(path, SAMPLING_RATE, min_samples=0, silence_threshold=0.0)
    except FileNotFoundError as err:
        raise InputError("**The uploaded file is no longer available.** Please upload it again.") from err
    except AudioError as err:
        raise InputError(FILE_ERRORS.get(err.reason, str(err))) from err
    info = sf.info(path)
    return samples, _describe_input(info.samplerate, info.channels)


def _from_array(rate: Any, data: Any) -> tuple[np.ndarray, str]:
    """`(sample rate, array)` as `gr.Audio(type="numpy")` gives it: int16, int32, uint8 or float samples,
    shaped `(samples,)` or `(samples, channels)` (a `(channels, samples)` array is recognised too)."""
    try:
        rate = int(rate)
    except (TypeError, ValueError) as err:
        raise InputError(f"**Invalid sample rate {rate!r}.**") from err
    try:
        data = np.asarray(data)
    except ValueError as err:  # ragged nested lists
        raise InputError(f"**The audio is not an array of samples:** {err}") from err
    if rate <= 0:
        raise InputError(f"**Invalid sample rate {rate} Hz.**")
    if data.ndim not in (1, 2):
        raise InputError(f"**Audio must be 1-D (mono) or 2-D (samples × channels), not {data.ndim}-D.**")
    if data.size == 0:
        raise InputError("**The audio has no samples.**")
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.signedinteger):
        samples = data.astype(np.float32) / (np.iinfo(data.dtype).max + 1.0)
    elif np.issubdtype(data.dtype, np.floating):
        samples = data.astype(np.float32)
    else:
        raise InputError(f"**Unsupported sample type {data.dtype}:** expected integer or float samples.")
    if not np.isfinite(samples).all():
        raise InputError(FILE_ERRORS["nan"])
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
        samples = samples.T
    channels = samples.shape[1] if samples.ndim == 2 else 1
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if rate != SAMPLING_RATE:
        samples = soxr.resample(samples, rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    return samples, _describe_input(rate, channels)


def prepare_audio(audio: Any, min_samples: int = MIN_SAMPLES) -> PreparedAudio:
    """Mono 16 kHz float32 audio from a file path or a `(sample rate, array)` pair.

    Audio longer than `MAX_SECONDS` is truncated, with a note.

    Raises:
        InputError: No audio, not decodable, empty, NaN, shorter than `min_samples` at 16 kHz, or silent.
    """
    if audio is None or (isinstance(audio, str) and not audio):
        raise InputError(NO_AUDIO)
    if isinstance(audio, str | os.PathLike):
        samples, changes = _read_file(os.fspath(audio))
    elif isinstance(audio, tuple | list) and len(audio) == 2:
        samples, changes = _from_array(*audio)
    else:
        raise InputError(
            f"**Unsupported audio input** ({type(audio).__name__}): expected a file or (rate, array)."
        )
    notes = [f"Input {changes}."] if changes else []
    if len(samples) < min_samples:
        raise InputError(
            f"**The audio is too short:** {1000 * len(samples) / SAMPLING_RATE:.1f} ms. The models need at "
            f"least {min_samples} samples at 16 kHz ({1000 * min_samples / SAMPLING_RATE:.0f} ms), the "
            "receptive field of their CNN."
        )
    limit = int(MAX_SECONDS * SAMPLING_RATE)
    if len(samples) > limit:
        notes.append(
            f"The audio is {len(samples) / SAMPLING_RATE:.1f} s long: only the first {MAX_SECONDS:.0f} s "
            "are used (a cap that keeps this CPU demo responsive)."
        )
        samples = samples[:limit]
    peak = float(np.abs(samples).max())
    if peak < SILENCE_PEAK:
        raise InputError(
            f"**The audio is silent** (peak amplitude {peak:.1e}). If you recorded it, check that the "
            "browser may use the microphone and that it is not muted."
        )
    return PreparedAudio(np.ascontiguousarray(samples), notes)


# -- comparison -----------------------------------------------------------------------------------


@dataclass
class ModelResult:
    """What one model did on the clip, and what it costs."""

    source: str
    prediction: str
    latency_ms: float
    params: float
    macs_per_second: float
    cnn_share: float
    clip_macs: float


@dataclass
class Comparison:
    """Both models on one clip; `runs` timed forward passes each (the latency is their median)."""

    entry: str
    task: str
    seconds: float
    runs: int
    original: ModelResult
    pruned: ModelResult
    notes: list[str]

    @property
    def measured_speedup(self) -> float:
        return self.original.latency_ms / self.pruned.latency_ms

    @property
    def ideal_speedup(self) -> float:
        return self.original.clip_macs / self.pruned.clip_macs

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "measured_speedup": self.measured_speedup,
            "ideal_speedup": self.ideal_speedup,
        }


def _decode(loaded: LoadedModel, logits: torch.Tensor) -> str:
    if loaded.tokenizer is not None:
        text = loaded.tokenizer.decode(logits[0].argmax(-1).tolist()).strip()
        return text or "(no words recognised)"
    probs = logits[0].softmax(-1)
    top = probs.topk(min(3, probs.numel()))
    labels = loaded.config.id2label
    return " · ".join(f"{labels[int(i)]} {float(p):.0%}" for p, i in zip(top.values, top.indices))


@torch.inference_mode()
def _timed_forward(
    models: Sequence[LoadedModel], samples: np.ndarray
) -> tuple[list[torch.Tensor], list[float], int]:
    """Logits of each model, and the median latency (ms) of up to `MAX_TIMED_RUNS` interleaved passes.

    One untimed pass per model comes first: the first pass on a new input length is much slower.
    """
    inputs = [
        torch.as_tensor(
            m.feature_extractor(samples, sampling_rate=SAMPLING_RATE, return_tensors="np").input_values
        )
        for m in models
    ]
    logits = [m.model(x).logits for m, x in zip(models, inputs)]
    times: list[list[float]] = [[] for _ in models]
    started = time.perf_counter()
    while len(times[0]) < MAX_TIMED_RUNS:
        # Alternate the order, so that neither model always runs on a warmer cache.
        order = range(len(models)) if len(times[0]) % 2 == 0 else reversed(range(len(models)))
        for i in order:
            start = time.perf_counter()
            logits[i] = models[i].model(inputs[i]).logits
            times[i].append(time.perf_counter() - start)
        if time.perf_counter() - started > TIMING_BUDGET_SECONDS:
            break
    return logits, [1000 * statistics.median(t) for t in times], len(times[0])


def run_comparison(entry: Entry, audio: Any) -> Comparison:
    """Run both models of `entry` on `audio` (a file path or `(rate, array)`).

    Raises:
        InputError: The audio cannot be used (the message says why).
        ModelLoadError: A model cannot be loaded.
    """
    original, pruned = load_pair(entry)
    clip = prepare_audio(audio, max(original.min_samples, pruned.min_samples))
    logits, latencies, runs = _timed_forward((original, pruned), clip.samples)
    results = [
        ModelResult(
            source=loaded.source,
            prediction=_decode(loaded, out),
            latency_ms=latency,
            params=loaded.params,
            macs_per_second=loaded.macs_per_second,
            cnn_share=loaded.cnn_share,
            clip_macs=float(count_macs(loaded.model, seconds=clip.seconds).total),
        )
        for loaded, out, latency in zip((original, pruned), logits, latencies)
    ]
    return Comparison(entry.name, entry.task, clip.seconds, runs, *results, clip.notes)


def _si(value: float) -> str:
    for factor, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:.0f}"


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before:+.0%}"


def results_markdown(comparison: Comparison) -> str:
    """The latency, cost and speedup table of a comparison."""
    o, p = comparison.original, comparison.pruned
    runs = f"median of {comparison.runs} run{'s' if comparison.runs > 1 else ''}"
    rows = [
        "| | Original | Pruned | Pruned vs original |",
        "|---|---:|---:|---:|",
        f"| Latency of this call ({runs}) | {o.latency_ms:.1f} ms | {p.latency_ms:.1f} ms "
        f"| **{comparison.measured_speedup:.2f}× measured speedup** |",
        f"| MACs for this clip ({comparison.seconds:.2f} s) | {_si(o.clip_macs)} | {_si(p.clip_macs)} "
        f"| **{comparison.ideal_speedup:.2f}× ideal speedup** |",
        f"| MACs per second of audio | {_si(o.macs_per_second)} | {_si(p.macs_per_second)} "
        f"| {_change(o.macs_per_second, p.macs_per_second)} |",
        f"| CNN share of MACs | {o.cnn_share:.0%} | {p.cnn_share:.0%} | |",
        f"| Parameters | {_si(o.params)} | {_si(p.params)} | {_change(o.params, p.params)} |",
    ]
    return "\n".join(rows) + (
        "\n\nMeasured speedup: ratio of the latencies (batch 1, this machine's CPU; other requests "
        "running at the same time slow both down). Ideal speedup: ratio of the MACs."
    )


def compare(
    entry_name: str | None, audio: Any, entries: Sequence[Entry] | None = None
) -> tuple[str, str, str, str, dict[str, Any] | None]:
    """The UI handler: `(message, original output, pruned output, results table, numbers)`.

    Never raises: whatever goes wrong comes back as a readable message with empty outputs.
    """
    entries = _default_entries()[0] if entries is None else entries
    try:
        comparison = run_comparison(_find_entry(entry_name, entries), audio)
    except (InputError, ModelLoadError) as err:
        return str(err), "", "", "", None
    # A bug must not leave the user with a bare "Error": log it, say what happened.
    except Exception as err:
        logger.exception("comparison failed")
        return f"**Something went wrong:** {type(err).__name__}: {err}", "", "", "", None
    message = " ".join(
        [f"Compared on {comparison.seconds:.2f} s of audio ({TASKS[comparison.task]}).", *comparison.notes]
    )
    return (
        message,
        comparison.original.prediction,
        comparison.pruned.prediction,
        results_markdown(comparison),
        comparison.as_dict(),
    )


# -- structure ------------------------------------------------------------------------------------


def structure_figure(original: PretrainedConfig, pruned: PretrainedConfig) -> Figure:
    """Bars of the units per layer of the original model, with the pruned model's kept units over them."""
    before, after = unit_counts(original), unit_counts(pruned)
    panels = (
        ("conv", "CNN: channels per conv layer", "conv layer"),
        ("heads", "Attention heads per layer", "Transformer layer"),
        ("ffn", "FFN units per layer", "Transformer layer"),
    )
    figure = Figure(figsize=(11, 3.2), dpi=100, layout="constrained")
    for ax, (group, title, xlabel) in zip(figure.subplots(1, 3), panels):
        kept, total = after[group], before[group]
        share = sum(kept) / sum(total) if sum(total) else 1.0
        ax.bar(range(len(total)), total, color="#d9d9d9", edgecolor="#7f7f7f", label="original")
        ax.bar(range(len(kept)), kept, width=0.6, color="#ff9d00", label="pruned (kept)")
        ax.set_title(f"{title}: {share:.0%} kept", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_xticks(range(len(total)))
        ax.set_ylim(0, max(max(total), max(kept), 1) * 1.1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.axes[0].legend(loc="upper right", fontsize=8)
    return figure


def describe(entry_name: str | None, entries: Sequence[Entry] | None = None) -> tuple[str, Figure | None]:
    """Load an entry's models; return a summary of the pair (Markdown) and the structure chart."""
    entries = _default_entries()[0] if entries is None else entries
    try:
        entry = _find_entry(entry_name, entries)
        original, pruned = load_pair(entry)
    except (InputError, ModelLoadError) as err:
        return str(err), None
    text = (
        f"**Task:** {TASKS[entry.task]}  \n**Original:** `{entry.original}`  \n**Pruned:** `{entry.pruned}`  \n"
        f"Parameters {_si(original.params)} → {_si(pruned.params)} ({_change(original.params, pruned.params)}); "
        f"MACs per second of audio {_si(original.macs_per_second)} → {_si(pruned.macs_per_second)} "
        f"({_change(original.macs_per_second, pruned.macs_per_second)}; CNN share {original.cnn_share:.0%} → "
        f"{pruned.cnn_share:.0%})."
    )
    return text, structure_figure(original.config, pruned.config)


# -- user interface -------------------------------------------------------------------------------


def example_files() -> list[Path]:
    """The bundled example clips (written by `make_examples.py`)."""
    return sorted(EXAMPLES_DIR.glob("*.wav"))


def build_demo(entries: Sequence[Entry] | None = None) -> gr.Blocks:
    """The app, with the default entries (demo runs and models file) unless `entries` is given.

    Loads the models of the first entry.
    """
    notes: Sequence[str] = ()
    if entries is None:
        entries, notes = _default_entries()
    entries = list(entries)
    names = [entry.name for entry in entries]

    def compare_pair(
        entry_name: str | None, audio: str | None
    ) -> tuple[str, str, str, str, dict[str, Any] | None]:
        """Run the original and the pruned model of a pair on a clip.

        Args:
            entry_name: The model pair.
            audio: A speech recording (WAV, FLAC or OGG; the first 30 s are used).
        """
        return compare(entry_name, audio, entries)

    def describe_pair(entry_name: str | None) -> tuple[str, Figure | None]:
        """Sources, costs and pruned structure of a model pair."""
        return describe(entry_name, entries)

    # The first pair is loaded now: its chart is in the page from the start, and the first request
    # does not wait for the models.
    first_info, first_plot = describe_pair(names[0]) if names else ("", None)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n\n{INTRO}")
        if notes:
            gr.Markdown("Left out: " + "; ".join(notes) + ".")
        with gr.Row():
            selector = gr.Dropdown(
                choices=names, value=names[0] if names else None, label=SELECTOR_LABEL, scale=1
            )
            info = gr.Markdown(first_info)
        with gr.Row():
            audio = gr.Audio(
                sources=["microphone", "upload"],
                type="filepath",
                label=f"Speech (record or upload; at most {MAX_SECONDS:.0f} s are used)",
                scale=3,
            )
            button = gr.Button("Compare", variant="primary", scale=1)
        examples = example_files()
        if examples:
            gr.Examples(
                examples=[[str(path)] for path in examples],
                inputs=[audio],
                example_labels=[path.stem.replace("_", " ") for path in examples],
                cache_examples=False,
                label="Synthetic examples (eSpeak NG)",
            )
        message = gr.Markdown(NO_ENTRIES if not entries else "")
        with gr.Row():
            original_output = gr.Textbox(label="Original model", interactive=False)
            pruned_output = gr.Textbox(label="Pruned model", interactive=False)
        table = gr.Markdown()
        gr.Markdown("**Pruned structure:** kept units per layer (orange) against the original (grey).")
        plot = gr.Plot(first_plot, label="Pruned structure", show_label=False, format="png")
        with gr.Accordion("All numbers (JSON)", open=False):
            numbers = gr.JSON(label="Comparison")

        selector.change(describe_pair, selector, [info, plot], api_name="describe", concurrency_id="models")
        button.click(
            compare_pair,
            [selector, audio],
            [message, original_output, pruned_output, table, numbers],
            api_name="compare",
            concurrency_id="models",
        )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def launch_options() -> dict[str, Any]:
    """Keyword arguments of `launch()` besides the server address (Gradio 6: theme and footer go here)."""
    return {"theme": gr.themes.Soft(), "footer_links": ["api", "gradio"], "max_file_size": MAX_FILE_SIZE}


def main() -> None:
    """Serve the app (`python app.py`; on a Space, the Space runs this)."""
    # Requests run CONCURRENCY_LIMIT at a time: give each its share of the cores. Oversubscribed
    # intra-op threads wait for each other and make latencies erratic.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // CONCURRENCY_LIMIT))
    build_demo().launch(**launch_options())


if __name__ == "__main__":
    main()
