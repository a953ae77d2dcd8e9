"""Measured CPU speedup of HJ-pruned wav2vec2-base / HuBERT-base / WavLM-base structures against their MACs.

    python -m hf_hjprune.benchmarks.speed_table [--quick] [--families NAME ...] [--experiments NAME ...]

regenerates `results/speed_table.json` and `results/speed_table.md` in `hf_hjprune/benchmarks/`
(`--output-dir` elsewhere; `--markdown-only` re-renders the .md from the .json). The deployment experiment
times every structure in PyTorch fp32, in PyTorch after `optimize_for_inference`, and exported to ONNX
Runtime in fp32 and int8 (`hjprune export`), at 1 and 2 threads, each as a speedup against the dense model
in PyTorch fp32 of the same run.

- `measure`: the structures (`structure_for_reduction`), the experiments and `run_table`, which returns
  the JSON document;
- `results`: reading that document;
- `render`: `table_markdown`, the Markdown report of a document;
- `findings`: its findings, numbers and machine facts taken from the document.
"""

from .findings import deployment_findings, findings
from .measure import (
    EXPERIMENTS,
    FULL,
    QUICK,
    REDUCTIONS,
    RUNTIMES,
    TABLE_MODELS,
    Plan,
    deployment_models,
    kernel_times,
    part_times,
    run_table,
    structure_for_reduction,
    table_models,
)
from .render import COMMAND, table_markdown

__all__ = [
    "COMMAND",
    "EXPERIMENTS",
    "FULL",
    "QUICK",
    "REDUCTIONS",
    "RUNTIMES",
    "TABLE_MODELS",
    "Plan",
    "deployment_findings",
    "deployment_models",
    "findings",
    "kernel_times",
    "part_times",
    "run_table",
    "structure_for_reduction",
    "table_markdown",
    "table_models",
]
