"""Does pretraining help? The same fine-tuning budget from pretrained start models and from scratch.

    python -m hf_hjprune.benchmarks.pretraining [--start-models pretrained:tiny-hubert-ssl ...] [--seeds 0] [--jobs 2]

For each task (ASR with the demo's `demo_asr_dense` recipe, SLU with `demo_slu_dense`), each start model
is fine-tuned with exactly the recipe's budget (steps, learning-rate schedule, data), and so is a model of
the first start model's shape with fresh weights (`init: random`); every run trains its CNN feature
encoder (`freeze_feature_encoder: false`, which the demo's dense recipes set to true). Reported: WER and CER on the test split
(held-out speakers and templates), intent accuracy, and the same on the test sentences spoken by flite, a
synthesizer no model was trained on (skipped with a note where flite is not installed); the validation
curves of every run go into a plot. Finished runs are reused. Writes `results/pretraining.{json,md,png}`
next to this file and the table between the `pretraining` markers of the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..cards import DOWNSTREAM_MARKERS
from ..errors import HJPruneInputError
from ..reporting import markdown_table, mean_percent, new_figure, results_page, save_png
from ..start_models import PRETRAINED_DIR, PRETRAINED_PREFIX
from .paper_comparison import README, RESULTS_DIR, update_readme

MARKERS = ("<!-- pretraining:start -->", "<!-- pretraining:end -->")
COMMAND = "python -m hf_hjprune.benchmarks.pretraining"
TASK_RECIPES = {"asr": "demo_asr_dense", "slu": "demo_slu_dense"}
METRICS = {"asr": ("wer", "WER", False), "slu": ("accuracy", "intent accuracy", True)}
CURVE_EVAL_STEPS = 50
"""Validation every this many steps: the fine-tuning curves."""


def run_name(task: str, start: str, seed: int) -> str:
    name = start.removeprefix("pretrained:").replace("/", "_").replace(":", "-")
    return f"{task}_{name}_seed{seed}"


def run_benchmark(
    start_models: Sequence[str],
    tasks: Sequence[str] = tuple(TASK_RECIPES),
    seeds: Sequence[int] = (0,),
    runs_dir: str | Path = "outputs/pretraining",
    jobs: int = 1,
    quick_overrides: Sequence[str] = (),
    log=print,
) -> dict[str, Any]:
    """Fine-tune every (task, start, seed), `random` being the first start model's shape from scratch."""
    from ..recipes import load_recipe
    from ..train import finished_summary, prepare_data, train_all

    runs_dir = Path(runs_dir)
    starts = [*start_models, "random"]
    recipes, keys = [], []
    for task in tasks:
        for start in starts:
            for seed in seeds:
                overrides = [
                    f"model={start_models[0] if start == 'random' else start}",
                    f"init={'random' if start == 'random' else 'pretrained'}",
                    "freeze_feature_encoder=false",  # every start trains its CNN: a random one has to
                    "ood_test=flite",
                    f"eval_steps={CURVE_EVAL_STEPS}",
                    f"seed={seed}",
                    f"data_options.cache_dir={runs_dir / 'corpus'}",
                    *quick_overrides,
                    f"output_dir={runs_dir / run_name(task, start, seed)}",
                ]
                recipes.append(load_recipe(TASK_RECIPES[task], overrides))
                keys.append((task, start, seed))
    prepare_data(recipes[0])  # the corpus and the flite test set, once, before the parallel runs
    todo = [r for r in recipes if finished_summary(r) is None]  # a finished run of another recipe raises
    started = time.perf_counter()
    log(f"{len(recipes) - len(todo)} runs done, training {len(todo)}")
    train_all(todo, jobs, resume=True)  # a run a killed comparison stopped continues from its checkpoint
    log(f"trained in {time.perf_counter() - started:.0f} s")
    rows = [
        result_row(task, start, seed, Path(r.output_dir)) for (task, start, seed), r in zip(keys, recipes)
    ]
    return {"start_models": list(start_models), "runs": rows}


