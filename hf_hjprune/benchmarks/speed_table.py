"""Measured CPU speedup of HJ-pruned wav2vec2-base / HuBERT-base / WavLM-base structures against their MACs.

    python -m hf_hjprune.benchmarks.speed_table [--quick] [--families NAME ...] [--experiments NAME ...]

regenerates `results/speed_table.json` and `results/speed_table.md` next to this file (`--output-dir`
elsewhere). The deployment experiment times every structure in PyTorch fp32, in PyTorch after
`optimize_for_inference`, and exported to ONNX Runtime in fp32 and int8 (`hjprune export`), at 1 and 2
threads, each as a speedup against the dense model in PyTorch fp32 of the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import (
    HubertConfig,
    HubertForCTC,
    PretrainedConfig,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    WavLMConfig,
    WavLMForCTC,
)

from ..atomic import atomic_write_json, atomic_write_text
from ..bench import (
    SPEEDUP_COLUMNS,
    TRAINING_STEP_COLUMNS,
    benchmark_models,
    interleaved_times,
    intra_op_threads,
    machine_info,
    markdown_table,
    training_overhead,
)
from ..cost import count_macs, count_params, macs_from_units
from ..errors import HJPruneInputError
from ..export import FILES, OnnxRuntimeModel, optimize_for_inference, quantize_int8, torch_to_onnx
from ..materialize import prune_model
from ..structure import GROUPS, SAMPLING_RATE, family_of, unit_counts


def _staggered_counts(sizes: list[int], fraction: float, multiple_of: int, minimum: int) -> list[int]:
    """`fraction` of each layer's units, rounded to a multiple of `multiple_of` with a rounding offset
    that differs per layer: as `fraction` grows the layers step one at a time, so the group's total
    moves in steps of one chunk and layers of equal size differ by at most one chunk."""
    counts = []
    for i, size in enumerate(sizes):
        offset = (i + 0.5) / len(sizes)
        count = int(fraction * size / multiple_of + offset) * multiple_of
        counts.append(min(size, max(minimum, count)))
    return counts


def structure_for_reduction(
    config: PretrainedConfig,
    reduction: float,
    seconds: float = 1.0,
    cnn_weight: float = 1.0,
    multiple_of: int = 1,
) -> dict[str, list[list[int]]]:
    """Units to keep (a `prune_model` keep dict) for `reduction` fewer MACs on `seconds` of audio.

    A stand-in for a learned HJ-Pruning structure (no training), with pruning spread over all three
    unit groups as a joint budget allows: one pruning level `p` removes the fraction `cnn_weight · p` of the channels of every conv
    layer and the fraction `p` of the heads and of the FFN units of every Transformer layer (each
    clamped to [0, 1]); `p` is found by bisection so that the exact MACs (`cost.macs_from_units`, no
    task head) are reduced by `reduction`. Counts are rounded per layer to multiples of `multiple_of`
    (conv channels and FFN units; heads are whole heads) with staggered rounding, so the reduction is
    met to a fraction of a percent. Every conv layer keeps at least one chunk. The kept units are the
    first ones of each layer: with random weights which units stay does not change the timing.

    Args:
        config: a stock (or pruned) wav2vec2 / HuBERT / WavLM config.
        reduction: the relative MACs reduction in (0, 1).
        seconds: audio length of the MACs count (attention grows with its square).
        cnn_weight: how fast the CNN is pruned relative to the Transformer (0: Transformer only).
        multiple_of: round kept conv channels and FFN units to this multiple.
    """
    if not 0.0 < reduction < 1.0:
        raise HJPruneInputError(f"reduction must be in (0, 1), got {reduction}")
    sizes = unit_counts(config)
    num_samples = int(round(seconds * SAMPLING_RATE))
    dense = macs_from_units(config, sizes, num_samples).total
    weights = {"conv": cnn_weight, "heads": 1.0, "ffn": 1.0}

    def units_at(level: float) -> dict[str, list[int]]:
        units = {}
        for group in GROUPS:
            fraction = min(1.0, max(0.0, 1.0 - weights[group] * level))
            chunk = 1 if group == "heads" else multiple_of
            units[group] = _staggered_counts(sizes[group], fraction, chunk, chunk if group == "conv" else 0)
        return units

    def reduction_at(level: float) -> float:
        return 1.0 - macs_from_units(config, units_at(level), num_samples).total / dense

    low, high = 0.0, 1.0 / min(w for w in weights.values() if w > 0)
    if reduction_at(high) < reduction:
        raise HJPruneInputError(f"a reduction of {reduction} is out of reach with cnn_weight={cnn_weight}")
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if reduction_at(middle) < reduction else (low, middle)
    best = min((low, high), key=lambda level: abs(reduction_at(level) - reduction))
    return {group: [list(range(n)) for n in counts] for group, counts in units_at(best).items()}


PARTS = ("cnn", "feature_projection", "positional_conv", "attention", "ffn", "other")


def _part_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    base = getattr(model, family_of(model).base_model_prefix, model)
    return {
        "cnn": [base.feature_extractor],
        "feature_projection": [base.feature_projection],
        "positional_conv": [base.encoder.pos_conv_embed],
        "attention": [layer.attention for layer in base.encoder.layers],
        "ffn": [layer.feed_forward for layer in base.encoder.layers],
    }


def part_times(
    models: Mapping[str, nn.Module],
    batch_size: int,
    seconds: float,
    repeats: int,
    warmup: int = 1,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Median process CPU time (ms) per part of the forward pass of each model, timed interleaved.

    Forward hooks time the parts of `cost.CostBreakdown` (CNN, feature projection, positional conv,
    attention and FFN blocks); `"other"` is the rest of the pass (LayerNorms, residuals, the head,
    Python overhead), `"total"` the whole pass. On CPU the ops run synchronously, so the hooks see
    each part's work. CPU time (all threads) rather than wall time: at one thread it is the part's own
    work even when other processes share the core.
    """
    input_values = torch.randn(batch_size, int(round(seconds * SAMPLING_RATE)))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    handles = []
    current: dict[str, float] = {}
    started: dict[int, float] = {}

    def before(module: nn.Module, _args) -> None:
        started[id(module)] = time.process_time()

    def after(part: str) -> Callable:
        def hook(module: nn.Module, _args, _output) -> None:
            current[part] = current.get(part, 0.0) + (time.process_time() - started.pop(id(module))) * 1e3

        return hook

    def step(name: str, model: nn.Module) -> Callable[[], None]:
        def run_once() -> None:
            current.clear()
            start = time.process_time()
            model(input_values=input_values)
            total = (time.process_time() - start) * 1e3
            runs[name].append({**current, "other": total - sum(current.values()), "total": total})

        return run_once

    try:
        for model in models.values():
            for part, modules in _part_modules(model).items():
                for module in modules:
                    handles.append(module.register_forward_pre_hook(before))
                    handles.append(module.register_forward_hook(after(part)))
        with torch.inference_mode(), intra_op_threads(threads):
            interleaved_times({name: step(name, model) for name, model in models.items()}, repeats, warmup)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: {part: float(np.median([r[part] for r in model_runs[warmup:]])) for part in (*PARTS, "total")}
        for name, model_runs in runs.items()
    }


