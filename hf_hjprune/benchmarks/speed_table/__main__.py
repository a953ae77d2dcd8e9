"""`python -m hf_hjprune.benchmarks.speed_table`: measure the speed table and write its .json and .md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import transformers

from ...atomic import atomic_write_json, atomic_write_text
from . import __doc__ as DESCRIPTION
from .measure import EXPERIMENTS, FULL, QUICK, TABLE_MODELS, run_table
from .render import COMMAND, table_markdown

RESULTS_DIR = Path(__file__).parent.parent / "results"


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the run, as the report quotes it."""
    return " ".join(
        [
            COMMAND,
            *(["--quick"] if args.quick else []),
            *([f"--threads {args.threads}"] if args.threads else []),
            *(["--families", *args.families] if args.families != list(TABLE_MODELS) else []),
            *(["--experiments", *args.experiments] if args.experiments != list(EXPERIMENTS) else []),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=DESCRIPTION.split("\n\n")[0])
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
        result["command"] = _command(args)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_path, result, indent=1)
    atomic_write_text(md_path, table_markdown(result, result["command"]))
    print(f"wrote {md_path}" + ("" if args.markdown_only else f" and {json_path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
