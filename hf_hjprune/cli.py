"""The `hjprune` command: one subcommand per module.

A subcommand module has a docstring (its first line is the help text), `add_arguments(parser)` and
`run(args)`; register it in `SUBCOMMANDS`. A mistake in the input (`HJPruneInputError`) is printed in
one line with exit status 2; any other exception is a bug or an environment problem and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from .errors import HJPruneInputError

SUBCOMMANDS: dict[str, str] = {
    "pretrain": "hf_hjprune.pretrain",
    "train": "hf_hjprune.train",
    "demo": "hf_hjprune.demo",
    "bench": "hf_hjprune.bench",
    "export": "hf_hjprune.export",
    "push": "hf_hjprune.hub",
    "zoo": "hf_hjprune.zoo",
}
"""Subcommand name → module implementing it."""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns its exit status."""
    parser = argparse.ArgumentParser(
        prog="hjprune", description="HJ-Pruning of wav2vec2 / HuBERT / WavLM models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        summary = module.__doc__.strip().splitlines()[0]
        subparser = subparsers.add_parser(name, help=summary, description=module.__doc__)
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run, parser=subparser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        status = args.run(args)
    except HJPruneInputError as err:  # bad input, explained by the message: no traceback
        args.parser.exit(2, f"{args.parser.prog}: error: {err}\n")
    return status or 0


if __name__ == "__main__":
    raise SystemExit(main())