# ---------------------------------------------------------------------------------------------
# the table

TABLE_MODELS = {
    "wav2vec2-base": (Wav2Vec2Config, Wav2Vec2ForCTC),
    "hubert-base": (HubertConfig, HubertForCTC),
    "wavlm-base": (WavLMConfig, WavLMForCTC),
}
REDUCTIONS = (0.1, 0.3, 0.5, 0.7)
EXPERIMENTS = ("table", "multiple_of_8", "parts", "threads", "training", "kernels", "deployment")
RUNTIMES = ("PyTorch fp32", "PyTorch optimized", "ORT fp32", "ORT int8")
"""The deployment columns: PyTorch as is, after `optimize_for_inference`, ONNX Runtime fp32 and int8."""
RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Plan:
    """What to measure: `(batch size, seconds, timed runs)` per configuration of each experiment."""

    table: tuple[tuple[int, float, int], ...]
    multiple_of_8: tuple[tuple[int, float, int], ...]
    parts: tuple[tuple[int, float, int], ...]
    threads: tuple[tuple[int, float, int], ...]
    training: tuple[int, float, int]
    kernel_repeats: int
    warmup: int
    thread_counts: tuple[int, ...]
    deployment: tuple[tuple[int, float, int], ...] = ()


FULL = Plan(
    table=((1, 1.0, 21), (1, 10.0, 3), (8, 1.0, 3), (8, 10.0, 2)),
    multiple_of_8=((1, 1.0, 15), (8, 1.0, 3)),
    parts=((1, 1.0, 11), (1, 10.0, 3)),
    threads=((1, 1.0, 11),),
    training=(4, 1.0, 3),
    kernel_repeats=5,
    warmup=1,
    thread_counts=(1, 2),
    deployment=((1, 1.0, 11), (1, 10.0, 5), (8, 1.0, 5)),
)
QUICK = Plan(
    table=((1, 1.0, 3), (2, 1.0, 2)),
    multiple_of_8=((1, 1.0, 2),),
    parts=((1, 1.0, 2),),
    threads=((1, 1.0, 2),),
    training=(1, 1.0, 1),
    kernel_repeats=1,
    warmup=1,
    thread_counts=(1, 2),
    deployment=((1, 1.0, 2),),
)


def _label(reduction: float, multiple_of: int = 1) -> str:
    return f"-{reduction:.0%}" + (f" (x{multiple_of})" if multiple_of > 1 else "")


def table_models(family: str, multiples: tuple[int, ...] = (1,)) -> dict[str, nn.Module]:
    """The dense model of `family` (stock default config, CTC head with vocab 32, random weights, seed
    0) and its pruned structures for every reduction in `REDUCTIONS` and rounding multiple."""
    config_class, model_class = TABLE_MODELS[family]
    torch.manual_seed(0)
    dense = model_class(config_class(vocab_size=32)).eval()
    models = {"dense": dense}
    for multiple_of in multiples:
        for reduction in REDUCTIONS:
            keep = structure_for_reduction(dense.config, reduction, multiple_of=multiple_of)
            models[_label(reduction, multiple_of)] = prune_model(dense, keep).eval()
    return models


def _structure(model: nn.Module, dense: nn.Module) -> dict[str, Any]:
    units = unit_counts(model.config)
    return {
        **units,
        "params": count_params(model).total,
        "macs_per_second": count_macs(model, 1.0).as_dict(),
        "macs_reduction": 1.0 - count_macs(model, 1.0).total / count_macs(dense, 1.0).total,
    }


