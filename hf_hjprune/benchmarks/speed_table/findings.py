"""The findings of the speed table: one bullet per measured effect, numbers and machine facts taken from
the document of `measure.run_table`.

A bullet appears only when the document has the experiments it quotes; conclusions that depend on a
measured comparison are worded after its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .measure import (
    ATTENTION_KERNEL,
    CONV_KERNEL,
    DEPLOYED_ROUNDING,
    FFN_KERNEL,
    POSITIONAL_KERNEL,
    SHORT_ATTENTION_KERNEL,
    label,
)
from .results import (
    deployment_rows,
    efficiencies,
    most_pruned,
    pair_rows,
    ran,
    reductions,
    shared_machine,
)

PARTS_FAMILY = "wav2vec2-base"
"""The family whose per-part times the findings quote (else the first one measured)."""


class _Kernels:
    """The kernels table of a document, by `(group, variant)`."""

    def __init__(self, result: Mapping[str, Any]):
        self.rows = {(row["group"], row["variant"]): row for row in result["kernels"]}

    def cpu_ms(self, group: str, variant: str) -> float:
        return self.rows[(group, variant)]["cpu_median_ms"]

    def rate(self, group: str, variant: str) -> float:
        return self.rows[(group, variant)]["gmacs_per_cpu_second"]

    def variants(self, group: str) -> list[str]:
        return [variant for g, variant in self.rows if g == group]


@dataclass
class _Parts:
    """Per-part CPU times and MACs of the dense model and the `most` pruned one at one shape."""

    measured: Mapping[str, Any]
    most: str

    @property
    def times(self) -> Mapping[str, Any]:
        return self.measured["times_ms"]

    @property
    def macs(self) -> Mapping[str, Any]:
        return self.measured["macs"]

    def speedup(self, part: str) -> float:
        return self.times["dense"][part] / self.times[self.most][part]

    def ratio(self, part: str) -> float:
        return self.macs["dense"][part] / self.macs[self.most][part]

    def efficiency_without(self, part: str) -> float:
        """The efficiency of the whole pass with `part` left out of both the CPU times and the MACs."""
        times, macs, most = self.times, self.macs, self.most
        time_ratio = (times["dense"]["total"] - times["dense"][part]) / (
            times[most]["total"] - times[most][part]
        )
        return time_ratio / (
            (macs["dense"]["total"] - macs["dense"][part]) / (macs[most]["total"] - macs[most][part])
        )

    def share(self, name: str, part: str, of: Mapping[str, Any]) -> float:
        return of[name][part] / of[name]["total"]


def _parts(result: Mapping[str, Any]) -> tuple[str, _Parts]:
    families = result["families"]
    family = PARTS_FAMILY if PARTS_FAMILY in families else next(iter(families))
    return family, _Parts(families[family]["parts"][0], most_pruned(result))


def _overall(result: Mapping[str, Any]) -> str:
    wall, cpu = efficiencies(result), efficiencies(result, cpu=True)
    threads = result["threads"]
    return (
        f"- **Overall.** With {threads} intra-op thread{'s' if threads != 1 else ''} the pruned models reach a "
        f"median {np.median(wall):.0%} of the ideal (MACs-ratio) speedup in wall time and {np.median(cpu):.0%} "
        f"in CPU time; {sum(round(e, 2) >= 0.9 for e in wall)} of {len(wall)} configurations are at or above "
        f"90% in wall time, {sum(round(e, 2) >= 0.9 for e in cpu)} in CPU time. The MACs ratio assumes that "
        "every MAC costs the same time. It does not, and that explains much of the gap: the parts that are not "
        "pruned run slower per MAC than average, so their share of the time grows as the rest shrinks, and "
        "within the pruned parts the work that is not a MAC shrinks more slowly than the MACs."
    )


def _positional_conv(result: Mapping[str, Any]) -> str:
    family, parts = _parts(result)
    kernels, most = _Kernels(result), parts.most
    elements = kernels.rows[(POSITIONAL_KERNEL, "whole module")]["weight_elements"]
    remedy = "`optimize_for_inference(model)` folds the weight norm into the weight once and removes the " + (
        "recomputation (the deployment table's `PyTorch optimized` column)."
        if ran(result, "deployment")
        else "recomputation."
    )
    return (
        f"- **Positional conv (not pruned).** In {family} at batch {parts.measured['batch_size']} × "
        f"{parts.measured['seconds']:g} s it holds {parts.share('dense', 'positional_conv', parts.macs):.1%} of "
        f"the MACs but takes {parts.share('dense', 'positional_conv', parts.times):.1%} of the dense model's time "
        f"and {parts.share(most, 'positional_conv', parts.times):.1%} of the {most} model's: a grouped conv with "
        f"kernel 128 runs at {kernels.rate(POSITIONAL_KERNEL, 'whole module'):.0f} GMACs per CPU second (kernels "
        f"table), and {kernels.cpu_ms(POSITIONAL_KERNEL, 'weight-norm recomputation'):.1f} ms of its "
        f"{kernels.cpu_ms(POSITIONAL_KERNEL, 'whole module'):.1f} ms recompute its weight-norm weight "
        f"({elements / 1e6:.1f} M parameters) in every forward pass. Left out of both the per-part CPU times and "
        f"the MACs, the {most} model's efficiency at that shape would be "
        f"{parts.efficiency_without('positional_conv'):.0%} instead of "
        f"{parts.speedup('total') / parts.ratio('total'):.0%}. {remedy} The recomputed weight "
        f"({elements * 4 / 2**20:.0f} MiB) is also the largest tensor of a 1 s, batch 1 pass, which is why all "
        "models peak at the same memory there (the first conv layer's activations come next)."
    )


def _cnn(result: Mapping[str, Any]) -> str:
    _, parts = _parts(result)
    kernels, most = _Kernels(result), parts.most
    dense_width, unrounded, rounded, *multiples_of_64 = kernels.variants(CONV_KERNEL)

    def rate(variant: str) -> str:
        return f"{kernels.rate(CONV_KERNEL, variant):.1f}"

    def efficiency(part: str) -> str:
        return f"{parts.speedup(part) / parts.ratio(part):.0%}"

    text = (
        f"- **CNN.** At {most} its CPU time falls {parts.speedup('cnn'):.2f}× for {parts.ratio('cnn'):.2f}× "
        f"fewer MACs ({efficiency('cnn')}; attention {efficiency('attention')}, FFN {efficiency('ffn')}). Conv "
        "MACs fall with the square of the kept channels, but the GELU after every conv, the GroupNorm after the "
        "first and the first conv itself (one input channel, memory-bound) scale linearly with them, and "
        "the convolutions' speed depends on their width (conv layer 1: "
        f"{rate(dense_width)} GMACs per CPU second at {dense_width.split()[0]} channels, {rate(unrounded)} at "
        f"{unrounded.split()[0]}, {rate(rounded)} at {rounded.split()[0]}; "
        + ", ".join(f"{rate(width)} at {width.split()[0]}" for width in multiples_of_64)
        + "). The deployment table therefore rounds conv channels to multiples of 64 "
        '(`round_to={"conv": 64, "ffn": 8}`).'
    )
    macs_share, time_share = parts.share("dense", "cnn", parts.macs), parts.share("dense", "cnn", parts.times)
    if time_share < macs_share:
        text += (
            f" At {parts.measured['seconds']:g} s the dense CNN also computes its MACs faster than the rest "
            f"({macs_share:.0%} of the MACs in {time_share:.0%} of the time), so the MACs it loses are worth less "
            "time than the MACs ratio assumes: pruning the CNN most, as a joint MACs budget tends to, lowers the "
            "efficiency at short inputs."
        )
    return text


def _gemm_pairs(kernels: _Kernels) -> list[tuple[int, int]]:
    """`(unrounded, rounded)` kept FFN units of the GEMM kernels, after the dense width, smallest first."""
    units = [int(variant.split()[0]) for variant in kernels.variants(FFN_KERNEL)[1:]]
    pairs = [tuple(sorted(units[i : i + 2], key=lambda n: n % 8 == 0)) for i in range(0, len(units), 2)]
    return sorted(pairs)


def _rounding_changes(result: Mapping[str, Any]) -> dict[int, list[float]]:
    """The CPU-time change of rounding to multiples of 8, per batch size, over every family and structure."""
    changes: dict[int, list[float]] = {}
    for entry in result["families"].values():
        for measured in entry["multiple_of_8"]:
            for _, row in pair_rows(measured):
                changes.setdefault(row["batch_size"], []).append(1 / row["cpu_speedup"] - 1)
    return dict(sorted(changes.items()))


def _multiples_of_8(result: Mapping[str, Any]) -> str:
    kernels, pairs = _Kernels(result), _gemm_pairs(_Kernels(result))
    changes = _rounding_changes(result)
    paid_off = [b for b, c in changes.items() if np.median(c) < -0.02]

    def rate(units: int) -> float:
        return kernels.rate(FFN_KERNEL, f"{units} units")

    slowdown = np.mean([rate(odd) / rate(even) for odd, even in pairs])
    capability = result["machine"].get("cpu_capability")
    cpu = f"this {capability} CPU" if capability and capability != "DEFAULT" else "this CPU"
    if not paid_off:
        machine = "this shared machine's" if shared_machine(result) else "this machine's"
        verdict = f" In whole models it did not pay off here ({machine} timings vary by a few percent)."
    else:
        verdict = (
            f" `round_to=8` does this when structures are exported (it paid off at batch "
            f"{' and '.join(map(str, paid_off))})"
            + ("; the deployment table uses the rounded structures." if ran(result, "deployment") else ".")
        )
    return (
        "- **GEMM shapes: multiples of 8.** The FFN input projection on 499 frames runs at "
        f"{' / '.join(f'{rate(odd):.0f}' for odd, _ in pairs)} GMACs per CPU second with "
        f"{' / '.join(str(odd) for odd, _ in pairs)} units and at "
        f"{' / '.join(f'{rate(even):.0f}' for _, even in pairs)} with {' / '.join(str(even) for _, even in pairs)} "
        f"(dense 3072: {rate(3072):.0f}): on {cpu}, GEMM output widths that are not a multiple of 8 ran at "
        f"{slowdown:.0%} of the speed of their rounded neighbours. Rounding conv channels and FFN units to "
        "multiples of 8 (same MACs within 0.1%; heads are 64 wide anyway) changed the pruned models' CPU time by "
        + "; ".join(
            f"{np.median(c):+.1%} in the median at batch {b} ({min(c):+.1%} to {max(c):+.1%})"
            for b, c in changes.items()
        )
        + " (negative: faster)."
        + verdict
    )


def _wavlm_attention(result: Mapping[str, Any]) -> str:
    kernels = _Kernels(result)
    pruned_12 = kernels.cpu_ms(ATTENTION_KERNEL, "HJPruned, 12 heads")
    stock_12 = kernels.cpu_ms(ATTENTION_KERNEL, "stock, 12 heads")
    if pruned_12 <= 1.05 * stock_12:
        why = " The pruned layer's implementation costs no more than the stock one here."
    else:
        why = (
            " So pruned WavLM models still pay an overhead on long batched inputs: each pruned layer selects its "
            "heads of the shared (12, T, T) relative position bias, gates them per utterance in a separate pass "
            "and adds them inside the score GEMM (`torch.baddbmm`), where the stock layer hands the gated bias "
            "to `F.multi_head_attention_forward`."
        )
    return (
        "- **WavLM attention.** At batch 8 × 10 s the HJPruned attention layer keeping all 12 heads takes "
        f"{pruned_12:.0f} ms of CPU time against {stock_12:.0f} ms for the stock layer with the same MACs (at "
        f"batch 1 × 10 s: {kernels.cpu_ms(SHORT_ATTENTION_KERNEL, 'HJPruned, 12 heads'):.0f} against "
        f"{kernels.cpu_ms(SHORT_ATTENTION_KERNEL, 'stock, 12 heads'):.0f} ms); keeping 6 heads it takes "
        f"{kernels.cpu_ms(ATTENTION_KERNEL, 'HJPruned, 6 heads'):.0f} ms." + why
    )


def _threads(result: Mapping[str, Any]) -> str | None:
    most = most_pruned(result)
    rows = {
        name: {int(count): measured["pairs"][0]["results"][0] for count, measured in entry["threads"].items()}
        for name, entry in result["families"].items()
    }
    compared = {name: by_count for name, by_count in rows.items() if len(by_count) >= 2}
    if not compared:
        return None
    low, high = min(next(iter(compared.values()))), max(next(iter(compared.values())))
    slower = [name for name, r in compared.items() if r[high]["dense_median_ms"] > r[low]["dense_median_ms"]]
    example = next(iter(compared.values()))[low]
    cpus = result["machine"].get("usable_cpus")
    machine = f"this {cpus}-core machine" if cpus else "this machine"
    single = (
        "hence the single thread of this table" if result["threads"] == 1 else "a single thread avoids it"
    )
    return (
        f"- **Threads.** At batch {example['batch_size']} × {example['seconds']:g} s, the dense models took "
        + "; ".join(
            f"{r[low]['dense_median_ms']:.0f} ms with {low} thread{'s' if low != 1 else ''} and "
            f"{r[high]['dense_median_ms']:.0f} ms with {high} ({name}; efficiency of the {most} model "
            f"{r[low]['efficiency']:.0%} and {r[high]['efficiency']:.0%})"
            for name, r in compared.items()
        )
        + ". "
        + (
            f"Where {high} threads were slower ({', '.join(slower)}), other processes kept a core of {machine} "
            f"busy and the OpenMP threads waited for each other at every op, which wrecks latency and efficiency "
            f"alike; {single}. Use as many threads as there are free cores."
            if slower
            else f"{'The second thread' if high == 2 else 'More threads'} helped; with other processes on the "
            "machine it may not."
        )
    )


def _training(result: Mapping[str, Any]) -> str:
    measured = [
        (name, overhead)
        for name, entry in result["families"].items()
        for overhead in entry["training_overhead"]
    ]
    return (
        "- **Training overhead.** A gated training step took "
        + "; ".join(
            f"{o['ratio']:.2f}× the time (CPU time {o['cpu_ratio']:.2f}×) and {o['memory_ratio']:.2f}× the "
            f"peak memory of a dense fine-tuning step ({name}, batch {o['batch_size']} × {o['seconds']:g} s)"
            for name, o in measured
        )
        + ". The gates scale a few weight tensors per layer, the penalty is arithmetic on unit counts, and "
        "the scaled weights are recomputed in the backward pass instead of being kept for it."
    )


def deployment_findings(result: Mapping[str, Any]) -> str:
    """Findings of the deployment experiment, at the rounded structure nearest to −50% MACs."""
    text = []
    middle = label(min(reductions(result), key=lambda r: abs(r - 0.5)), DEPLOYED_ROUNDING)
    for family, entry in result["families"].items():
        if "deployment" not in entry:
            continue
        rows = deployment_rows(entry)
        dense_rows = {
            (r["threads"], r["batch_size"], r["seconds"]): r for r in rows if r["structure"] == "dense"
        }
        parts = []
        for row in (r for r in rows if r["structure"] == middle):
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


def _noise(result: Mapping[str, Any]) -> str:
    runs = [repeats for _, _, repeats in result["plan"]["table"]]
    machine = "a machine shared with other jobs" if shared_machine(result) else "an otherwise idle machine"
    return (
        f"- **Noise.** Medians of {min(runs)}–{max(runs)} interleaved runs on {machine}: single wall-time "
        "efficiencies move by several points between runs. The CPU-time columns measure the work done, which "
        "other processes barely change at one thread; where wall and CPU time disagree, trust the CPU time."
    )


BULLETS: list[tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str | None]]] = [
    (("table",), _overall),
    (("parts", "kernels"), _positional_conv),
    (("parts", "kernels"), _cnn),
    (("kernels", "multiple_of_8"), _multiples_of_8),
    (("kernels",), _wavlm_attention),
    (("threads",), _threads),
    (("training",), _training),
    (("deployment",), deployment_findings),
    (("table",), _noise),
]
"""Each bullet with the experiments it quotes, in the order of the findings."""


def findings(result: Mapping[str, Any]) -> str:
    """The findings of `result`, one bullet per effect whose experiments it has ("" if none)."""
    bullets = [bullet(result) for needed, bullet in BULLETS if all(ran(result, name) for name in needed)]
    return "\n".join(bullet for bullet in bullets if bullet)
