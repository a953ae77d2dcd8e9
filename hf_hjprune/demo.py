"""Run HJ-Pruning end to end on a CPU in minutes, with nothing to download.

1. synthesise the spoken-command corpus with eSpeak NG;
2. from the start model that ships with the package (`pretrained:tiny-hubert-asr`, pretrained here on
   broad synthetic speech), as in the paper: fine-tune a dense ASR model, and prune one while it is
   fine-tuned for the same steps (HJ-MAC, 40% fewer MACs); the same for intent classification (SLU);
   the four runs train side by side, `jobs` at a time;
3. evaluate all four on the test split (held-out speakers and sentence templates) and, where flite is
   installed, on the same sentences spoken by flite (a synthesizer never trained on), and compare them.

Each run leaves `DIR/<run>/model` (load it with `AutoModelForCTC` / `AutoModelForAudioClassification`)
and `DIR/<run>/summary.json`; the comparison goes to `DIR/results.md` and `DIR/results.json`.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, atomic_write_text
from .recipes import load_recipe
from .reporting import NOT_AVAILABLE, markdown_table, percent
from .train import prepare_data, train_all

RUNS: tuple[tuple[str, str], ...] = (
    ("asr_dense", "dense ASR"),
    ("asr_hjmac", "pruned ASR (HJ-MAC)"),
    ("slu_dense", "dense SLU"),
    ("slu_hjmac", "pruned SLU (HJ-MAC)"),
)
"""(run name, row label); run `name` uses the shipped recipe `demo_{name}`."""

QUICK_OVERRIDES = (
    "max_steps=3",
    "batch_size=4",
    "eval_steps=0",
    "log_steps=1",
    "data_options.num_train=32",
    "data_options.num_validation=8",
    "data_options.num_test=8",
)
"""`--quick`: a smoke test of the pipeline on a tiny corpus (the models learn nothing)."""

QUICK_MODEL = (
    "model_config.hidden_size=32",
    "model_config.num_hidden_layers=2",
    "model_config.num_attention_heads=2",
    "model_config.intermediate_size=64",
    "model_config.conv_dim=[32, 16, 16, 16, 16, 16, 16]",
    "model_config.num_conv_pos_embeddings=16",
    "model_config.num_conv_pos_embedding_groups=4",
)

COLUMNS = (
    ("run", "run"),
    ("wer", "WER"),
    ("cer", "CER"),
    ("intent_accuracy", "intent acc."),
    ("ood_wer", "WER (flite)"),
    ("ood_intent_accuracy", "intent acc. (flite)"),
    ("params", "params"),
    ("macs_per_second", "MACs / s audio"),
    ("macs_reduction", "MACs vs start"),
    ("cnn_share", "CNN share of MACs"),
    ("train_seconds", "train time"),
)


def run_demo(
    output_dir: str | Path, quick: bool = False, jobs: int = 2, resume: bool = False
) -> list[dict[str, Any]]:
    """Run the four trainings into `output_dir` and write the comparison; return its rows.

    Every run starts from the same shipped start model; they train `jobs` at a time, each in its own
    process (`quick`: a tiny model built in code, on a tiny corpus). With `resume`, a run that a SIGTERM
    stopped continues from the checkpoint it saved.
    """
    output_dir = Path(output_dir)
    started = time.perf_counter()
    recipes = []
    for name, _ in RUNS:
        overrides = [f"output_dir={output_dir / name}", f"data_options.cache_dir={output_dir / 'corpus'}"]
        if quick:
            overrides += [*QUICK_OVERRIDES, "model=tiny:hubert", *QUICK_MODEL]
        recipes.append(load_recipe(f"demo_{name}", overrides))
    prepare_data(recipes[0])  # the corpus and the flite test set, once, before the parallel runs
    summaries = train_all(recipes, jobs, resume=resume)
    rows = [result_row(label, summary) for (_, label), summary in zip(RUNS, summaries)]
    table = format_table(rows)
    atomic_write_text(
        output_dir / "results.md",
        f"# HJ-Pruning demo\n\nTest split of the synthetic spoken-command corpus (held-out speakers and "
        f"templates); out of domain: the same sentences spoken by flite. Total wall time: "
        f"{time.perf_counter() - started:.0f} s.\n\n{table}\n",
    )
    atomic_write_json(output_dir / "results.json", rows)
    print(table)
    return rows


def result_row(label: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One row of the comparison from a run's summary."""
    metrics = summary["metrics"]["after"]
    ood = summary.get("ood_test", {}).get("metrics", {})
    macs = summary["macs"]
    return {
        "run": label,
        "wer": metrics.get("wer"),
        "cer": metrics.get("cer"),
        "intent_accuracy": metrics.get("accuracy"),
        "ood_wer": ood.get("wer"),
        "ood_intent_accuracy": ood.get("accuracy"),
        "params": summary["params"]["after"]["total"],
        "macs_per_second": macs["after"]["total"] / macs["seconds"],
        "macs_reduction": 1.0 - macs["after"]["total"] / macs["before"]["total"],
        "cnn_share": macs["after"]["cnn"] / macs["after"]["total"],
        "train_seconds": summary["train_seconds"],
        "model_dir": str(Path(summary["recipe"]["output_dir"]) / "model"),
    }


FORMATS: dict[str, Callable[[float], str]] = {
    **dict.fromkeys(
        ("wer", "cer", "intent_accuracy", "ood_wer", "ood_intent_accuracy", "macs_reduction", "cnn_share"),
        functools.partial(percent, decimals=1),
    ),
    "params": "{:,.0f}".format,
    "macs_per_second": "{:,.0f}".format,
    "train_seconds": "{:.0f} s".format,
}
"""How each column's numbers are written (`run` is a label)."""


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    cells = [
        [
            row[key] if key == "run" else NOT_AVAILABLE if row[key] is None else FORMATS[key](row[key])
            for key, _ in COLUMNS
        ]
        for row in rows
    ]
    return "\n".join(markdown_table([title for _, title in COLUMNS], cells))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune demo`."""
    parser.add_argument("--output-dir", default="outputs/demo", help="where the runs and the results go")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test on a tiny corpus")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side (default: 2)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the runs a SIGTERM stopped from their checkpoints"
    )


def run(args: argparse.Namespace) -> None:
    """Run the demo from the command line."""
    run_demo(args.output_dir, quick=args.quick, jobs=args.jobs, resume=args.resume)
