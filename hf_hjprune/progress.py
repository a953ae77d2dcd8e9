"""Progress of a training loop for the person watching it: a bar on a terminal, log lines in a file.

A tqdm bar redraws itself with carriage returns many times a second; written to a file (CI, a
cluster job, `nohup`, `make demo > log`) every redraw stays in the file. [`ProgressReporter`]
shows a bar only when stderr is a terminal and otherwise logs one line every `interval` seconds
(and at the end)::

    train: step 120/900 (13%) | loss 1.234 | macs reduction 0.312 (target 0.400) | λ 0.012 | 2.9 it/s | ETA 4m29s

[`quiet_progress_bars`] turns off the bars of transformers, datasets and huggingface_hub in the same
situation.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from tqdm.auto import tqdm

LOG_INTERVAL_SECONDS = 30.0
"""Seconds between two progress lines when the output is not a terminal."""


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stderr, where progress bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def quiet_progress_bars() -> None:
    """Turn off the progress bars of transformers, datasets and huggingface_hub when stderr is not a terminal."""
    if is_terminal():
        return
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


def format_duration(seconds: float) -> str:
    """`42s`, `4m29s`, `2h05m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressReporter:
    """Training progress: a tqdm bar on a terminal, else a log line every `interval` seconds.

    Args:
        total: The number of steps of the run.
        initial: The step the run starts (or resumes) at.
        desc: A short name of the loop, first on each line.
        enabled: False on all processes but one (then nothing is shown).
        interval: Seconds between log lines when stderr is not a terminal (the last step is always logged).
        logger: Where the lines go.
        terminal: Force the bar (True) or the lines (False); default: whether stderr is a terminal.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        enabled: bool = True,
        interval: float | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        terminal: bool | None = None,
    ):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.interval = LOG_INTERVAL_SECONDS if interval is None else interval
        self.logger = logger or logging.getLogger(__name__)
        self.terminal = is_terminal() if terminal is None else terminal
        self.start_step = self.step = initial
        self.logged_step: int | None = None
        self.started = self.last_line = time.perf_counter()
        self.values: dict[str, str] = {}
        self.bar = tqdm(total=total, initial=initial, desc=desc) if enabled and self.terminal else None

    def update(self, step: int, values: Mapping[str, str] | None = None) -> None:
        """The loop reached `step`; `values` are the latest numbers to show (already formatted)."""
        if values:
            self.values = dict(values)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.step)
            if values:
                self.bar.set_postfix(values, refresh=False)
        self.step = step
        now = time.perf_counter()
        due = now - self.last_line >= self.interval or step >= self.total
        if self.bar is None and due and step != self.logged_step:  # one line per step at most
            self.last_line, self.logged_step = now, step
            self.logger.info(self.line())

    def line(self) -> str:
        """`desc: step S/T (P%) | name value | ... | R it/s | ETA D`."""
        elapsed = time.perf_counter() - self.started
        rate = (self.step - self.start_step) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: step {self.step}/{self.total} ({self.step / max(1, self.total):.0%})"]
        parts += [f"{name} {value}" for name, value in self.values.items()]
        parts.append(f"{rate:.2f} it/s")
        if rate > 0 and self.step < self.total:
            parts.append(f"ETA {format_duration((self.total - self.step) / rate)}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
