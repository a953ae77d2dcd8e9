"""Measured speed of dense and pruned models next to their MACs: `hjprune bench`.

For one model, or a dense / pruned pair, `hjprune bench` reports parameters, MACs per second of
audio (CNN / Transformer split), the latency of a forward pass at each batch size × audio length
(warm-up runs, then timed runs: median and interquartile range), the peak memory of that pass, and
for a pair the measured speedup next to the ideal MACs ratio. Optionally it also measures the
training overhead of the gates: a gated training step (`HJPruner` attached, loss + penalty) against
a dense fine-tuning step of the same model on the same batch::

    hjprune bench dense_dir pruned_dir --seconds 1 10 --batch-sizes 1 8 --output-json bench.json
    hjprune bench --pair runs/tiny_asr --output-md bench.md
    python -m hf_hjprune.bench facebook/wav2vec2-base-960h --training-overhead

What is measured:
- latency: wall time of `model(input_values)` under `torch.inference_mode()` on random audio, with a
  fixed number of intra-op threads (recorded); on CUDA the device is synchronised around each run.
  The timed runs of all models of one call are interleaved (round robin, alternating direction), so
  that slow drift of the machine's speed affects them alike. The memory measurement, when on, is the
  first warm-up run of each model.
- CPU time: the process CPU time of each timed run (all threads) is recorded too. With one thread
  it measures the work done while barely depending on other processes sharing the machine; with
  more it also counts OpenMP threads spinning while they wait for each other.
- peak memory: on CPU, the highest total of live tensor bytes allocated through PyTorch's CPU
  allocator during one forward pass, beyond what was allocated before it (so: activations and
  workspaces, not the weights), replayed from `torch.profiler` memory events. It excludes the
  allocator's own overhead and memory that libraries allocate outside PyTorch. On CUDA,
  `torch.cuda.max_memory_allocated` during the pass minus the memory allocated before it.
- training process memory (`--training-overhead`, CPU): the peak resident set size of a fresh
  process that loads the model and runs two training steps, dense and gated: what each process of
  a multi-process (`accelerate launch`) run needs, interpreter and libraries included.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import (
    MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING,
    MODEL_FOR_CTC_MAPPING,
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    PreTrainedModel,
)

from .atomic import atomic_write_text
from .cost import count_macs, count_params
from .errors import HJPruneInputError
from .memory import current_rss_mib, peak_rss_mib
from .pruner import HJPruner
from .start_models import load_start_model
from .structure import SAMPLING_RATE, head_of

DEFAULT_SECONDS = (1.0, 10.0)
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_REPEATS = 10
DEFAULT_WARMUP = 2
SPEEDUP_COLUMNS = ("dense (ms)", "pruned (ms)", "speedup", "MACs ratio")
"""Table columns of a dense/pruned timing: both times, their ratio, and the ideal ratio (of the MACs)."""
TRAINING_STEP_COLUMNS = ("dense step (ms)", "gated step (ms)", "ratio", "CPU-time ratio")
"""Table columns of a dense/gated training-step timing."""
AUTO_CLASSES = {
    AutoModelForCTC: MODEL_FOR_CTC_MAPPING,
    AutoModelForAudioClassification: MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING,
    AutoModel: MODEL_MAPPING,
}
"""The Auto classes `load_model` tries, in order, with their public config → model class mappings (the
ones `AutoModel*.register` adds to, so they include the HJPruned classes)."""

TIMING_NOTE = (
    "wall time of model(input_values) on random audio under torch.inference_mode(); warm-up runs (the "
    "memory measurement, when on, is the first), then timed runs of all models interleaved (round robin, "
    "alternating direction); CUDA synchronised"
)
MEMORY_NOTE = (
    "CPU: peak of live tensor bytes allocated through PyTorch's CPU allocator during one forward pass, "
    "beyond the bytes live before it (activations and workspaces, not weights; torch.profiler memory "
    "events); CUDA: torch.cuda.max_memory_allocated during the pass minus memory_allocated before it"
)

# ---------------------------------------------------------------------------------------------
# loading


def load_model(name_or_path: str) -> nn.Module:
    """A model from a local path or Hub id, through the Auto classes (stock or HJPruned: importing
    `hf_hjprune` registered the latter).

    The Auto classes are tried in the order CTC, audio classification, base model; the first one
    that builds the checkpoint's architecture (`config.architectures`) is used, so a base checkpoint
    is not given a randomly initialised head. Without recorded architectures, the first that loads wins.
    """
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise HJPruneInputError(f"cannot load {name_or_path!r}: {err}") from err
    wanted = set(getattr(config, "architectures", None) or [])
    errors = []
    for auto_class, mapping in AUTO_CLASSES.items():
        model_class = mapping.get(type(config), None)
        if model_class is None or (wanted and model_class.__name__ not in wanted):
            continue
        try:
            return auto_class.from_pretrained(name_or_path, config=config).eval()
        except (OSError, ValueError) as err:
            errors.append(f"{auto_class.__name__}: {err}")
    detail = "; ".join(errors) or f"no Auto class builds {sorted(wanted) or type(config).__name__}"
    raise HJPruneInputError(f"cannot load {name_or_path!r}: {detail}")


def dense_model_of_run(run_dir: str | Path, pruned: nn.Module) -> nn.Module:
    """The model a training run started from, with the pruned model's task head.

    Read from the run's `summary.json` and built by `start_models.load_start_model` (a `tiny:` model
    gets random weights: timing does not depend on them). Its MACs must match the run's recorded dense MACs.
    """
    summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    recipe = summary.get("recipe", {})
    source = recipe.get("model")
    if not source:
        raise HJPruneInputError(f"{run_dir}/summary.json names no starting model (recipe.model)")
    head = head_of(pruned)
    task = {}
    if head == "ctc":
        task = dict(vocab_size=pruned.config.vocab_size)
    elif head == "classification":
        task = dict(num_labels=pruned.config.num_labels)
    overrides = {**recipe.get("model_config", {}), **task}
    try:
        dense, _ = load_start_model(source, head, overrides)
    except HJPruneInputError as err:
        cause = err.__cause__ or err
        raise HJPruneInputError(
            f"cannot load the run's starting model {source!r} ({cause}); pass it with --dense PATH"
        ) from cause
    recorded = summary.get("macs", {})
    if "before" in recorded and "seconds" in recorded:
        expected, actual = recorded["before"]["total"], count_macs(dense, recorded["seconds"]).total
        if abs(expected - actual) > 1e-6 * expected:
            raise HJPruneInputError(
                f"the starting model {source!r} has {actual:.4g} MACs but the run recorded {expected:.4g}: "
                "pass the run's starting model with --dense PATH"
            )
    return dense.eval()


# ---------------------------------------------------------------------------------------------
# measurement


def machine_info() -> dict[str, Any]:
    """Versions, CPU, threads and the date: what the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name()
    return info


