"""Rendering the speed table document (`measure.run_table`) as the Markdown of `results/speed_table.md`.

Every number and every fact about the machine comes from the document; a section appears only for an
experiment the document has (`results.ran`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...reporting import SPEEDUP_COLUMNS, TRAINING_STEP_COLUMNS, markdown_table, training_step_cells
from .findings import findings
from .measure import PARTS, RUNTIMES, TABLE_MODELS, label
from .results import deployment_rows, efficiencies, latency, most_threads, pair_rows, ran, reductions

COMMAND = "python -m hf_hjprune.benchmarks.speed_table"
FAMILY_NAMES = {"hubert-base": "HuBERT-base", "wavlm-base": "WavLM-base"}
"""How the text names a family of `TABLE_MODELS` (default: its key)."""


def _english(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def _runs(plan: list[list[Any]]) -> str:
    """`21 at batch 1 × 1 s, 3 at batch 1 × 10 s` for `(batch size, seconds, runs)` configurations."""
    return ", ".join(f"{repeats} at batch {b} × {s:g} s" for b, s, repeats in plan)


def _section(title: str, text: str | None = None) -> list[str]:
    """The lines that open a `###` section, with its introductory paragraph."""
    return ["", f"### {title}", "", *([text, ""] if text else [])]


def _efficiency_summary(values: list[float]) -> str:
    met = sum(round(e, 2) >= 0.9 for e in values)
    return (
        f"at least 90% in {met} of {len(values)} configurations, median {np.median(values):.0%}, "
        f"range {min(values):.0%}–{max(values):.0%}"
    )


def _header(result: Mapping[str, Any], command: str) -> list[str]:
    machine = result["machine"]
    load_before, load_after = machine["load_average"], machine["load_average_after"]
    families = list(result["families"])
    configs = [f"`{TABLE_MODELS[f][0].__name__}()`" for f in families if f in TABLE_MODELS]
    return [
        "## Measured speedup against MACs (CPU)",
        "",
        f"Produced by `{command}` in {result['wall_seconds'] / 60:.1f} minutes on {machine['date'][:10]}: "
        f"{machine['cpu']} ({machine['usable_cpus']} usable CPUs, AVX level {machine['cpu_capability']}), "
        f"{_plural(result['threads'], 'intra-op thread')}, torch {machine['torch']}, transformers "
        f"{machine['transformers']}. 1-minute load average {load_before[0]:.1f} at the start and "
        f"{load_after[0]:.1f} at the end (other processes shared the machine when it is above the most "
        f"threads the run used, {most_threads(result)}).",
        "",
        f"Models: {_english([FAMILY_NAMES.get(f, f) for f in families])} shapes (stock "
        + (" / ".join(configs) if len(configs) == len(families) else "configs")
        + ", CTC head with a vocabulary of 32, random weights), pruned with "
        "`hf_hjprune.benchmarks.speed_table.structure_for_reduction` to "
        + _english([label(r)[1:] for r in reductions(result)])
        + " fewer MACs on 1 s of audio: one pruning level removes the same fraction of the conv channels, "
        "heads and FFN units of every layer, found by bisection, then `prune_model`. Latency: median wall time "
        "of a forward pass (`torch.inference_mode()`, random audio) over the timed runs, all models of a family "
        "interleaved; speedup = dense median / pruned median, MACs ratio = dense MACs / pruned MACs (the ideal "
        "speedup, `count_macs` at that audio length), efficiency = speedup / MACs ratio; CPU-time efficiency "
        "is the same with the process CPU time (all threads) instead of wall time, which other processes on "
        "the machine barely change at 1 thread (at more threads it also counts OpenMP threads spinning while "
        "they wait). Peak memory: peak of live tensor bytes allocated by PyTorch during the pass beyond what "
        "was live before it (activations and workspaces; from `torch.profiler` memory events).",
    ]


def _structures_section(result: Mapping[str, Any]) -> list[str]:
    header = ["model", "pruned", "conv channels", "heads", "FFN units", "params (M)", "GMACs / s", "CNN"]
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
    return _section("Structures") + markdown_table([*header, "Transformer"], rows)


def _speedup_row(family: str, table: Mapping[str, Any], name: str, row: Mapping[str, Any]) -> list[str]:
    dense = latency(table, "dense", row["batch_size"], row["seconds"])
    pruned = latency(table, name, row["batch_size"], row["seconds"])
    memory = "–"
    if dense["peak_memory_mib"] is not None:
        memory = f"{dense['peak_memory_mib']:.0f} → {pruned['peak_memory_mib']:.0f}"
    efficiency = f"{row['efficiency']:.0%}"
    return [
        family,
        name,
        str(row["batch_size"]),
        f"{row['seconds']:g}",
        f"{dense['median_ms']:.0f} ± {dense['iqr_ms']:.0f}",
        f"{pruned['median_ms']:.0f} ± {pruned['iqr_ms']:.0f}",
        f"{row['speedup']:.2f}×",
        f"{row['macs_ratio']:.2f}×",
        f"**{efficiency}**" if round(row["efficiency"], 2) < 0.9 else efficiency,
        f"{row['cpu_speedup'] / row['macs_ratio']:.0%}",
        memory,
    ]


def _speedup_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Speedup against the MACs ratio",
        f"Efficiency: {_efficiency_summary(efficiencies(result))}. CPU-time efficiency: "
        f"{_efficiency_summary(efficiencies(result, cpu=True))}. Timed runs per model: "
        f"{_runs(result['plan']['table'])}, after {result['plan']['warmup']} warm-up run (the memory "
        "measurement). ± is the interquartile range of the timed runs.",
    )
    header = ["model", "pruned", "batch", "audio (s)", *SPEEDUP_COLUMNS]
    header += ["efficiency", "CPU-time efficiency", "peak memory (MiB)"]
    rows = [
        _speedup_row(family, entry["table"], name, row)
        for family, entry in result["families"].items()
        for name, row in sorted(
            pair_rows(entry["table"]), key=lambda item: (item[1]["batch_size"], item[1]["seconds"])
        )
    ]
    return lines + markdown_table(header, rows)


def _parts_rows(family: str, measured: Mapping[str, Any]) -> list[list[str]]:
    (pruned_name,) = [name for name in measured["times_ms"] if name != "dense"]
    dense_times, pruned_times = measured["times_ms"]["dense"], measured["times_ms"][pruned_name]
    dense_macs, pruned_macs = measured["macs"]["dense"], measured["macs"][pruned_name]
    rows = []
    for part in (*PARTS, "total"):
        macs_part = "head" if part == "other" else part
        ratio = dense_macs[macs_part] / pruned_macs[macs_part] if pruned_macs[macs_part] else float("nan")
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
    return rows


def _parts_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Where the time goes",
        "Median process CPU time per part of the forward pass (forward hooks; `other` = LayerNorms, "
        "residuals, head and Python overhead), dense against the most pruned structure, timed interleaved; "
        "`time share` / `MACs share` are the part's shares of the dense model.",
    )
    header = ["model", "batch", "audio (s)", "part", "dense (ms)", "pruned (ms)", "speedup", "MACs ratio"]
    rows = [
        row
        for family, entry in result["families"].items()
        for measured in entry["parts"]
        for row in _parts_rows(family, measured)
    ]
    return lines + markdown_table([*header, "time share", "MACs share"], rows)


def _multiple_of_8_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Kept units rounded to multiples of 8",
        "Each structure against the same reduction with conv channels and FFN units rounded to multiples of "
        "8 (`structure_for_reduction(..., multiple_of=8)`, same MACs within 0.1%), the two timed interleaved; "
        "change = rounded / unrounded time − 1 (negative: the rounded structure is faster).",
    )
    header = ["model", "pruned", "batch", "audio (s)", "unrounded (ms)", "rounded (ms)", "change"]
    rows = [
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
        for family, entry in result["families"].items()
        for measured in entry["multiple_of_8"]
        for _, row in pair_rows(measured)
    ]
    return lines + markdown_table([*header, "CPU-time change"], rows)


def _threads_section(result: Mapping[str, Any]) -> list[str]:
    header = ["model", "threads", "batch", "audio (s)", *SPEEDUP_COLUMNS, "efficiency"]
    rows = [
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
        for family, entry in result["families"].items()
        for count, measured in entry["threads"].items()
        for name, row in pair_rows(measured)
    ]
    return _section("Thread count") + markdown_table(header, rows)


def _kernels_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Kernels",
        "Single kernels at the shapes above, each group timed interleaved: median wall time, median "
        "process CPU time and MACs per CPU second.",
    )
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
    return lines + markdown_table(["kernel", "variant", "wall (ms)", "CPU (ms)", "GMACs / CPU s"], rows)


def _training_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Training overhead of the gates",
        'Time of one training step (forward, backward, AdamW) with `HJPruner(model, variant="macs", '
        "target=0.4)` attached (sampled gates, loss + Lagrangian penalty) against dense fine-tuning of "
        "the same model on the same batch (CTC loss, train mode, LayerDrop off), steps interleaved. Peak "
        "memory: the most bytes allocated through PyTorch at once during one more step of each, beyond those "
        "live before it (activations, gradients, workspaces).",
    )
    rows = [
        [family, str(overhead["batch_size"]), f"{overhead['seconds']:g}", *training_step_cells(overhead)]
        for family, entry in result["families"].items()
        for overhead in entry["training_overhead"]
    ]
    return lines + markdown_table(["model", "batch", "audio (s)", *TRAINING_STEP_COLUMNS], rows)


def _deployment_section(result: Mapping[str, Any]) -> list[str]:
    lines = _section(
        "Deployment: PyTorch, `optimize_for_inference`, ONNX Runtime fp32 and int8",
        "Each structure with conv channels rounded to multiples of 64 and FFN units to multiples of 8 (as "
        '`round_to={"conv": 64, "ffn": 8}` exports it) in PyTorch fp32, in PyTorch after '
        "`optimize_for_inference(model)` (weight norm folded), and "
        "exported with `hjprune export` to ONNX Runtime fp32 and int8 (dynamic quantisation of the "
        "MatMul/Gemm weights; convolutions fp32). Every cell is the speedup against the dense model in "
        "PyTorch fp32 timed in the same interleaved run (its median in `dense (ms)`); the MACs ratio (dense "
        f"MACs / pruned MACs) is the speedup the MACs alone would give. Timed runs per model: "
        f"{_runs(result['plan']['deployment'])}.",
    )
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
    rows = [
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
        for family, entry in result["families"].items()
        for row in deployment_rows(entry)
    ]
    return lines + markdown_table(header, rows)


SECTIONS = {
    "table": _speedup_section,
    "parts": _parts_section,
    "multiple_of_8": _multiple_of_8_section,
    "threads": _threads_section,
    "kernels": _kernels_section,
    "training": _training_section,
    "deployment": _deployment_section,
}
"""The section of each experiment, in the order of the report."""


def table_markdown(result: Mapping[str, Any], command: str = COMMAND) -> str:
    """The self-contained markdown report of `measure.run_table`: tables and findings."""
    lines = _header(result, command) + _structures_section(result)
    for experiment, section in SECTIONS.items():
        if ran(result, experiment):
            lines += section(result)
    text = findings(result)
    if text:
        lines += _section("Findings") + [text]
    return "\n".join(lines) + "\n"
