"""A toy reproduction of the paper's comparison on the synthetic spoken-command corpus.

    python -m hf_hjprune.benchmarks.paper_comparison [--seeds 0 1 2] [--jobs 2] [--quick]

Peng et al. (2023) prune wav2vec2-base while fine-tuning it and compare HJ-MAC, HJ-Sep, HJ-Param and
Transformer-only pruning at several MACs budgets, for ASR (WER) and SLU (intent accuracy). Here, as in
the paper, every run starts from the same pretrained model (the demo recipes' start model, shipped with
the package) and prunes *while* it is fine-tuned, for as many steps as the dense baseline
(`demo_asr_dense` / `demo_slu_dense`; pruned runs: `demo_asr_hjmac` / `demo_slu_hjmac` with the variant,
target and seed changed). Two quality levers are added to HJ-MAC: a final fine-tune of the fixed pruned
structure (`final_finetune_steps` more steps), and distillation from the dense run of the same seed.

Finished runs (`OUTPUT_DIR/<run>/summary.json`) are reused, so an interrupted comparison continues
where it stopped; a finished run of another recipe (trained before a recipe changed) is an error. The
command writes `results/paper_comparison.{json,md,png}` next to this file and the table between the
`paper-comparison` markers of the README. A comparison of some tasks (`--tasks asr`) replaces their rows
in the results and keeps the other tasks', each task with the command that measured it.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from ..pruner import DENSE, PRUNING_VARIANTS
from ..pruner import VARIANTS as ALL_VARIANTS
from ..reporting import NOT_AVAILABLE, markdown_table, mean_percent, new_figure, results_page, save_png

RESULTS_DIR = Path(__file__).parent / "results"
README = Path(__file__).parents[2] / "README.md"
MARKERS = ("<!-- paper-comparison:start -->", "<!-- paper-comparison:end -->")
COMMAND = "python -m hf_hjprune.benchmarks.paper_comparison"

DENSE_RECIPES = {"asr": "demo_asr_dense", "slu": "demo_slu_dense"}
TASK_RECIPES = {"asr": "demo_asr_hjmac", "slu": "demo_slu_hjmac"}
METRICS = {"asr": ("wer", "WER", False), "slu": ("accuracy", "intent accuracy", True)}
"""task -> (summary metric, title, higher is better)."""
VARIANTS = PRUNING_VARIANTS
"""The variants compared (all of `HJPruner`'s), each against the dense baseline."""
LEVERS = ("finetune", "distill")
FINAL_FINETUNE_STEPS = 100
"""Steps of the final fine-tune lever (on top of the pruning run's steps)."""
FINAL_FINETUNE_LR_FACTOR = 0.25
"""Peak learning rate of the final fine-tune, relative to the recipe's. Chosen on the validation split
(`hjprune train demo_asr_hjmac --set final_finetune_steps=100 --set final_finetune_learning_rate=5.0e-4|2.0e-3
--set eval_steps=100`, seed 0): validation WER 24.7% after pruning, 22.8% after a fine-tune at a quarter
of the peak rate (5e-4), 27.3% after one at the full rate (2e-3)."""
LABELS = {
    **{name: variant.label for name, variant in ALL_VARIANTS.items()},
    "finetune": f"{ALL_VARIANTS['macs'].label} + final fine-tune",
    "distill": f"{ALL_VARIANTS['macs'].label} + distillation",
}
"""Row labels: a variant's, or that of HJ-MAC with a lever."""
TARGETS = (0.2, 0.4, 0.6)
LEVER_TARGETS = (0.4,)
TARGET_TOLERANCE = 0.02
"""A run whose exported model misses its target by more than this (absolute) is flagged."""


@dataclass(frozen=True)
class Run:
    """One training run of the comparison (`lever`: a quality lever added to HJ-MAC)."""

    task: str
    variant: str
    target: float | None
    seed: int
    lever: str | None = None

    @property
    def name(self) -> str:
        target = "" if self.target is None else f"_{round(self.target * 100)}"
        lever = "" if self.lever is None else f"_{self.lever}"
        return f"{self.task}_{self.variant}{target}{lever}_seed{self.seed}"

    @property
    def label(self) -> str:
        return LABELS[self.lever or self.variant]


def plan(
    tasks: Sequence[str] = tuple(TASK_RECIPES),
    variants: Sequence[str] = VARIANTS,
    targets: Sequence[float] = TARGETS,
    seeds: Sequence[int] = (0,),
    levers: Sequence[str] = LEVERS,
    lever_targets: Sequence[float] = LEVER_TARGETS,
) -> list[Run]:
    """The runs of a comparison: per task and seed, a dense baseline, every variant × target, and
    HJ-MAC with each lever at `lever_targets`."""
    runs = []
    for task in tasks:
        if task not in TASK_RECIPES:
            raise HJPruneInputError(f"unknown task {task!r}; expected some of {', '.join(TASK_RECIPES)}")
        for seed in seeds:
            runs.append(Run(task, "none", None, seed))
            runs += [Run(task, variant, target, seed) for variant in variants for target in targets]
            runs += [Run(task, "macs", target, seed, lever) for lever in levers for target in lever_targets]
    unknown = sorted({run.variant for run in runs} - set(LABELS)) + sorted(set(levers) - set(LEVERS))
    if unknown:
        raise HJPruneInputError(
            f"unknown variant(s) or lever(s) {unknown}; expected some of {', '.join(VARIANTS + LEVERS)}"
        )
    bad = [target for target in (*targets, *lever_targets) if not 0.0 < target < 1.0]
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
        "lever": run.lever,
        "seed": run.seed,
        "metric": METRICS[run.task][0],
    }