def default_devices() -> list[str]:
    """CPU, and CUDA when available."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _audio(batch_size: int, seconds: float, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    num_samples = int(round(seconds * SAMPLING_RATE))
    return torch.randn(batch_size, num_samples, generator=generator).to(device)


def summarize(times_ms: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles, interquartile range and minimum of timings in milliseconds."""
    q25, median, q75 = np.percentile(np.asarray(times_ms, dtype=float), [25, 50, 75])
    return {
        "median_ms": float(median),
        "iqr_ms": float(q75 - q25),
        "q25_ms": float(q25),
        "q75_ms": float(q75),
        "min_ms": float(min(times_ms)),
        "runs": len(times_ms),
    }


@dataclass
class Timings:
    """Per step: wall times and process CPU times (all threads) of the timed runs, in ms."""

    wall_ms: dict[str, list[float]]
    cpu_ms: dict[str, list[float]]


def interleaved_times(
    steps: Mapping[str, Callable[[], Any]], repeats: int, warmup: int, device: str = "cpu"
) -> Timings:
    """Run every step `warmup` times, then time `repeats` rounds of all steps.

    Rounds alternate direction (a b c, c b a, ...), so that no step always runs first or last.
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    _synchronize(device)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    gc.collect()
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name]()
            _synchronize(device)
            timings.wall_ms[name].append((time.perf_counter() - start) * 1e3)
            timings.cpu_ms[name].append((time.process_time() - cpu_start) * 1e3)
    return timings


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[int]:
    """Use `threads` intra-op CPU threads inside the block (None: leave as is); yields the count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@torch.inference_mode()
