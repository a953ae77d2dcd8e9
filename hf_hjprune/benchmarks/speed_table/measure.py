"""Measuring the speed table: the structures, the timed experiments and the JSON document they fill.

`run_table(plan)` returns the document that `render.table_markdown` turns into Markdown; besides the
timings it records the machine (`bench.machine_info`: CPU, usable CPUs, AVX level, load average) and the
facts the findings quote, so that rendering needs no model and no knowledge of the machine.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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

from ...bench import benchmark_models, interleaved_times, intra_op_threads, machine_info, training_overhead
from ...cost import count_macs, count_params, macs_from_units
from ...errors import HJPruneInputError
from ...export import FILES, OnnxRuntimeModel, optimize_for_inference, quantize_int8, torch_to_onnx
from ...materialize import prune_model
from ...structure import GROUPS, SAMPLING_RATE, family_of, rounding_multiples, unit_counts


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
    multiple_of: int | Mapping[str, int] = 1,
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
    multiples = rounding_multiples(multiple_of)

    def units_at(level: float) -> dict[str, list[int]]:
        units = {}
        for group in GROUPS:
            fraction = min(1.0, max(0.0, 1.0 - weights[group] * level))
            chunk = multiples.get(group, 1)
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


@dataclass(frozen=True)
class Plan:
    """What to measure: `(batch size, seconds, timed runs)` per configuration of each experiment."""

    table: tuple[tuple[int, float, int], ...]
    multiple_of_8: tuple[tuple[int, float, int], ...]
    parts: tuple[tuple[int, float, int], ...]
    threads: tuple[tuple[int, float, int], ...]
    training: tuple[tuple[int, float, int], ...]
    kernel_repeats: int
    warmup: int
    thread_counts: tuple[int, ...]
    deployment: tuple[tuple[int, float, int], ...] = ()


FULL = Plan(
    table=((1, 1.0, 21), (1, 10.0, 3), (8, 1.0, 3), (8, 10.0, 2)),
    multiple_of_8=((1, 1.0, 15), (8, 1.0, 3)),
    parts=((1, 1.0, 11), (1, 10.0, 3)),
    threads=((1, 1.0, 11),),
    training=((4, 1.0, 3), (2, 4.0, 3)),
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
    training=((1, 1.0, 1),),
    kernel_repeats=1,
    warmup=1,
    thread_counts=(1, 2),
    deployment=((1, 1.0, 2),),
)


ROUNDINGS: dict[str, int | dict[str, int]] = {"x8": 8, "conv x64": {"conv": 64, "ffn": 8}}
"""The rounded structures besides the unrounded ones, by name: `round_to` values. "x8" rounds conv channels
and FFN units to multiples of 8 (the "multiple_of_8" experiment compares it with the unrounded structures);
"conv x64" rounds conv channels to multiples of 64 and FFN units to multiples of 8: conv widths oneDNN runs
faster per MAC than their neighbours on this CPU (see the conv kernels), used by the deployment experiment."""
DEPLOYED_ROUNDING = "conv x64"


def label(reduction: float, rounding: str | None = None) -> str:
    """A structure's name in the document: `-30%`, or `-30% (x8)` for a rounded one (`ROUNDINGS`)."""
    return f"-{reduction:.0%}" + (f" ({rounding})" if rounding else "")


def rounding_of(structure: str) -> str | None:
    """The rounding (a key of `ROUNDINGS`) of a structure named by `label`; None if it is unrounded."""
    return structure[structure.index("(") + 1 : -1] if structure.endswith(")") else None


def table_models(family: str, roundings: tuple[str | None, ...] = (None,)) -> dict[str, nn.Module]:
    """The dense model of `family` (stock default config, CTC head with vocab 32, random weights, seed
    0) and its pruned structures for every reduction in `REDUCTIONS` and rounding (None: unrounded)."""
    config_class, model_class = TABLE_MODELS[family]
    torch.manual_seed(0)
    dense = model_class(config_class(vocab_size=32)).eval()
    models = {"dense": dense}
    for rounding in roundings:
        for reduction in REDUCTIONS:
            multiple_of = ROUNDINGS[rounding] if rounding else 1
            keep = structure_for_reduction(dense.config, reduction, multiple_of=multiple_of)
            models[label(reduction, rounding)] = prune_model(dense, keep).eval()
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
CONV_WIDTHS = (512, 293, 296, 288, 320, 256)
"""Conv kernel widths: dense; -50% unrounded; two rounded to 8 (slow here); two multiples of 64."""
POSITIONAL_KERNEL = "positional conv of wav2vec2-base, 1 s of audio"
ATTENTION_KERNEL = "WavLM-base attention layer, batch 8 × 10 s"
SHORT_ATTENTION_KERNEL = "WavLM-base attention layer, batch 1 × 10 s"


