"""Reading the speed table document of `measure.run_table`.

Rendering takes everything from the document (experiments, structures, reductions, machine) rather than
from the constants of `measure`, so that a partial run (`--families`, `--experiments`) renders as measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .measure import DEPLOYED_ROUNDING, RUNTIMES, label, rounding_of


def ran(result: Mapping[str, Any], experiment: str) -> bool:
    """Whether `result` has `experiment`."""
    return experiment in result["experiments"]


def reductions(result: Mapping[str, Any]) -> list[float]:
    """The MACs reductions of the pruned structures."""
    return list(result["reductions"])


def most_pruned(result: Mapping[str, Any]) -> str:
    """The name of the most pruned structure (the one the parts and threads experiments time)."""
    return label(max(reductions(result)))


def most_threads(result: Mapping[str, Any]) -> int:
    """The most intra-op threads any experiment of the run used (the thread-count and deployment
    experiments also run at `plan.thread_counts`)."""
    counts = [result["threads"]]
    if ran(result, "threads") or ran(result, "deployment"):
        counts += result["plan"]["thread_counts"]
    return max(counts)


def shared_machine(result: Mapping[str, Any]) -> bool:
    """Whether other processes shared the machine: a 1-minute load average above the most threads the run
    used (`most_threads`) at the start or the end of the run."""
    machine = result["machine"]
    loads = [machine.get("load_average"), machine.get("load_average_after")]
    return any(load and load[0] > most_threads(result) for load in loads)


def pair_rows(result: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """`(pruned name, comparison row)` of every pair of a `bench.benchmark_models` result."""
    return [(pair["pruned"], row) for pair in result["pairs"] for row in pair["results"]]


def latency(result: Mapping[str, Any], name: str, batch_size: int, seconds: float) -> dict[str, Any]:
    """The latency row of model `name` at `batch_size` × `seconds` in a `bench.benchmark_models` result."""
    for row in result["models"][name]["latency"]:
        if row["batch_size"] == batch_size and row["seconds"] == seconds:
            return row
    raise KeyError((name, batch_size, seconds))


def efficiencies(result: Mapping[str, Any], cpu: bool = False) -> list[float]:
    """Speedup / MACs ratio of every configuration of the speedup table, in wall or CPU time."""
    return [
        row["cpu_speedup"] / row["macs_ratio"] if cpu else row["efficiency"]
        for family in result["families"].values()
        for _, row in pair_rows(family["table"])
    ]


def deployment_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per thread count × batch × seconds × structure: speedups per runtime against dense PyTorch fp32."""
    rows = []
    for count, measured in entry["deployment"].items():
        found = {
            (pair["pruned"], r["batch_size"], r["seconds"]): r
            for pair in measured["pairs"]
            for r in pair["results"]
        }
        for batch_size, seconds in sorted({(b, s) for _, b, s in found}):
            dense_ms = latency(measured, "dense", batch_size, seconds)["median_ms"]
            for structure in entry["structures"]:
                if structure != "dense" and rounding_of(structure) != DEPLOYED_ROUNDING:
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