def peak_memory_mib(model: nn.Module, input_values: torch.Tensor) -> float | None:
    """Peak extra memory (MiB) of one forward pass, as described in the module docstring; None for a
    model run outside PyTorch (ONNX Runtime), whose allocations PyTorch does not see."""
    if _runtime(model) != "PyTorch":
        return None
    return peak_step_memory_mib(lambda: model(input_values=input_values), input_values.device.type)


def peak_step_memory_mib(step: Callable[[], Any], device: str = "cpu") -> float:
    """Peak extra memory (MiB) while `step()` runs: the most bytes allocated through PyTorch at once
    beyond those allocated before it (see the module docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():  # kineto prints a line to stderr at each start and stop
        prof.start()
    try:
        step()
    finally:
        with _stderr_silenced():
            prof.stop()
    live = peak = 0
    for event in _memory_events(prof):
        if event["args"]["Device Type"] == CPU_DEVICE_TYPE:
            live += event["args"]["Bytes"]
            peak = max(peak, live)
    return peak / 2**20


CPU_DEVICE_TYPE = 0
"""`c10::DeviceType::CPU`, as the profiler's trace writes the device of a memory event."""


def _memory_events(prof: Any) -> list[dict[str, Any]]:
    """The allocation (positive bytes) and free (negative) events of a `torch.profiler.profile` run, in
    time order, read from its public Chrome trace export (the profiler has no public API for them)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as file:
            trace = json.load(file)
    events = [e for e in trace["traceEvents"] if e.get("name") == "[memory]"]
    return sorted(events, key=lambda e: float(e["ts"]))


def _runtime(model: nn.Module) -> str:
    """`"PyTorch"`, or the runtime of an exported model (`export.OnnxRuntimeModel`)."""
    return getattr(model, "runtime", "PyTorch")


def _costed(model: nn.Module) -> nn.Module:
    """The PyTorch model whose structure gives `model`'s parameters and MACs (an export's source)."""
    return getattr(model, "exported_from", None) or model


def _model_entry(model: nn.Module) -> dict[str, Any]:
    return {
        "class": type(model).__name__,
        "runtime": _runtime(model),
        "source": getattr(_costed(model), "name_or_path", "") or None,
        "params": count_params(_costed(model)).as_dict(),
        "macs_per_second": count_macs(_costed(model), 1.0).as_dict(),
    }


def benchmark_models(
    models: Mapping[str, nn.Module],
    pairs: Sequence[tuple[str, str]] = (),
    seconds: Sequence[float] = DEFAULT_SECONDS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    devices: Sequence[str] | None = None,
    memory: bool = True,
) -> dict[str, Any]:
    """Benchmark several models in one interleaved run; compare the `(dense, pruned)` name pairs.

    Returns the JSON document described in `benchmark_model` and `benchmark_pair`, with one entry per
    model under `"models"` and one per pair under `"pairs"`. Models are put in eval mode and moved to
    each device in turn; they are back on their first device afterwards.
    """
    devices = list(devices) if devices is not None else default_devices()
    for dense, pruned in pairs:
        if dense not in models or pruned not in models:
            raise HJPruneInputError(f"pair ({dense!r}, {pruned!r}) names a model that is not benchmarked")
    home = {name: next(model.parameters()).device for name, model in models.items()}
    with intra_op_threads(threads) as used_threads:
        result: dict[str, Any] = {
            "machine": machine_info(),
            "settings": {
                "threads": used_threads,
                "warmup": warmup,
                "repeats": repeats,
                "devices": devices,
                "seconds": [float(s) for s in seconds],
                "batch_sizes": [int(b) for b in batch_sizes],
                "sampling_rate": SAMPLING_RATE,
                "timing": TIMING_NOTE,
                "memory": MEMORY_NOTE if memory else None,
            },
            "models": {name: {**_model_entry(model), "latency": []} for name, model in models.items()},
            "pairs": [
                {"dense": dense, "pruned": pruned, "runtime": _runtime(models[pruned]), "results": []}
                for dense, pruned in pairs
            ],
        }
        for model in models.values():
            model.eval()
        try:
            for device in devices:
                for model in models.values():
                    model.to(device)
                for batch_size in batch_sizes:
                    for length in seconds:
                        _benchmark_config(
                            result, models, device, int(batch_size), float(length), repeats, warmup, memory
                        )
        finally:
            for name, model in models.items():
                model.to(home[name])
    result["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def _benchmark_config(
    result: dict[str, Any],
    models: Mapping[str, nn.Module],
    device: str,
    batch_size: int,
    seconds: float,
    repeats: int,
    warmup: int,
    memory: bool,
) -> None:
    """Time all models at one device × batch size × audio length and append the rows to `result`."""
    input_values = _audio(batch_size, seconds, device)
    # The memory measurement is a forward pass too: it stands in for the first warm-up run.
    peaks = {name: peak_memory_mib(model, input_values) if memory else None for name, model in models.items()}
    with torch.inference_mode():
        steps = {name: (lambda m=model: m(input_values=input_values)) for name, model in models.items()}
        timings = interleaved_times(steps, repeats, warmup - 1 if memory and warmup else warmup, device)
    rows = {}
    for name, model in models.items():
        row = {
            "device": device,
            "batch_size": batch_size,
            "seconds": seconds,
            "macs": count_macs(_costed(model), seconds).total * batch_size,
            **summarize(timings.wall_ms[name]),
            "cpu_median_ms": float(np.median(timings.cpu_ms[name])),
            "times_ms": timings.wall_ms[name],
            "peak_memory_mib": peaks[name],
        }
        result["models"][name]["latency"].append(row)
        rows[name] = row
    for pair in result["pairs"]:
        dense, pruned = rows[pair["dense"]], rows[pair["pruned"]]
        speedup = dense["median_ms"] / pruned["median_ms"]
        macs_ratio = dense["macs"] / pruned["macs"]
        pair["results"].append(
            {
                "device": device,
                "batch_size": batch_size,
                "seconds": seconds,
                "dense_median_ms": dense["median_ms"],
                "pruned_median_ms": pruned["median_ms"],
                "speedup": speedup,
                "macs_ratio": macs_ratio,
                "efficiency": speedup / macs_ratio,
                "cpu_speedup": dense["cpu_median_ms"] / pruned["cpu_median_ms"],
            }
        )


def benchmark_model(
    model: nn.Module,
    seconds: Sequence[float] = DEFAULT_SECONDS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    devices: Sequence[str] | None = None,
    memory: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """Params, MACs, latency and peak memory of one model at each batch size × audio length.

    Returns `{"machine", "settings", "models": {name: {"params", "macs_per_second", "latency": [row,
    ...]}}, "pairs": []}`, one latency row per device × batch size × seconds with `median_ms`,
    `iqr_ms`, `q25_ms`, `q75_ms`, `min_ms`, `runs`, `times_ms`, `macs` (of the whole batch) and
    `peak_memory_mib`.
    """
    name = name or getattr(model, "name_or_path", "") or type(model).__name__
    return benchmark_models(
        {name: model},
        seconds=seconds,
        batch_sizes=batch_sizes,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        devices=devices,
        memory=memory,
    )


def benchmark_pair(
    dense: nn.Module,
    pruned: nn.Module,
    seconds: Sequence[float] = DEFAULT_SECONDS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    devices: Sequence[str] | None = None,
    memory: bool = True,
    names: tuple[str, str] = ("dense", "pruned"),
) -> dict[str, Any]:
    """`benchmark_model` for both models, timed interleaved, plus the comparison.

    `"pairs"` holds one entry with a result per device × batch size × seconds: `dense_median_ms`,
    `pruned_median_ms`, `speedup` (their quotient), `macs_ratio` (dense MACs / pruned MACs, the
    ideal speedup) and `efficiency` (speedup / MACs ratio).
    """
    if names[0] == names[1]:
        raise HJPruneInputError(f"the two models need different names, got {names}")
    return benchmark_models(
        dict(zip(names, (dense, pruned))),
        pairs=[names],
        seconds=seconds,
        batch_sizes=batch_sizes,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        devices=devices,
        memory=memory,
    )


def _training_batch(
    model: nn.Module, batch_size: int, seconds: float, device: str
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch = {"input_values": _audio(batch_size, seconds, device)}
    head = head_of(model)
    if head == "ctc":
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(batch["input_values"].shape[1])))
        labels = torch.randint(
            1, model.config.vocab_size, (batch_size, max(1, frames // 4)), generator=generator
        )
        batch["labels"] = labels.to(device)
    elif head == "classification":
        batch["labels"] = torch.randint(0, model.config.num_labels, (batch_size,), generator=generator).to(
            device
        )
    return batch


def _loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    output = model(**batch)
    if "labels" in batch:
        return output.loss
    return output.last_hidden_state.float().pow(2).mean()  # a base model has no task loss


def training_step(
    model: nn.Module, batch: Mapping[str, torch.Tensor], variant: str | None, target: float, seconds: float
) -> Callable[[], None]:
    """One training step of `model` on `batch` (forward, backward, AdamW), as a function to call.

    With a `variant`, `HJPruner(variant, target)` is attached to `model` and the step adds its budget
    penalty to the loss (gates and λ in their own optimizer groups); with None the model trains plainly.
    """
    if variant is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def dense_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            _loss(model, batch).backward()
            optimizer.step()

        return dense_step
    pruner = HJPruner(model, variant=variant, target=target, seconds=seconds)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.parameters())},
            {"params": pruner.gate_parameters(), "lr": 1e-2, "weight_decay": 0.0},
            {"params": pruner.lagrangian_parameters(), "lr": 1e-2, "weight_decay": 0.0},
        ],
        lr=1e-5,
    )
    counter = {"step": 0}

    def gated_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (_loss(model, batch) + pruner.penalty(counter["step"])).backward()
        optimizer.step()
        counter["step"] += 1

    return gated_step


def _training_process_rss(
    model_dir: str,
    variant: str | None,
    target: float,
    seconds: float,
    batch_size: int,
    steps: int,
    threads: int | None,
) -> dict[str, float | None]:
    """Run in a fresh process: load a model, train it `steps` steps; RSS after loading and at the peak."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = load_model(model_dir).train()
    model.config.layerdrop = 0.0
    loaded = current_rss_mib()
    step = training_step(model, _training_batch(model, batch_size, seconds, "cpu"), variant, target, seconds)
    for _ in range(steps):
        step()
    return {"after_loading_mib": loaded, "peak_mib": peak_rss_mib()}