def result_row(task: str, start: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """One run's numbers, and its validation curve, from its `summary.json` and `metrics.jsonl`."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    metric = METRICS[task][0]
    ood = summary.get("ood_test", {})
    curve = [
        (line["step"], line[f"validation/{metric}"])
        for line in map(json.loads, (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
        if f"validation/{metric}" in line
    ]
    return {
        "task": task,
        "start": start,
        "seed": seed,
        "metric": metric,
        "value": summary["metrics"]["after"][metric],
        "cer": summary["metrics"]["after"].get("cer"),
        "ood_value": ood.get("metrics", {}).get(metric),
        "ood_skipped": ood.get("skipped"),
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "curve": curve,
    }


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (task, start)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["start"]), []).append(row)
    entries = []
    for (task, start), group in groups.items():
        entry = {
            "task": task,
            "start": start,
            "seeds": [row["seed"] for row in group],
            "metric": group[0]["metric"],
        }
        for key in ("value", "cer", "ood_value"):
            values = [row[key] for row in group if row[key] is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["ood_skipped"] = group[0]["ood_skipped"]
        entries.append(entry)
    return entries


def results_markdown(result: Mapping[str, Any]) -> str:
    """One table per task, and a sentence per pretrained start on what it changed against scratch."""
    lines = []
    for task, (_, title, higher) in METRICS.items():
        entries = [entry for entry in result["aggregated"] if entry["task"] == task]
        if not entries:
            continue
        columns = (
            ["start model", f"test {title}"]
            + (["test CER"] if task == "asr" else [])
            + [f"out-of-domain {title}"]
        )
        rows = [
            [
                "random init (same shape)" if entry["start"] == "random" else f"`{entry['start']}`",
                mean_percent(entry),
                *([mean_percent(entry, "cer")] if task == "asr" else []),
                mean_percent(entry, "ood_value"),
            ]
            for entry in entries
        ]
        lines += [
            f"**{title}** after the same fine-tuning budget (`{TASK_RECIPES[task]}`):",
            "",
            *markdown_table(columns, rows),
        ]
        scratch = next(entry for entry in entries if entry["start"] == "random")
        lines.append("")
        for entry in entries:
            if entry["start"] == "random":
                continue
            gain = (entry["value"] - scratch["value"]) * (1 if higher else -1)
            text = f"- `{entry['start']}`: {_points(gain)} than random init on the test split"
            if entry["ood_value"] is not None and scratch["ood_value"] is not None:
                ood_gain = (entry["ood_value"] - scratch["ood_value"]) * (1 if higher else -1)
                text += f", {_points(ood_gain)} out of domain (flite)"
            lines.append(text + ".")
        if scratch["ood_skipped"]:
            lines.append(f"- Out-of-domain: {scratch['ood_skipped']}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _points(gain: float) -> str:
    return f"{abs(gain) * 100:.1f} points {'better' if gain > 0 else 'worse'}"


def update_start_model_cards(result: Mapping[str, Any]) -> list[Path]:
    """Write each shipped start model's rows (and random init's) into its card's Downstream section."""
    updated = []
    for start in result["start_models"]:
        if not start.startswith(PRETRAINED_PREFIX):
            continue
        card = PRETRAINED_DIR / start[len(PRETRAINED_PREFIX) :] / "README.md"
        rows = [entry for entry in result["aggregated"] if entry["start"] in (start, "random")]
        scratch_of = result["start_models"][0]
        text = (
            f"Fine-tuned on the synthetic spoken-command corpus with the demo's recipes, next to a model of "
            f"`{scratch_of}`'s shape with fresh weights (same budget). Regenerate: `{result['command']}`.\n\n"
            + results_markdown(dict(result, aggregated=rows)).rstrip()
        )
        if update_readme(text, card, DOWNSTREAM_MARKERS):
            updated.append(card)
    return updated


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """Validation curves (metric against step), one panel per task, one line per run."""
    tasks = [task for task in METRICS if any(row["task"] == task for row in result["runs"])]
    figure = new_figure(figsize=(5.0 * len(tasks), 4.0))
    for index, task in enumerate(tasks, start=1):
        axes = figure.add_subplot(1, len(tasks), index)
        for row in (row for row in result["runs"] if row["task"] == task and row["curve"]):
            steps, values = zip(*row["curve"])
            axes.plot(steps, [100 * v for v in values], label=f"{row['start']} (seed {row['seed']})")
        axes.set_xlabel("fine-tuning step")
        axes.set_ylabel(f"validation {METRICS[task][1]} (%)")
        axes.set_title(f"{task.upper()} from pretrained vs random init")
        axes.grid(alpha=0.3)
        if axes.lines:  # runs without validation during training have no curve
            axes.legend(fontsize=8)
    figure.tight_layout()
    save_png(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--start-models",
        nargs="+",
        default=["pretrained:tiny-hubert-asr", "pretrained:tiny-hubert-ssl"],
        help="pretrained start models; `random` is the first one's shape with fresh weights",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASK_RECIPES), choices=list(TASK_RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/pretraining"))
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of every fine-tuning recipe (for smoke tests)")  # fmt: skip
    parser.add_argument("--no-readme", action="store_true", help="leave the README table alone")
    args = parser.parse_args(argv)
    try:
        result = run_benchmark(
            args.start_models, args.tasks, args.seeds, args.runs_dir, args.jobs, args.overrides
        )
    except HJPruneInputError as err:  # e.g. a finished run of another recipe in --runs-dir
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    result["aggregated"] = aggregate(result["runs"])
    result["command"] = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / "pretraining"
    atomic_write_json(stem.with_suffix(".json"), result, indent=1)
    markdown = results_markdown(result)
    title = "Fine-tuning from pretrained start models vs from scratch"
    page = results_page(title, result["command"], markdown, ("validation curves", "pretraining.png"))
    atomic_write_text(stem.with_suffix(".md"), page)
    plot(result, stem.with_suffix(".png"))
    if not args.no_readme and update_readme(markdown, README, MARKERS):
        print(f"updated the table in {README}")
    if not args.no_readme:
        for card in update_start_model_cards(result):
            print(f"updated the downstream results in {card}")
    print(f"wrote {stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