def result_row(run: Run, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison's record of one finished run."""
    metric = METRICS[run.task][0]
    macs = summary["macs"]
    removed = macs["before"]["total"] - macs["after"]["total"]
    reduction = {part: _reduction(summary, "macs", part) for part in ("total", "cnn", "transformer")}
    params_reduction = _reduction(summary, "params", "total")
    if run.target is None:
        target_error = None
    elif run.variant == "sep":  # the target of each part: the worse of the two misses
        target_error = max((reduction[part] - run.target for part in ("cnn", "transformer")), key=abs)
    else:
        target_error = (params_reduction if run.variant == "params" else reduction["total"]) - run.target
    return {
        **_run_fields(run),
        "value": summary["metrics"]["after"][metric],
        "value_before": summary["metrics"]["before"][metric],
        "ood_value": summary.get("ood_test", {}).get("metrics", {}).get(metric),
        "macs_reduction": reduction["total"],
        "cnn_macs_reduction": reduction["cnn"],
        "transformer_macs_reduction": reduction["transformer"],
        "params_reduction": params_reduction,
        "cnn_share_of_removed": (macs["before"]["cnn"] - macs["after"]["cnn"]) / removed
        if removed > 0
        else None,
        "target_error": target_error,
        "macs_after": macs["after"]["total"],
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

    Every run starts from `start_model` (default: the demo recipes' shipped start model). Distillation
    runs learn from the dense run of their task and seed, so they train after the others. `jobs` runs
    train side by side, each in its own process (`hf_hjprune.train.train_all`). A run that a killed
    comparison stopped (its SIGTERM saved a checkpoint) continues from that checkpoint.
    """
    from ..recipes import load_recipe
    from ..train import finished_summary, prepare_data, train_all

    output_root = Path(output_root)
    common = [f"data_options.cache_dir={output_root / 'corpus'}"]
    if quick:
        common += [*QUICK_OVERRIDES, "model=tiny:hubert", *QUICK_MODEL]
    elif start_model is not None:
        common.append(f"model={start_model}")
    started = time.perf_counter()

    def recipe_of(run: Run):
        overrides = [*common, f"seed={run.seed}", f"output_dir={output_root / run.name}"]
        if run.variant == DENSE:
            return load_recipe(DENSE_RECIPES[run.task], overrides)
        overrides += [f"variant={run.variant}", f"target={run.target}"]
        if run.lever == "distill":
            teacher = output_root / Run(run.task, "none", None, run.seed).name / "model"
            overrides.append(f"distillation={{teacher: {teacher}, logits_weight: 1.0, hidden_weight: 0.0}}")
        recipe = load_recipe(TASK_RECIPES[run.task], overrides)
        if run.lever == "finetune":
            recipe = dataclasses.replace(
                recipe,
                final_finetune_steps=3 if quick else FINAL_FINETUNE_STEPS,
                final_finetune_learning_rate=recipe.learning_rate * FINAL_FINETUNE_LR_FACTOR,
            )
        return recipe

    recipes = [recipe_of(run) for run in runs]  # bad overrides fail here, before any training
    finished = {r.output_dir for r in recipes if finished_summary(r) is not None}  # or another recipe's
    prepare_data(recipes[0])  # the corpus and the flite test set, once, before the parallel runs
    errors: dict[str, dict[str, str]] = {}
    for wave in (False, True):  # distillation needs its teacher, the dense run, finished first
        todo = [r for run, r in zip(runs, recipes) if (run.lever == "distill") == wave]
        todo = [r for r in todo if r.output_dir not in finished]
        log(f"[{time.perf_counter() - started:6.0f} s] training {len(todo)} runs")
        # A target a variant cannot reach (Transformer-only at high targets) is a result, not a failure.
        errors |= {
            r.output_dir: {key: summary[key] for key in ("error", "error_type") if key in summary}
            for r, summary in zip(todo, train_all(todo, jobs, keep_going=True, resume=True))
        }
    rows = []
    for run, recipe in zip(runs, recipes):
        summary = finished_summary(recipe)
        if summary is not None:
            rows.append(result_row(run, summary))
        else:
            rows.append({**_run_fields(run), "error": None, **errors.get(recipe.output_dir, {})})
        log(_describe(rows[-1]))
    log(f"[{time.perf_counter() - started:6.0f} s] done")
    return {"start_model": str(start_model or recipes[0].model), "runs": rows}


def _describe(row: Mapping[str, Any]) -> str:
    if "error" in row:
        return f"{row['run']}: not trained: {row['error']}"
    return (
        f"{row['run']}: {row['metric']} {row['value']:.3f}, {row['macs_reduction']:.1%} fewer MACs "
        f"(CNN {row['cnn_macs_reduction']:.1%}, Transformer {row['transformer_macs_reduction']:.1%})"
    )


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and spread over seeds) of each task × variant × target × lever, in first-seen order."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["variant"], row["target"], row.get("lever")), []).append(row)
    aggregated = []
    for (task, variant, target, lever), group in groups.items():
        members = [member for member in group if "error" not in member]
        entry = {
            "task": task,
            "variant": variant,
            "target": target,
            "lever": lever,
            "seeds": [member["seed"] for member in members],
            "metric": group[0]["metric"],
        }
        if not members:  # not trainable (an unreachable target): the same for every seed
            aggregated.append(
                {**entry, **{key: group[0][key] for key in ("error", "error_type") if key in group[0]}}
            )
            continue
        for key in ("value", "ood_value"):
            values = [member[key] for member in members if member.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        for key in ("macs_reduction", "cnn_macs_reduction", "transformer_macs_reduction", "params_reduction",
                    "cnn_share_of_removed"):  # fmt: skip
            values = [member[key] for member in members if member.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
        errors = [member["target_error"] for member in members if member.get("target_error") is not None]
        entry["worst_target_error"] = max(errors, key=abs) if errors else None
        aggregated.append(entry)
    return aggregated


def _label(entry: Mapping[str, Any]) -> str:
    return LABELS[entry.get("lever") or entry["variant"]]


def _reduction_cell(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"−{value:.1%}" if value > 0 else "0"


def _table_row(entry: Mapping[str, Any]) -> list[str]:
    target = NOT_AVAILABLE if entry["target"] is None else f"−{entry['target']:.0%}"
    if entry["variant"] == "params" and entry["target"] is not None:
        target += " params"
    if "error" in entry:
        status = "not reachable" if entry.get("error_type") == "UnreachableTargetError" else "not trained"
        return [_label(entry), target, f"{status}¹", *[NOT_AVAILABLE] * 6]
    missed = entry.get("worst_target_error")
    flag = "²" if missed is not None and abs(missed) > TARGET_TOLERANCE else ""
    return [
        _label(entry),
        target,
        mean_percent(entry),
        mean_percent(entry, "ood_value"),
        _reduction_cell(entry["macs_reduction"]) + flag,
        *(
            _reduction_cell(entry[key])
            for key in ("cnn_macs_reduction", "transformer_macs_reduction", "params_reduction")
        ),
        NOT_AVAILABLE
        if entry.get("cnn_share_of_removed") is None
        else f"{entry['cnn_share_of_removed']:.0%}",
    ]


def results_markdown(result: Mapping[str, Any]) -> str:
    """The comparison as Markdown tables (one per task) with the generated observations."""
    lines = []
    for task, (_, title, _) in METRICS.items():
        entries = [entry for entry in result["aggregated"] if entry["task"] == task]
        if not entries:
            continue
        seeds = sorted({seed for entry in entries for seed in entry["seeds"]})
        header = [
            "variant", "target", title, f"{title} (flite)", "MACs", "CNN MACs", "Transformer MACs", "params",
            "CNN share of removed MACs",
        ]  # fmt: skip
        command = result.get("commands", {}).get(task)
        lines += [
            f"**{title}** on the test split ({'seed' if len(seeds) == 1 else 'mean ± std over seeds'} "
            f"{', '.join(map(str, seeds))}); out of domain: the same sentences spoken by flite"
            + (f" (`{command}`):" if command else ":"),
            "",
            *markdown_table(header, [_table_row(entry) for entry in entries]),
        ]
        lines += ["", *(f"- {text}" for text in observations(result["aggregated"], task))]
        lines += [
            f"- ¹ {_label(entry)} at −{entry['target']:.0%}: {entry['error']}."
            for entry in entries
            if "error" in entry
        ]
        missed = [
            e
            for e in entries
            if (e.get("worst_target_error") or 0) and abs(e["worst_target_error"]) > TARGET_TOLERANCE
        ]
        lines += [
            f"- ² {_label(e)} at −{e['target']:.0%}: a seed missed the target by {e['worst_target_error']:+.1%}."
            for e in missed
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


INSIDE_SPREAD = "the gap is inside the seeds' spread"


def _compare(a: Mapping[str, Any], b: Mapping[str, Any], higher: bool) -> str:
    """ "better", "worse" or "level": `a` against `b`, level when the gap between the means is inside the
    larger of the two spreads over seeds (a single seed has no spread, so any gap counts)."""
    gap = a["value"] - b["value"]
    if abs(gap) <= max(a.get("value_std") or 0.0, b.get("value_std") or 0.0):
        return "level"
    return "better" if (gap > 0) == higher else "worse"


def _against(verdict: str, name: str, entry: Mapping[str, Any]) -> str:
    """ "better than dense (x)", or "level with dense (x; the gap is inside the seeds' spread)"."""
    if verdict == "level":
        return f"level with {name} ({mean_percent(entry)}; {INSIDE_SPREAD})"
    return f"{verdict} than {name} ({mean_percent(entry)})"


def observations(aggregated: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """Plain statements read off the results (generated, so they always match the numbers)."""
    _, title, higher = METRICS[task]
    entries = [entry for entry in aggregated if entry["task"] == task and "error" not in entry]
    dense = next((entry for entry in entries if entry["variant"] == DENSE), None)
    targets = sorted({entry["target"] for entry in entries if entry["target"] is not None})

    def plain(target: float) -> dict[str, Mapping[str, Any]]:
        return {e["variant"]: e for e in entries if e["target"] == target and not e.get("lever")}

    def best_of(options: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        return (max if higher else min)(options, key=lambda entry: entry["value"])

    texts = []
    for target in targets:
        # HJ-Param's target is on parameters, not MACs.
        at = [entry for variant, entry in plain(target).items() if variant != "params"]
        if not at:
            continue
        best = best_of(at)
        text = (
            f"At the −{target:.0%} MACs target the best {title} is {_label(best)}'s "
            f"({mean_percent(best)}, {best['macs_reduction']:.0%} fewer MACs reached)"
        )
        if dense is not None:
            text += ", " + _against(_compare(best, dense, higher), "dense", dense)
        texts.append(text + ".")
    for target in targets:
        by_variant = plain(target)
        if "macs" not in by_variant:
            continue
        joint = by_variant["macs"]
        for other, how in (("transformer", "Transformer-only pruning"), ("sep", "HJ-Sep (separate budgets)")):
            if other not in by_variant:
                continue
            rival, verdict = by_variant[other], _compare(joint, by_variant[other], higher)
            said = {"better": "beats", "worse": "does not beat", "level": "is level with"}[verdict]
            spread = f"; {INSIDE_SPREAD}" if verdict == "level" else ""
            cnn = (
                f"; {joint['cnn_share_of_removed']:.0%} of the MACs HJ-MAC removed were the CNN's"
                if other == "transformer"
                else ""
            )
            texts.append(
                f"At the −{target:.0%} target, HJ-MAC {said} {how} ({mean_percent(joint)} at "
                f"{joint['macs_reduction']:.0%} fewer MACs vs {mean_percent(rival)} at "
                f"{rival['macs_reduction']:.0%}{spread}){cnn}."
            )
        if "params" in by_variant:
            param = by_variant["params"]
            texts.append(
                f"HJ-Param at −{target:.0%} parameters removes {param['macs_reduction']:.0%} of the MACs, "
                f"{param['cnn_share_of_removed']:.0%} of them from the CNN (HJ-MAC at −{target:.0%} MACs: "
                f"{joint['cnn_share_of_removed']:.0%}); {title} {mean_percent(param)}."
            )
    for target in targets:
        options = [e for e in entries if e["target"] == target and e["variant"] == "macs"]
        if len(options) > 1 and dense is not None:
            best = best_of(options)
            texts.append(
                f"At −{target:.0%}, the best HJ-MAC lever is {_label(best)} ({mean_percent(best)}), "
                + _against(_compare(best, dense, higher), "dense", dense)
                + "."
            )
    return texts


def plot(result: Mapping[str, Any], path: str | Path) -> None:
    """Metric against MACs reduction, one line per variant and a panel per task (PNG)."""
    tasks = [task for task in METRICS if any(entry["task"] == task for entry in result["aggregated"])]
    figure = new_figure(figsize=(5.0 * len(tasks), 4.0))
    colors = {label: f"C{index}" for index, label in enumerate(LABELS.values())}  # the same in every panel
    for index, task in enumerate(tasks, start=1):
        _, title, _ = METRICS[task]
        axes = figure.add_subplot(1, len(tasks), index)
        entries = [entry for entry in result["aggregated"] if entry["task"] == task and "error" not in entry]
        for label in dict.fromkeys(_label(entry) for entry in entries if entry["variant"] != DENSE):
            points = sorted(
                (entry for entry in entries if entry["variant"] != DENSE and _label(entry) == label),
                key=lambda entry: entry["macs_reduction"],
            )
            if points:
                axes.errorbar(
                    [100 * entry["macs_reduction"] for entry in points],
                    [100 * entry["value"] for entry in points],
                    yerr=[100 * (entry["value_std"] or 0.0) for entry in points],
                    marker="o",
                    capsize=3,
                    linestyle="none" if len(points) == 1 else "-",
                    color=colors[label],
                    label=label,
                )
        for entry in entries:
            if entry["variant"] == DENSE:
                axes.axhline(100 * entry["value"], color="black", linestyle="--", label="dense")
        axes.set_xlabel("fewer MACs than the start model (%)")
        axes.set_ylabel(f"{title} (%)")
        axes.set_title(f"{task.upper()}: {title}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    save_png(figure, path)


def merge_results(result: dict[str, Any], commands: Mapping[str, str], previous: Path) -> dict[str, Any]:
    """`result` (of the tasks in `commands`, each with the command that measured it) with the other tasks'
    rows and commands from the `previous` results file, when it is of the same start model: a comparison
    of one task (`--tasks asr`) updates that task's half and keeps the other's."""
    result = {**result, "commands": dict(commands)}
    if not previous.is_file():
        return result
    earlier = json.loads(previous.read_text(encoding="utf-8"))
    if earlier.get("start_model") != result["start_model"]:
        return result
    # Files written before per-task commands held one command for every task.
    earlier_commands = earlier.get("commands") or {row["task"]: earlier["command"] for row in earlier["runs"]}
    kept = [row for row in earlier["runs"] if row["task"] not in commands]
    result["runs"] = kept + result["runs"]
    result["commands"] = {
        **{task: earlier_commands[task] for task in dict.fromkeys(row["task"] for row in kept)},
        **commands,
    }
    return result


def update_readme(markdown: str, readme: Path = README, markers: tuple[str, str] = MARKERS) -> bool:
    """Replace the text between a pair of README markers; False when there are no such markers."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(markers[0]), text.find(markers[1])
    if start < 0 or end < start:
        return False
    updated = text[: start + len(markers[0])] + "\n" + markdown + text[end:]
    atomic_write_text(readme, updated)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every configuration")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_RECIPES), choices=list(TASK_RECIPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    parser.add_argument("--levers", nargs="*", default=list(LEVERS), choices=list(LEVERS),
                        help="quality levers added to HJ-MAC (`--levers` alone: none)")  # fmt: skip
    parser.add_argument("--lever-targets", type=float, nargs="+", default=list(LEVER_TARGETS))
    parser.add_argument("--start-model", default=None, help="default: the demo recipes' shipped start model")
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/paper_comparison"))
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the results go")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny corpus and model")
    parser.add_argument("--no-readme", action="store_true", help="leave the README table alone")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.tasks, args.variants, args.targets, args.seeds, args.levers, args.lever_targets)
    except HJPruneInputError as err:
        parser.error(str(err))
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    import transformers

    transformers.logging.disable_progress_bar()
    try:
        result = run_comparison(runs, args.runs_dir, args.start_model, args.jobs, args.quick)
    except HJPruneInputError as err:  # e.g. a finished run of another recipe in --runs-dir
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    stem = args.output_dir / "paper_comparison"
    result = merge_results(result, {task: command for task in args.tasks}, stem.with_suffix(".json"))
    result["aggregated"] = aggregate(result["runs"])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stem.with_suffix(".json"), result, indent=1)
    markdown = results_markdown(result)
    figure = ("metric against MACs", "paper_comparison.png")
    commands = list(dict.fromkeys(result["commands"].values()))
    page = results_page("Toy reproduction of the paper's comparison", commands, markdown, figure)
    atomic_write_text(stem.with_suffix(".md"), page)
    plot(result, stem.with_suffix(".png"))
    if not args.no_readme and update_readme(markdown):
        print(f"updated the table in {README}")
    print(f"wrote {stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