def training_process_memory(
    model: PreTrainedModel,
    seconds: float = 1.0,
    batch_size: int = 4,
    variant: str = "macs",
    target: float = 0.4,
    steps: int = 2,
    threads: int | None = None,
) -> dict[str, dict[str, float | None]]:
    """Peak resident memory (RSS, MiB) of one training process on the CPU, dense and gated.

    Each kind runs in a fresh Python process (spawned; the two side by side) that loads a copy of
    `model`, then trains it `steps` steps as in `training_overhead`: the peak holds the interpreter and
    libraries, the weights, gradients, AdamW state and activations, what each process of a
    multi-process run needs. Returns `{"dense": ..., "gated": ...}`, each with `after_loading_mib`
    (RSS once the model is loaded) and `peak_mib`.
    """
    with tempfile.TemporaryDirectory(prefix="hjprune-bench-") as folder, contextlib.ExitStack() as stack:
        model.save_pretrained(folder)
        context = multiprocessing.get_context("spawn")
        futures = {}
        for name, kind in (("dense", None), ("gated", variant)):
            # One pool (one process) per kind: a process's peak RSS is a high-water mark.
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=context))
            futures[name] = pool.submit(
                _training_process_rss, folder, kind, target, seconds, batch_size, steps, threads
            )
        return {name: future.result() for name, future in futures.items()}