def _bench(
    models: Mapping[str, nn.Module],
    configs: tuple[tuple[int, float, int], ...],
    warmup: int,
    threads: int | None,
    memory: bool = True,
    pairs: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """`benchmark_models` per configuration, merged into one result; `pairs` defaults to every model
    against "dense"."""
    if pairs is None:
        pairs = [("dense", name) for name in models if name != "dense"]
    merged: dict[str, Any] | None = None
    for batch_size, seconds, repeats in configs:
        result = benchmark_models(
            models,
            pairs=pairs,
            seconds=(seconds,),
            batch_sizes=(batch_size,),
            repeats=repeats,
            warmup=warmup,
            threads=threads,
            devices=["cpu"],
            memory=memory,
        )
        if merged is None:
            merged = result
            merged["settings"]["repeats"] = "per configuration: see runs"
            continue
        for name, entry in result["models"].items():
            merged["models"][name]["latency"] += entry["latency"]
        for pair, new in zip(merged["pairs"], result["pairs"]):
            pair["results"] += new["results"]
        merged["settings"]["seconds"] = sorted({*merged["settings"]["seconds"], seconds})
        merged["settings"]["batch_sizes"] = sorted({*merged["settings"]["batch_sizes"], batch_size})
        merged["machine"]["load_average_after"] = result["machine"]["load_average_after"]
    return merged


FFN_KERNEL = "FFN input projection Linear(768, units), 499 frames"
CONV_KERNEL = "conv layer 1 (kernel 3, stride 2), 1 s of audio"
POSITIONAL_KERNEL = "positional conv of wav2vec2-base, 1 s of audio"
ATTENTION_KERNEL = "WavLM-base attention layer, batch 8 × 10 s"
SHORT_ATTENTION_KERNEL = "WavLM-base attention layer, batch 1 × 10 s"


def kernel_times(repeats: int, warmup: int = 1, threads: int | None = None) -> list[dict[str, Any]]:
    """Wall and CPU time of single kernels at the shapes the pruned models use, each group interleaved.

    Groups: the FFN input projection on 10 s of audio with kept units that are or are not multiples of
    8; the second conv layer at dense and pruned widths; the positional conv of wav2vec2-base and the
    weight-norm recomputation of its weight inside it; a WavLM-base attention layer (batch 8 × 10 s,
    relative position bias) as stock code, as the HJPruned layer keeping all heads, and keeping 6.
    """
    frames = torch.randn(499, 768)
    linears = {
        f"{units} units": nn.Linear(768, units) for units in (3072, 2834, 2832, 2325, 2328, 1757, 1760)
    }
    convs = {
        f"{c} channels": (nn.Conv1d(c, c, 3, stride=2, bias=False), torch.randn(1, c, 3199))
        for c in (512, 388, 384, 293, 296)
    }
    positional = Wav2Vec2ForCTC(
        Wav2Vec2Config(vocab_size=32, num_hidden_layers=1)
    ).wav2vec2.encoder.pos_conv_embed
    folded_positional = optimize_for_inference(copy.deepcopy(positional))
    hidden = torch.randn(1, 49, 768)
    torch.manual_seed(0)
    wavlm = WavLMForCTC(WavLMConfig(vocab_size=32, num_hidden_layers=2)).eval()
    attention = {
        "stock, 12 heads": wavlm,
        "HJPruned, 12 heads": prune_model(wavlm, {}),
        "HJPruned, 6 heads": prune_model(wavlm, {"heads": [list(range(6))] * 2}),
    }
    inputs = {batch_size: torch.randn(batch_size, 499, 768) for batch_size in (8, 1)}
    with torch.inference_mode():
        first = wavlm.wavlm.encoder.layers[0].attention
        biases = {batch_size: first(x)[2] for batch_size, x in inputs.items()}

    def attention_step(model: nn.Module, batch_size: int) -> Callable[[], Any]:
        layer = model.wavlm.encoder.layers[1].attention
        return lambda: layer(inputs[batch_size], position_bias=biases[batch_size])

    groups = {
        FFN_KERNEL: (
            {name: (lambda layer=layer: layer(frames)) for name, layer in linears.items()},
            {name: 499 * 768 * layer.out_features for name, layer in linears.items()},
        ),
        CONV_KERNEL: (
            {name: (lambda conv=conv, x=x: conv(x)) for name, (conv, x) in convs.items()},
            {name: conv.out_channels * conv.in_channels * 3 * 1599 for name, (conv, _) in convs.items()},
        ),
        POSITIONAL_KERNEL: (
            {
                "whole module": lambda: positional(hidden),
                "weight-norm recomputation": lambda: positional.conv.weight,
                "weight norm folded (optimize_for_inference)": lambda: folded_positional(hidden),
            },
            {
                "whole module": count_macs(Wav2Vec2Config(), 1.0).positional_conv,
                "weight-norm recomputation": 0,
                "weight norm folded (optimize_for_inference)": count_macs(
                    Wav2Vec2Config(), 1.0
                ).positional_conv,
            },
        ),
        ATTENTION_KERNEL: (
            {name: attention_step(model, 8) for name, model in attention.items()},
            {name: 0 for name in attention},
        ),
        SHORT_ATTENTION_KERNEL: (
            {name: attention_step(model, 1) for name, model in attention.items()},
            {name: 0 for name in attention},
        ),
    }
    rows = []
    with torch.inference_mode(), intra_op_threads(threads):
        for group, (steps, macs) in groups.items():
            timings = interleaved_times(steps, repeats, warmup)
            for name in steps:
                cpu = float(np.median(timings.cpu_ms[name]))
                rows.append(
                    {
                        "group": group,
                        "variant": name,
                        "median_ms": float(np.median(timings.wall_ms[name])),
                        "cpu_median_ms": cpu,
                        "gmacs_per_cpu_second": macs[name] / cpu / 1e6 if macs[name] else None,
                    }
                )
    return rows


def deployment_models(
    structures: Mapping[str, nn.Module], directory: Path, threads: int
) -> dict[str, nn.Module]:
    """Every structure in each of `RUNTIMES`, named `"<structure> <runtime>"`; `"dense"` is the dense
    model in PyTorch fp32, the baseline. ONNX files are exported into `directory` once (reused across
    thread counts); the ONNX Runtime sessions use `threads` intra-op threads."""
    models: dict[str, nn.Module] = {}
    for name, model in structures.items():
        fp32 = directory / name / FILES["fp32"]
        if not fp32.is_file():
            torch_to_onnx(model, fp32)
            quantize_int8(fp32, directory / name / FILES["int8"])
        models["dense" if name == "dense" else f"{name} PyTorch fp32"] = model
        models[f"{name} PyTorch optimized"] = optimize_for_inference(copy.deepcopy(model))
        for kind in ("fp32", "int8"):
            path = directory / name / FILES[kind]
            models[f"{name} ORT {kind}"] = OnnxRuntimeModel(path, model.config, threads, exported_from=model)
    return models


def run_table(
    plan: Plan,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    families: tuple[str, ...] | None = None,
    experiments: tuple[str, ...] = EXPERIMENTS,
) -> dict[str, Any]:
    """Run the `experiments` of `plan` on the `families` (default: all of `TABLE_MODELS`); returns the
    JSON document of the table."""
    families = tuple(TABLE_MODELS) if families is None else families
    started = time.perf_counter()
    with intra_op_threads(threads) as used_threads:
        result: dict[str, Any] = {
            "machine": machine_info(),
            "threads": used_threads,
            "plan": asdict(plan),
            "experiments": list(experiments),
        }
    result["families"] = {}
    most = _label(REDUCTIONS[-1])
    for family in families:
        models = table_models(family, multiples=(1, 8))
        dense = models["dense"]
        main = {name: model for name, model in models.items() if "x8" not in name}
        entry: dict[str, Any] = {
            "structures": {name: _structure(model, dense) for name, model in models.items()},
        }
        if "table" in experiments:
            log(f"{family}: speedup table")
            entry["table"] = _bench(main, plan.table, plan.warmup, threads)
        if "multiple_of_8" in experiments:
            log(f"{family}: multiples of 8")
            # Each rounded structure against the unrounded one only: two models per round keep them close in time.
            entry["multiple_of_8"] = [
                _bench(
                    {name: models[name] for name in (_label(r), _label(r, 8))},
                    plan.multiple_of_8,
                    plan.warmup,
                    threads,
                    memory=False,
                    pairs=[(_label(r), _label(r, 8))],
                )
                for r in REDUCTIONS
            ]
        if "parts" in experiments:
            log(f"{family}: time per part")
            entry["parts"] = [
                {
                    "batch_size": batch_size,
                    "seconds": seconds,
                    "runs": repeats,
                    "times_ms": part_times(
                        {"dense": dense, most: models[most]},
                        batch_size,
                        seconds,
                        repeats,
                        plan.warmup,
                        threads,
                    ),
                    "macs": {
                        name: {
                            k: v * batch_size for k, v in count_macs(models[name], seconds).as_dict().items()
                        }
                        for name in ("dense", most)
                    },
                }
                for batch_size, seconds, repeats in plan.parts
            ]
        if "threads" in experiments:
            log(f"{family}: thread counts")
            entry["threads"] = {
                str(count): _bench(
                    {"dense": dense, most: models[most]}, plan.threads, plan.warmup, count, memory=False
                )
                for count in plan.thread_counts
            }
        if "training" in experiments:
            log(f"{family}: training overhead")
            batch_size, seconds, repeats = plan.training
            entry["training_overhead"] = training_overhead(
                dense,
                seconds=seconds,
                batch_size=batch_size,
                repeats=repeats,
                warmup=plan.warmup,
                threads=threads,
            )
        if "deployment" in experiments:
            structures = {"dense": dense, **{_label(r, 8): models[_label(r, 8)] for r in REDUCTIONS}}
            entry["deployment"] = {}
            with tempfile.TemporaryDirectory() as directory:
                for count in plan.thread_counts:
                    log(f"{family}: deployment, {count} thread{'s' if count != 1 else ''}")
                    deployed = deployment_models(structures, Path(directory), count)
                    pairs = [("dense", name) for name in deployed if name != "dense"]
                    entry["deployment"][str(count)] = _bench(
                        deployed, plan.deployment, plan.warmup, count, memory=False, pairs=pairs
                    )
                    del deployed
        result["families"][family] = entry
    if "kernels" in experiments:
        log("kernels")
        result["kernels"] = kernel_times(plan.kernel_repeats, plan.warmup, threads)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------
# report

COMMAND = "python -m hf_hjprune.benchmarks.speed_table"


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def _pair_rows(result: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(pair["pruned"], row) for pair in result["pairs"] for row in pair["results"]]


def _latency(result: Mapping[str, Any], name: str, batch_size: int, seconds: float) -> dict[str, Any]:
    for row in result["models"][name]["latency"]:
        if row["batch_size"] == batch_size and row["seconds"] == seconds:
            return row
    raise KeyError((name, batch_size, seconds))


def _efficiencies(result: Mapping[str, Any], cpu: bool = False) -> list[float]:
    return [
        row["cpu_speedup"] / row["macs_ratio"] if cpu else row["efficiency"]
        for family in result["families"].values()
        for _, row in _pair_rows(family["table"])
    ]


def _efficiency_summary(efficiencies: list[float]) -> str:
    met = sum(round(e, 2) >= 0.9 for e in efficiencies)
    return (
        f"at least 90% in {met} of {len(efficiencies)} configurations, median {np.median(efficiencies):.0%}, "
        f"range {min(efficiencies):.0%}–{max(efficiencies):.0%}"
    )


def _ran(result: Mapping[str, Any], experiment: str) -> bool:
    """Whether `result` has `experiment` (results from before `--experiments` have all but deployment)."""
    return experiment in result.get("experiments", [e for e in EXPERIMENTS if e != "deployment"])


def _deployment_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per thread count × batch × seconds × structure: speedups per runtime against dense PyTorch fp32."""
    rows = []
    for count, measured in entry["deployment"].items():
        found = {
            (pair["pruned"], r["batch_size"], r["seconds"]): r
            for pair in measured["pairs"]
            for r in pair["results"]
        }
        configs = sorted({(b, s) for _, b, s in found})
        for batch_size, seconds in configs:
            dense_ms = _latency(measured, "dense", batch_size, seconds)["median_ms"]
            for structure in entry["structures"]:
                if structure != "dense" and "x8" not in structure:
                    continue
                speedups, macs_ratio = {}, 1.0
                for runtime in RUNTIMES:
                    name = (
                        "dense"
                        if (structure, runtime) == ("dense", "PyTorch fp32")
                        else f"{structure} {runtime}"
                    )
                    row = found.get((name, batch_size, seconds))
                    speedups[runtime] = 1.0 if name == "dense" else (row["speedup"] if row else None)
                    if row:
                        macs_ratio = row["macs_ratio"]
                rows.append(
                    {
                        "threads": int(count),
                        "batch_size": batch_size,
                        "seconds": seconds,
                        "structure": structure,
                        "macs_reduction": entry["structures"][structure]["macs_reduction"],
                        "macs_ratio": macs_ratio,
                        "dense_ms": dense_ms,
                        "speedups": speedups,
                    }
                )
    return rows


def _deployment_section(result: Mapping[str, Any]) -> list[str]:
    if not _ran(result, "deployment"):
        return []
    lines = [
        "",
        "### Deployment: PyTorch, `optimize_for_inference`, ONNX Runtime fp32 and int8",
        "",
        "Each structure with conv channels and FFN units rounded to multiples of 8 (as `round_to=8` exports "
        "it) in PyTorch fp32, in PyTorch after `optimize_for_inference(model)` (weight norm folded), and "
        "exported with `hjprune export` to ONNX Runtime fp32 and int8 (dynamic quantisation of the "
        "MatMul/Gemm weights; convolutions fp32). Every cell is the speedup against the dense model in "
        "PyTorch fp32 timed in the same interleaved run (its median in `dense (ms)`); the MACs ratio (dense "
        "MACs / pruned MACs) is the speedup the MACs alone would give. Timed runs per model: "
        + ", ".join(f"{repeats} at batch {b} × {s:g} s" for b, s, repeats in result["plan"]["deployment"])
        + ".",
        "",
    ]
    header = [
        "model",
        "threads",
        "batch",
        "audio (s)",
        "pruned",
        "MACs",
        "MACs ratio",
        "dense (ms)",
        *RUNTIMES,
    ]
    rows = []
    for family, entry in result["families"].items():
        for row in _deployment_rows(entry):
            rows.append(
                [
                    family,
                    str(row["threads"]),
                    str(row["batch_size"]),
                    f"{row['seconds']:g}",
                    row["structure"],
                    f"{-row['macs_reduction']:+.1%}" if row["structure"] != "dense" else "0",
                    f"{row['macs_ratio']:.2f}×",
                    f"{row['dense_ms']:.0f}",
                    *("–" if v is None else f"{v:.2f}×" for v in row["speedups"].values()),
                ]
            )
    return lines + markdown_table(header, rows)


def deployment_findings(result: Mapping[str, Any]) -> str:
    """Findings of the deployment experiment, at the most pruned structure nearest to −50% MACs."""
    text = []
    middle = _label(min(REDUCTIONS, key=lambda r: abs(r - 0.5)), 8)
    for family, entry in result["families"].items():
        if "deployment" not in entry:
            continue
        rows = [r for r in _deployment_rows(entry) if r["structure"] == middle]
        dense_rows = {
            (r["threads"], r["batch_size"], r["seconds"]): r
            for r in _deployment_rows(entry)
            if r["structure"] == "dense"
        }
        parts = []
        for row in rows:
            speed = row["speedups"]
            dense = dense_rows[(row["threads"], row["batch_size"], row["seconds"])]["speedups"]
            parts.append(
                f"batch {row['batch_size']} × {row['seconds']:g} s, {row['threads']} thread"
                f"{'s' if row['threads'] != 1 else ''}: PyTorch {speed['PyTorch fp32']:.2f}× for a MACs ratio of "
                f"{row['macs_ratio']:.2f}× ({speed['PyTorch fp32'] / row['macs_ratio']:.0%} of it), after "
                f"`optimize_for_inference` {speed['PyTorch optimized']:.2f}×, ONNX Runtime fp32 "
                f"{speed['ORT fp32']:.2f}× and int8 {speed['ORT int8']:.2f}× (the dense model alone: "
                f"{dense['ORT fp32']:.2f}× and {dense['ORT int8']:.2f}×)"
            )
        text.append(f"- **Deployment, {family} {middle}.** " + "; ".join(parts) + ".")
    return "\n".join(text)


def table_markdown(result: Mapping[str, Any], command: str = COMMAND) -> str:
    """The self-contained markdown report of `run_table`: tables and findings."""
    machine = result["machine"]
    load_before, load_after = machine["load_average"], machine["load_average_after"]
    lines = [
        "## Measured speedup against MACs (CPU)",
        "",
        f"Produced by `{command}` in {result['wall_seconds'] / 60:.1f} minutes on {machine['date'][:10]}: "
        f"{machine['cpu']} ({machine['usable_cpus']} usable CPUs, AVX level {machine['cpu_capability']}), "
        f"{result['threads']} intra-op thread{'s' if result['threads'] != 1 else ''}, torch {machine['torch']}, transformers {machine['transformers']}. "
        f"1-minute load average {load_before[0]:.1f} at the start and {load_after[0]:.1f} at the end "
        "(other processes shared the machine when it is above the thread count).",
        "",
        f"Models: {', '.join(result['families'])} shapes (stock configs, CTC head "
        "with a vocabulary of 32, random weights), pruned with "
        "`hf_hjprune.benchmarks.speed_table.structure_for_reduction` to "
        + ", ".join(_label(r)[1:] for r in REDUCTIONS)
        + " fewer MACs on 1 s "
        "of audio: one pruning level removes the same fraction of the conv channels, heads and FFN units of "
        "every layer, found by bisection, then `prune_model`. Latency: median wall time of a forward pass "
        "(`torch.inference_mode()`, random audio) over the timed runs, all models of a family interleaved; "
        "speedup = dense median / pruned median, MACs ratio = dense MACs / pruned MACs (the ideal speedup, "
        "`count_macs` at that audio length), efficiency = speedup / MACs ratio; CPU-time efficiency is the same with the process CPU time (all threads) "
        "instead of wall time, which other processes on the machine barely change at 1 thread (at more "
        "threads it also counts OpenMP threads spinning while they wait). Peak memory: peak of live "
        "tensor bytes allocated by PyTorch during the pass beyond what was live before it (activations and "
        "workspaces; from `torch.profiler` memory events).",
        "",
        "### Structures",
        "",
    ]
    header = [
        "model",
        "pruned",
        "conv channels",
        "heads",
        "FFN units",
        "params (M)",
        "GMACs / s",
        "CNN",
        "Transformer",
    ]
    rows = []
    for family, entry in result["families"].items():
        for name, structure in entry["structures"].items():
            macs = structure["macs_per_second"]
            rows.append(
                [
                    family,
                    name,
                    _span(structure["conv"]),
                    f"{sum(structure['heads'])} ({_span(structure['heads'])}/layer)",
                    f"{sum(structure['ffn'])} ({_span(structure['ffn'])}/layer)",
                    f"{structure['params'] / 1e6:.1f}",
                    f"{macs['total'] / 1e9:.2f}",
                    f"{macs['cnn'] / 1e9:.2f}",
                    f"{macs['transformer'] / 1e9:.2f}",
                ]
            )
    lines += markdown_table(header, rows)

    if _ran(result, "table"):
        lines += [
            "",
            "### Speedup against the MACs ratio",
            "",
            f"Efficiency: {_efficiency_summary(_efficiencies(result))}. CPU-time efficiency: "
            f"{_efficiency_summary(_efficiencies(result, cpu=True))}. Timed runs per model: "
            + ", ".join(f"{repeats} at batch {b} × {s:g} s" for b, s, repeats in result["plan"]["table"])
            + f", after {result['plan']['warmup']} warm-up run (the memory measurement). ± is the interquartile "
            "range of the timed runs.",
            "",
        ]
        header = ["model", "pruned", "batch", "audio (s)", *SPEEDUP_COLUMNS]
        header += ["efficiency", "CPU-time efficiency", "peak memory (MiB)"]
        rows = []
        for family, entry in result["families"].items():
            table = entry["table"]
            for name, row in sorted(
                _pair_rows(table), key=lambda item: (item[1]["batch_size"], item[1]["seconds"])
            ):
                dense = _latency(table, "dense", row["batch_size"], row["seconds"])
                pruned = _latency(table, name, row["batch_size"], row["seconds"])
                memory = "–"
                if dense["peak_memory_mib"] is not None:
                    memory = f"{dense['peak_memory_mib']:.0f} → {pruned['peak_memory_mib']:.0f}"
                rows.append(
                    [
                        family,
                        name,
                        str(row["batch_size"]),
                        f"{row['seconds']:g}",
                        f"{dense['median_ms']:.0f} ± {dense['iqr_ms']:.0f}",
                        f"{pruned['median_ms']:.0f} ± {pruned['iqr_ms']:.0f}",
                        f"{row['speedup']:.2f}×",
                        f"{row['macs_ratio']:.2f}×",
                        f"**{row['efficiency']:.0%}**"
                        if round(row["efficiency"], 2) < 0.9
                        else f"{row['efficiency']:.0%}",
                        f"{row['cpu_speedup'] / row['macs_ratio']:.0%}",
                        memory,
                    ]
                )
        lines += markdown_table(header, rows)

    if _ran(result, "parts"):
        lines += [
            "",
            "### Where the time goes",
            "",
            "Median process CPU time per part of the forward pass (forward hooks; `other` = LayerNorms, "
            "residuals, head and Python overhead), dense against the most pruned structure, timed interleaved; "
            "`time share` / `MACs share` are the part's shares of the dense model.",
            "",
        ]
        header = ["model", "batch", "audio (s)", "part", "dense (ms)", "pruned (ms)", "speedup", "MACs ratio"]
        header += ["time share", "MACs share"]
        rows = []
        for family, entry in result["families"].items():
            for measured in entry["parts"]:
                (pruned_name,) = [name for name in measured["times_ms"] if name != "dense"]
                dense_times, pruned_times = measured["times_ms"]["dense"], measured["times_ms"][pruned_name]
                dense_macs, pruned_macs = measured["macs"]["dense"], measured["macs"][pruned_name]
                for part in (*PARTS, "total"):
                    macs_part = "head" if part == "other" else part
                    ratio = (
                        dense_macs[macs_part] / pruned_macs[macs_part]
                        if pruned_macs[macs_part]
                        else float("nan")
                    )
                    rows.append(
                        [
                            f"{family} {pruned_name}",
                            str(measured["batch_size"]),
                            f"{measured['seconds']:g}",
                            part,
                            f"{dense_times[part]:.1f}",
                            f"{pruned_times[part]:.1f}",
                            f"{dense_times[part] / pruned_times[part]:.2f}×",
                            f"{ratio:.2f}×",
                            f"{dense_times[part] / dense_times['total']:.1%}",
                            f"{dense_macs[macs_part] / dense_macs['total']:.1%}",
                        ]
                    )
        lines += markdown_table(header, rows)

    if _ran(result, "multiple_of_8"):
        lines += [
            "",
            "### Kept units rounded to multiples of 8",
            "",
            "Each structure against the same reduction with conv channels and FFN units rounded to multiples of "
            "8 (`structure_for_reduction(..., multiple_of=8)`, same MACs within 0.1%), the two timed interleaved; "
            "change = rounded / unrounded time − 1 (negative: the rounded structure is faster).",
            "",
        ]
        header = [
            "model",
            "pruned",
            "batch",
            "audio (s)",
            "unrounded (ms)",
            "rounded (ms)",
            "change",
            "CPU-time change",
        ]
        rows = []
        for family, entry in result["families"].items():
            for measured in entry["multiple_of_8"]:
                for _, row in _pair_rows(measured):
                    rows.append(
                        [
                            family,
                            measured["pairs"][0]["dense"],
                            str(row["batch_size"]),
                            f"{row['seconds']:g}",
                            f"{row['dense_median_ms']:.0f}",
                            f"{row['pruned_median_ms']:.0f}",
                            f"{1 / row['speedup'] - 1:+.1%}",
                            f"{1 / row['cpu_speedup'] - 1:+.1%}",
                        ]
                    )
        lines += markdown_table(header, rows)

    if _ran(result, "threads"):
        lines += ["", "### Thread count", ""]
        header = ["model", "threads", "batch", "audio (s)", *SPEEDUP_COLUMNS, "efficiency"]
        rows = []
        for family, entry in result["families"].items():
            for count, measured in entry["threads"].items():
                for name, row in _pair_rows(measured):
                    rows.append(
                        [
                            f"{family} {name}",
                            count,
                            str(row["batch_size"]),
                            f"{row['seconds']:g}",
                            f"{row['dense_median_ms']:.0f}",
                            f"{row['pruned_median_ms']:.0f}",
                            f"{row['speedup']:.2f}×",
                            f"{row['macs_ratio']:.2f}×",
                            f"{row['efficiency']:.0%}",
                        ]
                    )
        lines += markdown_table(header, rows)
    if _ran(result, "kernels"):
        lines += [
            "",
            "### Kernels",
            "",
            "Single kernels at the shapes above, each group timed interleaved: median wall time, median "
            "process CPU time and MACs per CPU second.",
            "",
        ]
        rows = [
            [
                row["group"],
                row["variant"],
                f"{row['median_ms']:.2f}",
                f"{row['cpu_median_ms']:.2f}",
                "–" if row["gmacs_per_cpu_second"] is None else f"{row['gmacs_per_cpu_second']:.1f}",
            ]
            for row in result["kernels"]
        ]
        lines += markdown_table(["kernel", "variant", "wall (ms)", "CPU (ms)", "GMACs / CPU s"], rows)
    if _ran(result, "training"):
        lines += [
            "",
            "### Training overhead of the gates",
            "",
            'Time of one training step (forward, backward, AdamW) with `HJPruner(model, variant="macs", '
            "target=0.4)` attached (sampled gates, loss + Lagrangian penalty) against dense fine-tuning of "
            "the same model on the same batch (CTC loss, train mode, LayerDrop off), steps interleaved.",
            "",
        ]
        header = ["model", "batch", "audio (s)", *TRAINING_STEP_COLUMNS]
        rows = []
        for family, entry in result["families"].items():
            overhead = entry["training_overhead"]
            dense, gated = overhead["dense_step"], overhead["gated_step"]
            rows.append(
                [
                    family,
                    str(overhead["batch_size"]),
                    f"{overhead['seconds']:g}",
                    f"{dense['median_ms']:.0f} ± {dense['iqr_ms']:.0f}",
                    f"{gated['median_ms']:.0f} ± {gated['iqr_ms']:.0f}",
                    f"{overhead['ratio']:.2f}×",
                    f"{overhead['cpu_ratio']:.2f}×",
                ]
            )
        lines += markdown_table(header, rows)
    lines += _deployment_section(result)
    if all(_ran(result, name) for name in EXPERIMENTS if name != "deployment"):
        lines += ["", "### Findings", "", findings(result)]
    elif _ran(result, "deployment"):
        lines += ["", "### Findings", "", deployment_findings(result)]
    return "\n".join(lines) + "\n"


def findings(result: Mapping[str, Any]) -> str:
    """The findings, with their numbers taken from `result`; conclusions that depend on a measured
    comparison are worded after its outcome."""
    families = result["families"]
    w2v2 = families["wav2vec2-base"]
    most = _label(REDUCTIONS[-1])
    kernels = {(row["group"], row["variant"]): row for row in result["kernels"]}

    def cpu_ms(group: str, variant: str) -> float:
        return kernels[(group, variant)]["cpu_median_ms"]

    def rate(group: str, variant: str) -> float:
        return kernels[(group, variant)]["gmacs_per_cpu_second"]

    first = w2v2["parts"][0]
    times, macs = first["times_ms"], first["macs"]

    def speedup(part: str) -> float:
        return times["dense"][part] / times[most][part]

    def ratio(part: str) -> float:
        return macs["dense"][part] / macs[most][part]

    def without(part: str) -> float:
        time_ratio = (times["dense"]["total"] - times["dense"][part]) / (
            times[most]["total"] - times[most][part]
        )
        return time_ratio / (
            (macs["dense"]["total"] - macs["dense"][part]) / (macs[most]["total"] - macs[most][part])
        )

    def share(name: str, part: str, of: Mapping[str, Any]) -> float:
        return of[name][part] / of[name]["total"]

    wall, cpu = _efficiencies(result), _efficiencies(result, cpu=True)
    text = [
        f"- **Overall.** With {result['threads']} intra-op thread{'s' if result['threads'] != 1 else ''} the pruned models reach a median "
        f"{np.median(wall):.0%} of the ideal (MACs-ratio) speedup in wall time and {np.median(cpu):.0%} in CPU "
        f"time; {sum(round(e, 2) >= 0.9 for e in wall)} of {len(wall)} configurations are at or above 90% in "
        f"wall time, {sum(round(e, 2) >= 0.9 for e in cpu)} in CPU time. The MACs ratio assumes that every MAC "
        "costs the same time. It does not, and that explains much of the gap: the parts that are not pruned "
        "run slower per MAC than average, so their share of the time grows as the rest shrinks, and within "
        "the pruned parts the work that is not a MAC shrinks more slowly than the MACs."
    ]
    text.append(
        f"- **Positional conv (not pruned).** In wav2vec2-base at batch {first['batch_size']} × "
        f"{first['seconds']:g} s it holds {share('dense', 'positional_conv', macs):.1%} of the MACs but takes "
        f"{share('dense', 'positional_conv', times):.1%} of the dense model's time and "
        f"{share(most, 'positional_conv', times):.1%} of the {most} model's: a grouped conv with kernel 128 "
        f"runs at {rate(POSITIONAL_KERNEL, 'whole module'):.0f} GMACs per CPU second (kernels table), and "
        f"{cpu_ms(POSITIONAL_KERNEL, 'weight-norm recomputation'):.1f} ms of its "
        f"{cpu_ms(POSITIONAL_KERNEL, 'whole module'):.1f} ms recompute its weight-norm weight (4.7 M "
        "parameters) in every forward pass. Left out of both the per-part CPU times and the MACs, the "
        f"{most} model's efficiency at that shape would be {without('positional_conv'):.0%} instead of "
        f"{speedup('total') / ratio('total'):.0%}. `optimize_for_inference(model)` folds the weight norm into the "
        "weight once and removes the recomputation (the deployment table's `PyTorch optimized` column). "
        "The recomputed weight (18 MiB) is also the largest tensor of a 1 s, batch 1 pass, which is why all "
        "models peak at the same memory there (the first conv layer's activations come next)."
    )
    cnn_faster = share("dense", "cnn", times) < share("dense", "cnn", macs)
    text.append(
        f"- **CNN.** At {most} its CPU time falls {speedup('cnn'):.2f}× for {ratio('cnn'):.2f}× fewer MACs "
        f"({speedup('cnn') / ratio('cnn'):.0%}; attention {speedup('attention') / ratio('attention'):.0%}, "
        f"FFN {speedup('ffn') / ratio('ffn'):.0%}). Conv MACs fall with the square of the kept channels, but "
        "the GELU after every conv, the GroupNorm after the first and the first conv itself (one input "
        "channel, memory-bound) scale linearly with them, and convolutions run a little slower at narrower "
        f"widths (conv layer 1: {rate(CONV_KERNEL, '512 channels'):.1f} GMACs per CPU second at 512 channels, "
        f"{rate(CONV_KERNEL, '293 channels'):.1f} at 293, {rate(CONV_KERNEL, '296 channels'):.1f} at 296)."
        + (
            f" At {first['seconds']:g} s the dense CNN also computes its MACs faster than the rest "
            f"({share('dense', 'cnn', macs):.0%} of the MACs in {share('dense', 'cnn', times):.0%} of the time), "
            "so the MACs it loses are worth less time than the MACs ratio assumes: pruning the CNN most, as a "
            "joint MACs budget tends to, lowers the efficiency at short inputs."
            if cnn_faster
            else ""
        )
    )
    pairs = [(1757, 1760), (2325, 2328), (2834, 2832)]
    slowdown = np.mean(
        [rate(FFN_KERNEL, f"{odd} units") / rate(FFN_KERNEL, f"{even} units") for odd, even in pairs]
    )
    changes: dict[int, list[float]] = {}
    for entry in families.values():
        for measured in entry["multiple_of_8"]:
            for _, row in _pair_rows(measured):
                changes.setdefault(row["batch_size"], []).append(1 / row["cpu_speedup"] - 1)
    paid_off = [b for b, c in sorted(changes.items()) if np.median(c) < -0.02]
    text.append(
        "- **GEMM shapes: multiples of 8.** The FFN input projection on 499 frames runs at "
        + " / ".join(f"{rate(FFN_KERNEL, f'{odd} units'):.0f}" for odd, _ in pairs)
        + " GMACs per CPU second with "
        + " / ".join(str(odd) for odd, _ in pairs)
        + " units and at "
        + " / ".join(f"{rate(FFN_KERNEL, f'{even} units'):.0f}" for _, even in pairs)
        + " with "
        + " / ".join(str(even) for _, even in pairs)
        + f" (dense 3072: {rate(FFN_KERNEL, '3072 units'):.0f}): on this AVX2 CPU, GEMM output widths that "
        f"are not a multiple of 8 ran at {slowdown:.0%} of the speed of their rounded neighbours. Rounding conv "
        "channels and FFN units to multiples of 8 (same MACs within 0.1%; heads are 64 wide anyway) changed "
        "the pruned models' CPU time by "
        + "; ".join(
            f"{np.median(c):+.1%} in the median at batch {b} ({min(c):+.1%} to {max(c):+.1%})"
            for b, c in sorted(changes.items())
        )
        + " (negative: faster)."
        + (
            " `round_to=8` does this when structures are exported (it paid off at batch "
            f"{' and '.join(str(b) for b in paid_off)}); the deployment table uses the rounded structures."
            if paid_off
            else " In whole models it did not pay off here (this shared machine's timings vary by a few percent)."
        )
    )
    pruned_12 = cpu_ms(ATTENTION_KERNEL, "HJPruned, 12 heads")
    stock_12 = cpu_ms(ATTENTION_KERNEL, "stock, 12 heads")
    text.append(
        "- **WavLM attention.** At batch 8 × 10 s the HJPruned attention layer keeping all 12 heads takes "
        f"{pruned_12:.0f} ms of CPU time against {stock_12:.0f} ms for the stock layer with the same MACs (at "
        f"batch 1 × 10 s: {cpu_ms(SHORT_ATTENTION_KERNEL, 'HJPruned, 12 heads'):.0f} against "
        f"{cpu_ms(SHORT_ATTENTION_KERNEL, 'stock, 12 heads'):.0f} ms); keeping 6 heads it takes "
        f"{cpu_ms(ATTENTION_KERNEL, 'HJPruned, 6 heads'):.0f} ms."
        + (
            " So pruned WavLM models still pay an overhead on long batched inputs: each pruned layer selects its "
            "heads of the shared (12, T, T) relative position bias, gates them per utterance in a separate pass "
            "and adds them inside the score GEMM (`torch.baddbmm`), where the stock layer hands the gated bias "
            "to `F.multi_head_attention_forward`."
            if pruned_12 > 1.05 * stock_12
            else " The pruned layer's implementation costs no more than the stock one here."
        )
    )
    thread_rows = {
        name: {count: measured["pairs"][0]["results"][0] for count, measured in entry["threads"].items()}
        for name, entry in families.items()
    }
    compared = {name: rows for name, rows in thread_rows.items() if {"1", "2"} <= set(rows)}
    if compared:
        slower = [
            name
            for name, rows in compared.items()
            if rows["2"]["dense_median_ms"] > rows["1"]["dense_median_ms"]
        ]
        example = next(iter(next(iter(compared.values())).values()))
        text.append(
            f"- **Threads.** At batch {example['batch_size']} × {example['seconds']:g} s, the dense models took "
            + "; ".join(
                f"{rows['1']['dense_median_ms']:.0f} ms with 1 thread and {rows['2']['dense_median_ms']:.0f} ms "
                f"with 2 ({name}; efficiency of the {most} model {rows['1']['efficiency']:.0%} and "
                f"{rows['2']['efficiency']:.0%})"
                for name, rows in compared.items()
            )
            + ". "
            + (
                f"Where 2 threads were slower ({', '.join(slower)}), other processes kept a core of this 2-core "
                "machine busy and the OpenMP threads waited for each other at every op, which wrecks latency and "
                "efficiency alike; hence the single thread of this table. Use as many threads as there are free "
                "cores."
                if slower
                else "The second thread helped; with other processes on the machine it may not."
            )
        )
    overhead = {name: entry["training_overhead"] for name, entry in families.items()}
    any_overhead = next(iter(overhead.values()))
    text.append(
        f"- **Training overhead.** A gated training step (batch {any_overhead['batch_size']} × "
        f"{any_overhead['seconds']:g} s) took "
        + " and ".join(
            f"{o['ratio']:.2f}× ({name}; CPU time {o['cpu_ratio']:.2f}×)" for name, o in overhead.items()
        )
        + " a dense fine-tuning step: the gates scale a few weight tensors per layer and the penalty is "
        "arithmetic on unit counts, next to the forward and backward passes of the model."
    )
    if _ran(result, "deployment"):
        text.append(deployment_findings(result))
    runs = [repeats for _, _, repeats in result["plan"]["table"]]
    text.append(
        f"- **Noise.** Medians of {min(runs)}–{max(runs)} interleaved runs on a machine shared with other jobs: "
        "single wall-time efficiencies move by several points between runs. The CPU-time columns measure the "
        "work done, which other processes barely change at one thread; where wall and CPU time disagree, trust "
        "the CPU time."
    )
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few configurations and runs")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="where speed_table.json and .md are written"
    )
    parser.add_argument(
        "--markdown-only", action="store_true", help="only rewrite the .md from the .json in --output-dir"
    )
    parser.add_argument(
        "--families", nargs="+", choices=list(TABLE_MODELS), default=list(TABLE_MODELS), help="model shapes"
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        choices=list(EXPERIMENTS),
        default=list(EXPERIMENTS),
        help="what to measure",
    )
    args = parser.parse_args(argv)
    json_path, md_path = args.output_dir / "speed_table.json", args.output_dir / "speed_table.md"
    if args.markdown_only:
        result = json.loads(json_path.read_text(encoding="utf-8"))
    else:
        transformers.logging.disable_progress_bar()
        started = time.perf_counter()

        def log(message: str) -> None:
            print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

        result = run_table(
            QUICK if args.quick else FULL,
            threads=args.threads,
            log=log,
            families=tuple(args.families),
            experiments=tuple(args.experiments),
        )
        result["command"] = " ".join(
            [
                COMMAND,
                *(["--quick"] if args.quick else []),
                *([f"--threads {args.threads}"] if args.threads else []),
                *(["--families", *args.families] if args.families != list(TABLE_MODELS) else []),
                *(["--experiments", *args.experiments] if args.experiments != list(EXPERIMENTS) else []),
            ]
        )
        args.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_path, result, indent=1)
    atomic_write_text(md_path, table_markdown(result, result["command"]))
    print(f"wrote {md_path}" + ("" if args.markdown_only else f" and {json_path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