KernelGroup = tuple[dict[str, Callable[[], Any]], dict[str, int]]
"""A kernel group: a step per variant, timed interleaved, and the MACs of each step (0: not counted)."""


def _gemm_and_conv_groups() -> dict[str, KernelGroup]:
    """The FFN input projection on 10 s of audio with kept units that are or are not multiples of 8 (in
    pairs: unrounded, rounded), and the second conv layer at the dense width, at the -50% structure's
    widths unrounded and rounded to multiples of 8, and at the multiples of 64 around them."""
    frames = torch.randn(499, 768)
    linears = {
        f"{units} units": nn.Linear(768, units) for units in (3072, 2834, 2832, 2325, 2328, 1757, 1760)
    }
    convs = {
        f"{c} channels": (nn.Conv1d(c, c, 3, stride=2, bias=False), torch.randn(1, c, 3199))
        for c in CONV_WIDTHS
    }
    return {
        FFN_KERNEL: (
            {name: (lambda layer=layer: layer(frames)) for name, layer in linears.items()},
            {name: 499 * 768 * layer.out_features for name, layer in linears.items()},
        ),
        CONV_KERNEL: (
            {name: (lambda conv=conv, x=x: conv(x)) for name, (conv, x) in convs.items()},
            {name: conv.out_channels * conv.in_channels * 3 * 1599 for name, (conv, _) in convs.items()},
        ),
    }


def _positional_group() -> tuple[KernelGroup, int]:
    """The positional conv of wav2vec2-base, the weight-norm recomputation of its weight inside it and
    the module with the weight norm folded; and the number of elements of that recomputed weight."""
    positional = Wav2Vec2ForCTC(
        Wav2Vec2Config(vocab_size=32, num_hidden_layers=1)
    ).wav2vec2.encoder.pos_conv_embed
    folded_positional = optimize_for_inference(copy.deepcopy(positional))
    hidden = torch.randn(1, 49, 768)
    macs = count_macs(Wav2Vec2Config(), 1.0).positional_conv
    steps = {
        "whole module": lambda: positional(hidden),
        "weight-norm recomputation": lambda: positional.conv.weight,
        "weight norm folded (optimize_for_inference)": lambda: folded_positional(hidden),
    }
    counted = {
        "whole module": macs,
        "weight-norm recomputation": 0,
        "weight norm folded (optimize_for_inference)": macs,
    }
    return (steps, counted), positional.conv.weight.numel()


def _attention_groups() -> dict[str, KernelGroup]:
    """A WavLM-base attention layer (relative position bias) at batch 8 and 1 × 10 s as stock code, as
    the HJPruned layer keeping all heads, and keeping 6."""
    torch.manual_seed(0)
    wavlm = WavLMForCTC(WavLMConfig(vocab_size=32, num_hidden_layers=2)).eval()
    attention = {
        "stock, 12 heads": wavlm,
        "HJPruned, 12 heads": prune_model(wavlm, {}),
        "HJPruned, 6 heads": prune_model(wavlm, {"heads": [list(range(6))] * 2}),
    }
    inputs = {batch_size: torch.randn(batch_size, 499, 768) for batch_size in (8, 1)}

    def attention_step(model: nn.Module, batch_size: int) -> Callable[[], Any]:
        # Each model's own layer 0 makes the bias its layer 1 is given: the stock one repeats it over the
        # batch, the pruned one keeps it at (12, T, T).
        with torch.inference_mode():
            bias = model.wavlm.encoder.layers[0].attention(inputs[batch_size])[2]
        layer = model.wavlm.encoder.layers[1].attention
        return lambda: layer(inputs[batch_size], position_bias=bias)

    return {
        group: (
            {name: attention_step(model, batch_size) for name, model in attention.items()},
            {name: 0 for name in attention},
        )
        for group, batch_size in ((ATTENTION_KERNEL, 8), (SHORT_ATTENTION_KERNEL, 1))
    }


def kernel_times(repeats: int, warmup: int = 1, threads: int | None = None) -> list[dict[str, Any]]:
    """Wall and CPU time of single kernels at the shapes the pruned models use, each group interleaved.

    The groups are those of `_gemm_and_conv_groups`, `_positional_group` and `_attention_groups`. The
    positional conv's rows also record `weight_elements`, the size of the weight recomputed in every pass.
    """
    groups = _gemm_and_conv_groups()
    groups[POSITIONAL_KERNEL], weight_elements = _positional_group()
    groups.update(_attention_groups())
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
                        **({"weight_elements": weight_elements} if group == POSITIONAL_KERNEL else {}),
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