def training_overhead(
    model: nn.Module,
    seconds: float = 1.0,
    batch_size: int = 4,
    repeats: int = 5,
    warmup: int = 1,
    variant: str = "macs",
    target: float = 0.4,
    threads: int | None = None,
    device: str = "cpu",
    process_memory: bool = False,
) -> dict[str, Any]:
    """Time of a gated training step against a dense fine-tuning step of the same model and batch.

    A step is forward, backward and an AdamW step (see `training_step`). The gated copy has
    `HJPruner(variant, target)` attached and adds the budget penalty to the loss; the dense copy
    trains plainly. Both are copies of `model` in train mode with LayerDrop off (a skipped layer would
    make step times random); their steps are interleaved. Returns `dense_step` and `gated_step`
    summaries (see `summarize`, plus `cpu_median_ms` and `peak_memory_mib`: the peak of one more
    step, see `peak_step_memory_mib`), `ratio` = gated median / dense median, `cpu_ratio`, the same
    in CPU time, and `memory_ratio`. With `process_memory` (CPU only), also `peak_rss_mib`: the peak
    resident memory of one whole training process, dense and gated (see `training_process_memory`).
    """
    dense, gated = (copy.deepcopy(model).to(device).train() for _ in range(2))
    for copied in (dense, gated):
        copied.config.layerdrop = 0.0
    batch = _training_batch(model, batch_size, seconds, device)
    dense_step = training_step(dense, batch, None, target, seconds)
    gated_step = training_step(gated, batch, variant, target, seconds)
    with intra_op_threads(threads) as used_threads:
        timings = interleaved_times({"dense": dense_step, "gated": gated_step}, repeats, warmup, device)
        # One more step of each under the memory profiler, after the timed ones (it slows the step down).
        memory = {
            "dense": peak_step_memory_mib(dense_step, device),
            "gated": peak_step_memory_mib(gated_step, device),
        }
    times, cpu = timings.wall_ms, {name: float(np.median(t)) for name, t in timings.cpu_ms.items()}
    dense_summary, gated_summary = summarize(times["dense"]), summarize(times["gated"])
    result = {
        "device": device,
        "batch_size": batch_size,
        "seconds": seconds,
        "variant": variant,
        "target": target,
        "threads": used_threads,
        "warmup": warmup,
        "dense_step": {
            **dense_summary,
            "cpu_median_ms": cpu["dense"],
            "peak_memory_mib": memory["dense"],
            "times_ms": times["dense"],
        },
        "gated_step": {
            **gated_summary,
            "cpu_median_ms": cpu["gated"],
            "peak_memory_mib": memory["gated"],
            "times_ms": times["gated"],
        },
        "ratio": gated_summary["median_ms"] / dense_summary["median_ms"],
        "cpu_ratio": cpu["gated"] / cpu["dense"],
        "memory_ratio": memory["gated"] / memory["dense"],
    }
    if process_memory and device == "cpu":
        result["peak_rss_mib"] = training_process_memory(
            model, seconds, batch_size, variant, target, steps=2, threads=used_threads
        )
    return result


