"""A toy reproduction of the paper's comparison on the synthetic spoken-command corpus.

    python -m hf_hjprune.benchmarks.paper_comparison [--seeds 0 1] [--jobs 2] [--quick]

Peng et al. (2023) compare HJ-MAC, HJ-Sep, HJ-Param and Transformer-only pruning of wav2vec2-base at
several MACs budgets, for ASR (WER) and SLU (intent accuracy). Here the "pretrained" model is the
demo's small wav2vec2-shaped CTC model (`demo_asr_dense`, trained from scratch on the synthetic
corpus, since no checkpoint can be downloaded); every run then starts from it with the demo's
pruning recipes (`demo_asr_hjmac`, `demo_slu_hjmac` for 300 steps) and only the variant, target and
seed changed.
The dense baselines run the same recipes with `variant=none` (the same steps of fine-tuning).

Finished runs (`OUTPUT_DIR/<run>/summary.json`) are reused, so an interrupted comparison continues
where it stopped. The command writes `results/paper_comparison.{json,md,png}` next to this file and
the table between the `paper-comparison` markers of the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..demo import QUICK_MODEL, QUICK_OVERRIDES
from ..errors import HJPruneInputError

RESULTS_DIR = Path(__file__).parent / "results"
README = Path(__file__).parents[2] / "README.md"
MARKERS = ("<!-- paper-comparison:start -->", "<!-- paper-comparison:end -->")
COMMAND = "python -m hf_hjprune.benchmarks.paper_comparison"

START_RECIPE = "demo_asr_dense"
TASK_RECIPES = {"asr": "demo_asr_hjmac", "slu": "demo_slu_hjmac"}
TASK_OVERRIDES = {"asr": (), "slu": ("max_steps=300",)}
"""Longer SLU runs than the demo's (which must fit in its time limit): fewer runs end near chance."""
METRICS = {"asr": ("wer", "WER", False), "slu": ("accuracy", "intent accuracy", True)}
"""task -> (summary metric, title, higher is better)."""
VARIANTS = ("macs", "sep", "params", "transformer")
LABELS = {
    "none": "dense",
    "macs": "HJ-MAC",
    "sep": "HJ-Sep",
    "params": "HJ-Param",
    "transformer": "Transformer-only",
}
TARGETS = (0.2, 0.4, 0.6)


@dataclass(frozen=True)
class Run:
    """One training run of the comparison."""

    task: str
    variant: str
    target: float | None
    seed: int

    @property
    def name(self) -> str:
        target = "" if self.target is None else f"_{round(self.target * 100)}"
        return f"{self.task}_{self.variant}{target}_seed{self.seed}"


def plan(
    tasks: Sequence[str] = tuple(TASK_RECIPES),
    variants: Sequence[str] = VARIANTS,
    targets: Sequence[float] = TARGETS,
    seeds: Sequence[int] = (0,),
) -> list[Run]:
    """The runs of a comparison: per task and seed, a dense baseline and every variant × target."""
    runs = []
    for task in tasks:
        if task not in TASK_RECIPES:
            raise HJPruneInputError(f"unknown task {task!r}; expected some of {', '.join(TASK_RECIPES)}")
        for seed in seeds:
            runs.append(Run(task, "none", None, seed))
            runs += [Run(task, variant, target, seed) for variant in variants for target in targets]
    unknown = sorted({run.variant for run in runs} - set(LABELS))
    if unknown:
        raise HJPruneInputError(f"unknown variant(s) {unknown}; expected some of {', '.join(VARIANTS)}")
    bad = [target for target in targets if not 0.0 < target < 1.0]
    if bad:
        raise HJPruneInputError(f"targets must lie in (0, 1), got {bad}")
    return runs


def _reduction(summary: Mapping[str, Any], cost: str, part: str) -> float:
    before, after = summary[cost]["before"], summary[cost]["after"]
    if part == "transformer":
        keys = ("feature_projection", "positional_conv", "attention", "ffn")
        return 1.0 - sum(after[key] for key in keys) / sum(before[key] for key in keys)
    return 1.0 - after[part] / before[part]