def _parts(
    plan: Plan, models: Mapping[str, nn.Module], most: str, threads: int | None
) -> list[dict[str, Any]]:
    """The "parts" experiment: CPU time and MACs per part, dense against the `most` pruned structure."""
    return [
        {
            "batch_size": batch_size,
            "seconds": seconds,
            "runs": repeats,
            "times_ms": part_times(
                {"dense": models["dense"], most: models[most]},
                batch_size,
                seconds,
                repeats,
                plan.warmup,
                threads,
            ),
            "macs": {
                name: {k: v * batch_size for k, v in count_macs(models[name], seconds).as_dict().items()}
                for name in ("dense", most)
            },
        }
        for batch_size, seconds, repeats in plan.parts
    ]


def _deployment(
    plan: Plan, models: Mapping[str, nn.Module], family: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """The "deployment" experiment: the rounded structures in every runtime, per thread count."""
    structures = {
        "dense": models["dense"],
        **{label(r, DEPLOYED_ROUNDING): models[label(r, DEPLOYED_ROUNDING)] for r in REDUCTIONS},
    }
    measured = {}
    with tempfile.TemporaryDirectory() as directory:
        for count in plan.thread_counts:
            log(f"{family}: deployment, {count} thread{'s' if count != 1 else ''}")
            deployed = deployment_models(structures, Path(directory), count)
            pairs = [("dense", name) for name in deployed if name != "dense"]
            measured[str(count)] = _bench(
                deployed, plan.deployment, plan.warmup, count, memory=False, pairs=pairs
            )
            del deployed
    return measured


def _measure_family(
    family: str, plan: Plan, threads: int | None, experiments: tuple[str, ...], log: Callable[[str], None]
) -> dict[str, Any]:
    """The document's entry of one family: its structures and the per-family experiments."""
    models = table_models(family, roundings=(None, *ROUNDINGS))
    dense = models["dense"]
    most = label(REDUCTIONS[-1])
    entry: dict[str, Any] = {"structures": {name: _structure(model, dense) for name, model in models.items()}}
    if "table" in experiments:
        log(f"{family}: speedup table")
        entry["table"] = _bench(
            {n: m for n, m in models.items() if rounding_of(n) is None}, plan.table, plan.warmup, threads
        )
    if "multiple_of_8" in experiments:
        log(f"{family}: multiples of 8")
        # Each rounded structure against the unrounded one only: two models per round keep them close in time.
        entry["multiple_of_8"] = [
            _bench(
                {name: models[name] for name in (label(r), label(r, "x8"))},
                plan.multiple_of_8,
                plan.warmup,
                threads,
                memory=False,
                pairs=[(label(r), label(r, "x8"))],
            )
            for r in REDUCTIONS
        ]
    if "parts" in experiments:
        log(f"{family}: time per part")
        entry["parts"] = _parts(plan, models, most, threads)
    if "threads" in experiments:
        log(f"{family}: thread counts")
        pair = {"dense": dense, most: models[most]}
        entry["threads"] = {
            str(count): _bench(pair, plan.threads, plan.warmup, count, memory=False)
            for count in plan.thread_counts
        }
    if "training" in experiments:
        log(f"{family}: training overhead")
        entry["training_overhead"] = [
            training_overhead(
                dense,
                seconds=seconds,
                batch_size=batch_size,
                repeats=repeats,
                warmup=plan.warmup,
                threads=threads,
            )
            for batch_size, seconds, repeats in plan.training
        ]
    if "deployment" in experiments:
        entry["deployment"] = _deployment(plan, models, family, log)
    return entry


def run_table(
    plan: Plan,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    families: tuple[str, ...] | None = None,
    experiments: tuple[str, ...] = EXPERIMENTS,
) -> dict[str, Any]:
    """Run the `experiments` of `plan` on the `families` (default: all of `TABLE_MODELS`); returns the
    JSON document of the table (`render.table_markdown` renders it)."""
    families = tuple(TABLE_MODELS) if families is None else families
    started = time.perf_counter()
    with intra_op_threads(threads) as used_threads:
        result: dict[str, Any] = {
            "machine": machine_info(),
            "threads": used_threads,
            "plan": asdict(plan),
            "experiments": list(experiments),
            "reductions": list(REDUCTIONS),
        }
    result["families"] = {
        family: _measure_family(family, plan, threads, experiments, log) for family in families
    }
    if "kernels" in experiments:
        log("kernels")
        result["kernels"] = kernel_times(plan.kernel_repeats, plan.warmup, threads)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - started
    return result
