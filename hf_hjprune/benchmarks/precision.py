"""What CPU autocast costs on this machine: one training step in fp32 against bf16 autocast.

    python -m hf_hjprune.benchmarks.precision [--threads 1] [--repeats 2] [--steps 5]

A training step (forward and backward, `batch` utterances of `seconds` of noise) through the demo's
start model, fp32 and bf16 interleaved so that both see the same machine load. On a CPU that computes
bf16 natively (AVX512-BF16, AMX) autocast pays off; elsewhere oneDNN emulates it, which is why the demo
recipes train in fp32 (`train.cpu_computes_natively` decides whether `hjprune train` warns).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCTC

from ..bench import intra_op_threads
from ..reporting import markdown_table
from ..start_models import resolve_model
from ..train import cpu_computes_natively

START_MODEL = "pretrained:tiny-hubert-asr"


def step_seconds(model: torch.nn.Module, audio: torch.Tensor, bf16: bool, steps: int) -> float:
    """Mean wall time of `steps` forward + backward passes, under bf16 autocast or in fp32."""
    started = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(audio).logits
        logits.float().sum().backward()
    return (time.perf_counter() - started) / steps


def measure(threads: int, repeats: int, steps: int, batch: int = 8, seconds: float = 2.0) -> dict[str, float]:
    """The median step time of fp32 and of bf16 autocast, seconds."""
    model = AutoModelForCTC.from_pretrained(resolve_model(START_MODEL), attn_implementation="eager").train()
    audio = torch.randn(batch, int(16_000 * seconds), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with intra_op_threads(threads):
        for bf16 in (False, True):  # warm-up
            step_seconds(model, audio, bf16, 1)
        for _ in range(repeats):
            for name, bf16 in (("fp32", False), ("bf16", True)):
                times[name].append(step_seconds(model, audio, bf16, steps))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default: 2)")
    parser.add_argument("--steps", type=int, default=5, help="steps timed per round (default: 5)")
    args = parser.parse_args(argv)
    times = measure(args.threads, args.repeats, args.steps)
    print(
        f"CPU: {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_computes_natively('bf16')}; "
        f"8 utterances of 2 s through {START_MODEL}, {args.threads} thread(s)\n"
    )
    rows = [[name, f"{value:.2f} s", f"{value / times['fp32']:.1f}x"] for name, value in times.items()]
    print("\n".join(markdown_table(["precision", "training step", "vs fp32"], rows)))


if __name__ == "__main__":
    main()