def _run_fields(run: Run) -> dict[str, Any]:
    return {
        "run": run.name,
        "task": run.task,
        "variant": run.variant,
        "target": run.target,
        "seed": run.seed,
        "metric": METRICS[run.task][0],
    }


def result_row(run: Run, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison's record of one finished run."""
    return {
        **_run_fields(run),
        "value": summary["metrics"]["after"][METRICS[run.task][0]],
        "value_before": summary["metrics"]["before"][METRICS[run.task][0]],
        "macs_reduction": _reduction(summary, "macs", "total"),
        "cnn_macs_reduction": _reduction(summary, "macs", "cnn"),
        "transformer_macs_reduction": _reduction(summary, "macs", "transformer"),
        "params_reduction": _reduction(summary, "params", "total"),
        "macs_after": summary["macs"]["after"]["total"],
        "params_after": summary["params"]["after"]["total"],
        "train_seconds": summary["train_seconds"],
    }


def run_comparison(
    runs: Sequence[Run],
    output_root: str | Path = "outputs/paper_comparison",
    start_model: str | Path | None = None,
    jobs: int = 1,
    quick: bool = False,
    log=print,
) -> dict[str, Any]:
    """Train every run that is not finished yet and return the results: one row per run, in `runs` order.

    Without `start_model`, the demo's dense ASR model is trained first into `output_root/asr_dense`.
    `jobs` runs train side by side, each in its own process (`hf_hjprune.train.train_all`).
    """
    from ..data.sources import load_source
    from ..recipes import load_recipe
    from ..train import train, train_all

    output_root = Path(output_root)
    common = (f"data_options.cache_dir={output_root / 'corpus'}", *(QUICK_OVERRIDES if quick else ()))
    started = time.perf_counter()
    if start_model is None:
        start_dir = output_root / "asr_dense"
        if not (start_dir / "summary.json").is_file():
            overrides = (*common, *(QUICK_MODEL if quick else ()), f"output_dir={start_dir}")
            train(load_recipe(START_RECIPE, overrides))
        start_model = start_dir / "model"
        log(f"[{time.perf_counter() - started:6.0f} s] start model: {start_model}")

    def recipe_of(run: Run):
        overrides = [*TASK_OVERRIDES[run.task], *common, f"model={start_model}", f"seed={run.seed}"]
        overrides.append(f"variant={run.variant}")
        overrides += [f"output_dir={output_root / run.name}"]
        overrides += [f"target={run.target}"] if run.target is not None else []
        return load_recipe(TASK_RECIPES[run.task], overrides)

    recipes = [recipe_of(run) for run in runs]  # bad overrides fail here, before any training
    load_source(recipes[0].data, **recipes[0].data_options)  # build the corpus before parallel jobs need it
    todo = [recipe for recipe in recipes if not (Path(recipe.output_dir) / "summary.json").is_file()]
    log(f"[{time.perf_counter() - started:6.0f} s] {len(runs) - len(todo)} runs done, training {len(todo)}")
    # A target a variant cannot reach (Transformer-only at high targets) is a result, not a failure.
    errors = {
        recipe.output_dir: {key: summary[key] for key in ("error", "error_type") if key in summary}
        for recipe, summary in zip(todo, train_all(todo, jobs, True))
    }
    rows = []
    for run, recipe in zip(runs, recipes):
        path = Path(recipe.output_dir) / "summary.json"
        if path.is_file():
            rows.append(result_row(run, json.loads(path.read_text(encoding="utf-8"))))
        else:
            rows.append({**_run_fields(run), **errors[recipe.output_dir]})
        log(_describe(rows[-1]))
    log(f"[{time.perf_counter() - started:6.0f} s] done")
    return {"start_model": str(start_model), "runs": rows}


def _describe(row: Mapping[str, Any]) -> str:
    if "error" in row:
        return f"{row['run']}: not trained: {row['error']}"
    return (
        f"{row['run']}: {row['metric']} {row['value']:.3f}, {row['macs_reduction']:.1%} fewer MACs "
        f"(CNN {row['cnn_macs_reduction']:.1%}, Transformer {row['transformer_macs_reduction']:.1%})"
    )


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and spread over seeds) of each task × variant × target, in first-seen order."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["variant"], row["target"]), []).append(row)
    aggregated = []
    for (task, variant, target), group in groups.items():
        members = [member for member in group if "error" not in member]
        entry = {
            "task": task,
            "variant": variant,
            "target": target,
            "seeds": [member["seed"] for member in members],
            "metric": group[0]["metric"],
        }
        if not members:  # not trainable (an unreachable target): the same for every seed
            aggregated.append(
                {**entry, **{key: group[0][key] for key in ("error", "error_type") if key in group[0]}}
            )
            continue
        values = [member["value"] for member in members]
        entry |= {
            "value": statistics.fmean(values),
            "value_std": statistics.stdev(values) if len(values) > 1 else None,
        }
        for key in ("macs_reduction", "cnn_macs_reduction", "transformer_macs_reduction", "params_reduction"):
            entry[key] = statistics.fmean(member[key] for member in members)
        aggregated.append(entry)
    return aggregated