# ---------------------------------------------------------------------------------------------
# report


def _millions(value: float) -> str:
    return f"{value / 1e6:.3g}"


def _giga(value: float) -> str:
    return f"{value / 1e9:.3g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _model_label(name: str) -> str:
    return f"`{name}`"


def _memory_change(row: Mapping[str, Any]) -> str:
    dense, gated = row["dense_step"].get("peak_memory_mib"), row["gated_step"].get("peak_memory_mib")
    return "–" if dense is None or gated is None else f"{dense:.0f} → {gated:.0f}"


def bench_markdown(result: Mapping[str, Any]) -> str:
    """Markdown tables of a benchmark result: models, latency per configuration, pairs, training."""
    machine, settings = result["machine"], result["settings"]
    lines = [
        f"Measured {machine['date']} on {machine['cpu']} ({settings['threads']} "
        f"thread{'s' if settings['threads'] != 1 else ''}), "
        f"torch {machine['torch']}, transformers {machine['transformers']}"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
        + f"; {settings['warmup']} warm-up and {settings['repeats']} timed runs per configuration.",
        "",
    ]
    models = result["models"]
    lines += markdown_table(
        ["model", "params (M)", "GMACs / s of audio", "CNN", "Transformer"],
        [
            [
                _model_label(name),
                _millions(entry["params"]["total"]),
                _giga(entry["macs_per_second"]["total"]),
                _giga(entry["macs_per_second"]["cnn"]),
                _giga(entry["macs_per_second"]["transformer"]),
            ]
            for name, entry in models.items()
        ],
    )
    memory_rows = any(row["peak_memory_mib"] is not None for e in models.values() for row in e["latency"])
    header = ["model", "device", "batch", "audio (s)", "GMACs", "median (ms)", "IQR (ms)"]
    if memory_rows:
        header.append("peak memory (MiB)")
    rows = []
    for name, entry in models.items():
        for row in entry["latency"]:
            cells = [
                _model_label(name),
                row["device"],
                str(row["batch_size"]),
                f"{row['seconds']:g}",
                _giga(row["macs"]),
                f"{row['median_ms']:.1f}",
                f"{row['iqr_ms']:.1f}",
            ]
            if memory_rows:
                memory = row["peak_memory_mib"]
                cells.append("–" if memory is None else f"{memory:.0f}")
            rows.append(cells)
    lines += ["", *markdown_table(header, rows)]
    for pair in result["pairs"]:
        runtime = pair.get("runtime", "PyTorch")
        lines += ["", f"{_model_label(pair['dense'])} → {_model_label(pair['pruned'])} ({runtime}):", ""]
        lines += markdown_table(
            ["device", "batch", "audio (s)", *SPEEDUP_COLUMNS, "efficiency", "CPU-time efficiency"],
            [
                [
                    row["device"],
                    str(row["batch_size"]),
                    f"{row['seconds']:g}",
                    f"{row['dense_median_ms']:.1f}",
                    f"{row['pruned_median_ms']:.1f}",
                    f"{row['speedup']:.2f}×",
                    f"{row['macs_ratio']:.2f}×",
                    f"{row['efficiency']:.0%}",
                    f"{row['cpu_speedup'] / row['macs_ratio']:.0%}",
                ]
                for row in pair["results"]
            ],
        )
    overhead = result.get("training_overhead") or []
    if overhead:
        lines += ["", "Training step (forward, backward, AdamW), gated (HJPruner attached) vs dense:", ""]
        lines += markdown_table(
            [
                "model",
                "device",
                "batch",
                "audio (s)",
                *TRAINING_STEP_COLUMNS,
                "peak memory (MiB)",
                "memory ratio",
            ],
            [
                [
                    _model_label(row["model"]),
                    row["device"],
                    str(row["batch_size"]),
                    f"{row['seconds']:g}",
                    f"{row['dense_step']['median_ms']:.0f} ± {row['dense_step']['iqr_ms']:.0f}",
                    f"{row['gated_step']['median_ms']:.0f} ± {row['gated_step']['iqr_ms']:.0f}",
                    f"{row['ratio']:.2f}×",
                    f"{row['cpu_ratio']:.2f}×",
                    _memory_change(row),
                    f"{row['memory_ratio']:.2f}×" if "memory_ratio" in row else "–",
                ]
                for row in overhead
            ],
        )
        lines += ["", "(± is the interquartile range; CPU time is the process CPU time of all threads.)"]
        memory_rows = [row for row in overhead if row.get("peak_rss_mib")]
        if memory_rows:
            lines += [
                "",
                "Peak resident memory (RSS) of one training process (fresh process: load, 2 steps):",
                "",
            ]
            lines += markdown_table(
                ["model", "batch", "audio (s)", "dense (MiB)", "gated (MiB)", "after loading (MiB)"],
                [
                    [
                        _model_label(row["model"]),
                        str(row["batch_size"]),
                        f"{row['seconds']:g}",
                        f"{row['peak_rss_mib']['dense']['peak_mib']:.0f}",
                        f"{row['peak_rss_mib']['gated']['peak_mib']:.0f}",
                        f"{row['peak_rss_mib']['dense']['after_loading_mib']:.0f}",
                    ]
                    for row in memory_rows
                ],
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# command line


def onnx_models(model: nn.Module, directory: str | Path, threads: int | None = None) -> dict[str, nn.Module]:
    """`model` exported to ONNX (fp32 and int8, `hjprune export`) in `directory`, as
    `export.OnnxRuntimeModel`s by runtime name, with `threads` intra-op threads (default: torch's)."""
    from .export import FILES, RUNTIMES, OnnxRuntimeModel, quantize_int8, torch_to_onnx

    directory = Path(directory)
    fp32 = torch_to_onnx(model, directory / FILES["fp32"])
    int8 = quantize_int8(fp32, directory / FILES["int8"])
    return {
        RUNTIMES[kind]: OnnxRuntimeModel(path, model.config, threads=threads, exported_from=model)
        for kind, path in (("fp32", fp32), ("int8", int8))
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune bench` and `python -m hf_hjprune.bench`."""
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="a local path or Hub id; with two, the first is the dense and the second the pruned model",
    )
    parser.add_argument(
        "--pair",
        metavar="RUN_DIR",
        help="a training run folder (summary.json, model/): its dense and pruned model",
    )
    parser.add_argument(
        "--dense",
        metavar="PATH",
        help="with --pair: the run's starting model, when the summary's cannot load",
    )
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=list(DEFAULT_SECONDS), help="audio lengths"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed runs per configuration")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed runs per configuration")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op CPU threads (default: torch's, all usable cores)"
    )
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the memory measurements (peak memory of a forward pass; with --training-overhead, the "
        "peak RSS of a training process)",
    )
    parser.add_argument(
        "--training-overhead",
        action="store_true",
        help="also time a gated training step against a dense one (of the dense model)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also time the (pruned) model exported to ONNX Runtime, fp32 and int8 (hjprune export)",
    )
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--train-seconds", type=float, default=1.0)
    parser.add_argument("--output-json", metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--output-md", metavar="FILE", help="write the markdown tables")


def run(args: argparse.Namespace) -> int:
    """Run `hjprune bench` with parsed arguments; prints the markdown tables."""
    if args.pair and args.models:
        raise HJPruneInputError("give either --pair RUN_DIR or one or two models, not both")
    if not args.pair and not 1 <= len(args.models) <= 2:
        raise HJPruneInputError("give one model, two models (dense then pruned) or --pair RUN_DIR")
    if args.dense and not args.pair:
        raise HJPruneInputError("--dense goes with --pair")
    if args.repeats < 1 or args.warmup < 0:
        raise HJPruneInputError("--repeats must be at least 1 and --warmup at least 0")
    transformers.logging.disable_progress_bar()
    if args.pair:
        run_dir = Path(args.pair)
        if not (run_dir / "summary.json").is_file() or not (run_dir / "model").is_dir():
            raise HJPruneInputError(f"{run_dir} is not a run folder: it needs summary.json and model/")
        pruned = load_model(str(run_dir / "model"))
        dense = load_model(args.dense) if args.dense else dense_model_of_run(run_dir, pruned)
        models = {args.dense or "dense (run's starting model)": dense, str(run_dir / "model"): pruned}
    else:
        models = {}
        for i, name in enumerate(args.models):
            key = name if name not in models else f"{name} (#{i + 1})"
            models[key] = load_model(name)
    names = list(models)
    pairs = [(names[0], names[1])] if len(names) == 2 else []
    exports = contextlib.ExitStack()
    if args.onnx:
        exported = onnx_models(
            models[names[-1]], exports.enter_context(tempfile.TemporaryDirectory()), args.threads
        )
        for runtime, model in exported.items():
            models[f"{names[-1]} ({runtime})"] = model
            if len(names) == 2:
                pairs.append((names[0], f"{names[-1]} ({runtime})"))
    with exports:
        result = benchmark_models(
            models,
            pairs=pairs,
            seconds=args.seconds,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            memory=not args.no_memory,
        )
    if args.training_overhead:
        result["training_overhead"] = [
            {
                "model": names[0],
                **training_overhead(
                    models[names[0]],
                    seconds=args.train_seconds,
                    batch_size=args.train_batch_size,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    device=device,
                    process_memory=not args.no_memory,
                ),
            }
            for device in result["settings"]["devices"]
        ]
    markdown = bench_markdown(result)
    for path, text in ((args.output_json, json.dumps(result, indent=2) + "\n"), (args.output_md, markdown)):
        if path:
            atomic_write_text(path, text)
    sys.stdout.write(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_hjprune.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except HJPruneInputError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