def _value(entry: Mapping[str, Any]) -> str:
    text = f"{entry['value']:.1%}"
    return text if entry["value_std"] is None else f"{text} ± {entry['value_std']:.1%}"


def results_markdown(result: Mapping[str, Any]) -> str:
    """The comparison as Markdown tables (one per task) with the generated observations."""
    lines = []
    for task, (_, title, _) in METRICS.items():
        entries = [entry for entry in result["aggregated"] if entry["task"] == task]
        if not entries:
            continue
        seeds = sorted({seed for entry in entries for seed in entry["seeds"]})
        lines += [
            f"**{title}** on the test split ({'seed' if len(seeds) == 1 else 'mean ± std over seeds'} "
            f"{', '.join(map(str, seeds))}):",
            "",
            f"| variant | target | {title} | MACs | CNN MACs | Transformer MACs | params |",
            "|---|---|---|---|---|---|---|",
        ]
        for entry in entries:
            target = "–" if entry["target"] is None else f"−{entry['target']:.0%}"
            if entry["variant"] == "params" and entry["target"] is not None:
                target += " params"
            if "error" in entry:
                status = (
                    "not reachable" if entry.get("error_type") == "UnreachableTargetError" else "not trained"
                )
                lines.append(f"| {LABELS[entry['variant']]} | {target} | {status}¹ | – | – | – | – |")
                continue
            cells = [
                LABELS[entry["variant"]],
                target,
                _value(entry),
                *(
                    f"−{entry[key]:.1%}" if entry[key] > 0 else "0"
                    for key in (
                        "macs_reduction",
                        "cnn_macs_reduction",
                        "transformer_macs_reduction",
                        "params_reduction",
                    )
                ),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *(f"- {text}" for text in observations(result["aggregated"], task))]
        lines += [
            f"- ¹ {LABELS[entry['variant']]} at −{entry['target']:.0%}: {entry['error']}."
            for entry in entries
            if "error" in entry
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def observations(aggregated: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """Plain statements read off the results (generated, so they always match the numbers)."""
    _, title, higher = METRICS[task]
    entries = [entry for entry in aggregated if entry["task"] == task and "error" not in entry]
    dense = next((entry for entry in entries if entry["variant"] == "none"), None)
    texts = []
    for target in sorted({entry["target"] for entry in entries if entry["target"] is not None}):
        at = [entry for entry in entries if entry["target"] == target and entry["variant"] != "params"]
        if not at:
            continue
        best = (max if higher else min)(at, key=lambda entry: entry["value"])
        text = (
            f"At the −{target:.0%} MACs target the best {title} is {LABELS[best['variant']]}'s "
            f"({_value(best)}, {best['macs_reduction']:.0%} fewer MACs reached)"
        )
        if dense is not None:
            better = best["value"] > dense["value"] if higher else best["value"] < dense["value"]
            text += f", {'better' if better else 'worse'} than dense ({_value(dense)})"
        texts.append(text + ".")
    for target in sorted({entry["target"] for entry in entries if entry["target"] is not None}):
        by_variant = {entry["variant"]: entry for entry in entries if entry["target"] == target}
        if "macs" in by_variant and "transformer" in by_variant:
            joint, only = by_variant["macs"], by_variant["transformer"]
            wins = joint["value"] > only["value"] if higher else joint["value"] < only["value"]
            texts.append(
                f"At the −{target:.0%} target, HJ-MAC {'beats' if wins else 'does not beat'} Transformer-only "
                f"pruning ({_value(joint)} at {joint['macs_reduction']:.0%} fewer MACs vs {_value(only)} at "
                f"{only['macs_reduction']:.0%}); HJ-MAC took {joint['cnn_macs_reduction']:.0%} of the CNN's MACs."
            )
    return texts


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """Metric against MACs reduction, one line per variant and a panel per task (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = [task for task in METRICS if any(entry["task"] == task for entry in result["aggregated"])]
    figure = Figure(figsize=(5.0 * len(tasks), 4.0))
    FigureCanvasAgg(figure)
    for index, task in enumerate(tasks, start=1):
        _, title, _ = METRICS[task]
        axes = figure.add_subplot(1, len(tasks), index)
        entries = [entry for entry in result["aggregated"] if entry["task"] == task and "error" not in entry]
        for variant in VARIANTS:
            points = sorted(
                (entry for entry in entries if entry["variant"] == variant),
                key=lambda entry: entry["macs_reduction"],
            )
            if points:
                axes.errorbar(
                    [100 * entry["macs_reduction"] for entry in points],
                    [100 * entry["value"] for entry in points],
                    yerr=[100 * (entry["value_std"] or 0.0) for entry in points],
                    marker="o",
                    capsize=3,
                    label=LABELS[variant],
                )
        for entry in entries:
            if entry["variant"] == "none":
                axes.axhline(100 * entry["value"], color="black", linestyle="--", label="dense")
        axes.set_xlabel("fewer MACs than the start model (%)")
        axes.set_ylabel(f"{title} (%)")
        axes.set_title(f"{task.upper()}: {title}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def update_readme(markdown: str, readme: Path = README) -> bool:
    """Replace the text between the README's comparison markers; False when there are no markers."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if start < 0 or end < start:
        return False
    updated = text[: start + len(MARKERS[0])] + "\n" + markdown + text[end:]
    atomic_write_text(readme, updated)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every configuration")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_RECIPES), choices=list(TASK_RECIPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    parser.add_argument("--start-model", default=None, help="default: train demo_asr_dense first")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/paper_comparison"))
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the results go")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny corpus and model")
    parser.add_argument("--no-readme", action="store_true", help="leave the README table alone")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.tasks, args.variants, args.targets, args.seeds)
    except HJPruneInputError as err:
        parser.error(str(err))
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    import transformers

    transformers.logging.disable_progress_bar()
    result = run_comparison(runs, args.runs_dir, args.start_model, args.jobs, args.quick)
    result["aggregated"] = aggregate(result["runs"])
    result["command"] = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / "paper_comparison"
    atomic_write_json(stem.with_suffix(".json"), result, indent=1)
    markdown = results_markdown(result)
    atomic_write_text(
        stem.with_suffix(".md"),
        f"# Toy reproduction of the paper's comparison\n\nRegenerate: `{result['command']}`\n\n"
        f"![metric against MACs](paper_comparison.png)\n\n{markdown}",
    )
    plot(result, stem.with_suffix(".png"))
    if not args.no_readme and update_readme(markdown):
        print(f"updated the table in {README}")
    print(f"wrote {stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
