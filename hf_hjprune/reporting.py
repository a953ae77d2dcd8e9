"""Reporting primitives: Markdown tables, number formats and plots, defined once for every report.

The model cards, the zoo's leaderboard, `hjprune bench`, the demo's table, the benchmarks' results and
the Space all render through these::

    markdown_table(["model", "params"], [["`a`", si(94_400_000)]])  # ['| model | params |', '|---|---|', ...]
    change(94.4e6, 61.2e6)  # '-35.2%'
    percent(0.0573)  # '5.73%'
    save_png(structure_figure(unit_counts(pruned), unit_counts(dense)), "structure.png")

Nothing here imports torch or transformers (matplotlib only when a figure is made): the Space and the
cards use it without the training stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NOT_AVAILABLE = "–"
"""The cell of a value that was not measured."""

# ---------------------------------------------------------------------------------------------
# numbers

SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))
SI_COMPACT = {"sep": "", "largest": "G"}
"""`si` keywords of the zoo's tables (narrow columns): `"94.40M"`, `"2100.00G"`."""
SI_UP_TO_GIGA = {"largest": "G"}
"""`si` keywords of the Space: `"94.40 M"`, `"2100.00 G"` (a long clip's MACs stay in G)."""


def si(value: float, *, sep: str = " ", largest: str = "T") -> str:
    """`value` with an SI prefix and two decimals; below 1000, a whole number.

    The default format is the model cards': `"94.40 M"`, `"2.10 T"`; `SI_COMPACT` and `SI_UP_TO_GIGA`
    name the others in use (`si(value, **SI_COMPACT)`).
    """
    prefixes = SI_PREFIXES[[suffix for _, suffix in SI_PREFIXES].index(largest) :]
    for factor, suffix in prefixes:
        if abs(value) >= factor:
            return f"{value / factor:.2f}{sep}{suffix}"
    return f"{value:.0f}"


def change(before: float, after: float, *, decimals: int = 1) -> str:
    """The relative change from `before` to `after` with its sign: `"-35.2%"` (`decimals=0`: `"-35%"`);
    `"n/a"` when `before` is 0."""
    return f"{(after - before) / before:+.{decimals}%}" if before else "n/a"


def percent(value: float | None, *, decimals: int = 2, symbol: bool = True) -> str:
    """A fraction as a percentage: `"5.73%"` (`decimals=1`: `"5.7%"`; `symbol=False`: `"5.73"`);
    `NOT_AVAILABLE` for None."""
    if value is None:
        return NOT_AVAILABLE
    text = f"{value:.{decimals}%}"  # the same digits as f"{100 * value:.{decimals}f}"
    return text if symbol else text[:-1]


def mean_percent(entry: Mapping[str, Any], key: str = "value") -> str:
    """The mean `entry[key]` of a fraction over seeds, with its spread `entry[key + "_std"]` when there
    is one: `"85.2% ± 1.3%"` (one decimal)."""
    text = percent(entry.get(key), decimals=1)
    spread = entry.get(f"{key}_std")
    return text if entry.get(key) is None or spread is None else f"{text} ± {percent(spread, decimals=1)}"


# ---------------------------------------------------------------------------------------------
# tables

ALIGNMENTS = {"-": "---", "l": ":---", "c": ":---:", "r": "---:"}
"""Column alignment codes of `markdown_table`: default, left, center, right."""


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> list[str]:
    """The lines of a Markdown table; an empty cell is written `| |`.

    Args:
        header: The column titles.
        rows: The cells of each row, already formatted.
        align: One `ALIGNMENTS` code per column (`"-rrr"`: the first column as is, the others right
            aligned); default: none.
    """
    align = align or "-" * len(header)
    if len(align) != len(header):
        raise ValueError(f"{len(align)} alignment codes for {len(header)} columns")

    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return [line(header), "|" + "|".join(ALIGNMENTS[code] for code in align) + "|", *map(line, rows)]


def results_page(
    title: str, command: str | Sequence[str], body: str, figure: tuple[str, str] | None = None
) -> str:
    """A benchmark's results file (`results/NAME.md`): its title, the command (or commands, each
    measuring a part) that regenerate it, its figure (`(alt text, file name)`), if any, then `body`."""
    commands = [command] if isinstance(command, str) else list(command)
    image = f"![{figure[0]}]({figure[1]})\n\n" if figure else ""
    return f"# {title}\n\nRegenerate: {' and '.join(f'`{c}`' for c in commands)}\n\n{image}{body}"


# ---------------------------------------------------------------------------------------------
# figures

STRUCTURE_PANELS = (
    ("conv", "CNN: channels per conv layer", "conv layer"),
    ("heads", "Attention heads per layer", "Transformer layer"),
    ("ffn", "FFN units per layer", "Transformer layer"),
)
"""The panels of `structure_figure`: unit group, title, x-axis label."""


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib figure on an Agg canvas of its own: no pyplot, so no global backend state and no GUI."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install matplotlib") from err
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Save a figure as PNG without metadata: byte-for-byte reproducible for a given matplotlib version."""
    path = Path(path)
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def structure_figure(
    kept: Mapping[str, Sequence[int]],
    original: Mapping[str, Sequence[int]],
    *,
    kept_label: str = "kept",
    share_in_title: bool = False,
    headroom: float = 1.08,
) -> Figure:
    """Bars of the units per layer of each group (conv channels, heads, FFN units): the original model's
    in grey, the kept ones over them in orange (`structure.unit_counts` of each model).

    Args:
        kept: The units per layer of each group of the pruned model.
        original: The same of the model it was pruned from.
        kept_label: The legend of the kept units.
        share_in_title: Add the kept share of each group to its title (`"...: 65% kept"`).
        headroom: The y-axis ends this many times above the highest bar.
    """
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(figsize=(11, 3.2), dpi=100, layout="constrained")
    for ax, (group, title, xlabel) in zip(figure.subplots(1, 3), STRUCTURE_PANELS):
        units, total = list(kept[group]), list(original[group])
        if share_in_title:
            title += f": {sum(units) / sum(total) if sum(total) else 1.0:.0%} kept"
        ax.bar(range(len(total)), total, color="#d9d9d9", edgecolor="#7f7f7f", label="original")
        ax.bar(range(len(units)), units, width=0.6, color="#ff9d00", label=kept_label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_xticks(range(len(total)))
        ax.set_ylim(0, max(*total, *units, 1) * headroom)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.axes[0].legend(loc="upper right", fontsize=8)
    return figure


# ---------------------------------------------------------------------------------------------
# `hjprune bench` results

SPEEDUP_COLUMNS = ("dense (ms)", "pruned (ms)", "speedup", "MACs ratio")
"""Table columns of a dense/pruned timing: both times, their ratio, and the ideal ratio (of the MACs)."""
TRAINING_STEP_COLUMNS = (
    "dense step (ms)",
    "gated step (ms)",
    "ratio",
    "CPU-time ratio",
    "peak memory (MiB)",
    "memory ratio",
)
"""Table columns of a dense/gated training-step timing (`training_step_cells`)."""


def training_step_cells(overhead: Mapping[str, Any]) -> list[str]:
    """The `TRAINING_STEP_COLUMNS` cells of one `bench.training_overhead` result."""
    dense, gated = overhead["dense_step"], overhead["gated_step"]
    return [
        f"{dense['median_ms']:.0f} ± {dense['iqr_ms']:.0f}",
        f"{gated['median_ms']:.0f} ± {gated['iqr_ms']:.0f}",
        f"{overhead['ratio']:.2f}×",
        f"{overhead['cpu_ratio']:.2f}×",
        _memory_change(overhead),
        f"{overhead['memory_ratio']:.2f}×" if "memory_ratio" in overhead else NOT_AVAILABLE,
    ]


def _millions(value: float) -> str:
    return f"{value / 1e6:.3g}"


def _giga(value: float) -> str:
    return f"{value / 1e9:.3g}"


def _model_label(name: str) -> str:
    return f"`{name}`"


def _memory_change(row: Mapping[str, Any]) -> str:
    dense, gated = row["dense_step"].get("peak_memory_mib"), row["gated_step"].get("peak_memory_mib")
    return NOT_AVAILABLE if dense is None or gated is None else f"{dense:.0f} → {gated:.0f}"


def _bench_setting(result: Mapping[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    return (
        f"Measured {machine['date']} on {machine['cpu']} ({settings['threads']} "
        f"thread{'s' if settings['threads'] != 1 else ''}), "
        f"torch {machine['torch']}, transformers {machine['transformers']}"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
        + f"; {settings['warmup']} warm-up and {settings['repeats']} timed runs per configuration."
    )


def _models_table(models: Mapping[str, Any]) -> list[str]:
    return markdown_table(
        ["model", "params (M)", "GMACs / s of audio", "CNN", "Transformer"],
        [
            [
                _model_label(name),
                _millions(entry["params"]["total"]),
                *(_giga(entry["macs_per_second"][part]) for part in ("total", "cnn", "transformer")),
            ]
            for name, entry in models.items()
        ],
    )


def _latency_table(models: Mapping[str, Any]) -> list[str]:
    memory = any(row["peak_memory_mib"] is not None for e in models.values() for row in e["latency"])
    header = ["model", "device", "batch", "audio (s)", "GMACs", "median (ms)", "IQR (ms)"]
    rows = []
    for name, entry in models.items():
        for row in entry["latency"]:
            cells = [
                _model_label(name),
                row["device"],
                str(row["batch_size"]),
                f"{row['seconds']:g}",
                _giga(row["macs"]),
                f"{row['median_ms']:.1f}",
                f"{row['iqr_ms']:.1f}",
            ]
            if memory:
                peak = row["peak_memory_mib"]
                cells.append(NOT_AVAILABLE if peak is None else f"{peak:.0f}")
            rows.append(cells)
    return markdown_table([*header, "peak memory (MiB)"] if memory else header, rows)


def _pair_table(pair: Mapping[str, Any]) -> list[str]:
    runtime = pair.get("runtime", "PyTorch")
    return [
        f"{_model_label(pair['dense'])} → {_model_label(pair['pruned'])} ({runtime}):",
        "",
        *markdown_table(
            ["device", "batch", "audio (s)", *SPEEDUP_COLUMNS, "efficiency", "CPU-time efficiency"],
            [
                [
                    row["device"],
                    str(row["batch_size"]),
                    f"{row['seconds']:g}",
                    f"{row['dense_median_ms']:.1f}",
                    f"{row['pruned_median_ms']:.1f}",
                    f"{row['speedup']:.2f}×",
                    f"{row['macs_ratio']:.2f}×",
                    f"{row['efficiency']:.0%}",
                    f"{row['cpu_speedup'] / row['macs_ratio']:.0%}",
                ]
                for row in pair["results"]
            ],
        ),
    ]


def _training_step_table(overhead: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ["model", "device", "batch", "audio (s)", *TRAINING_STEP_COLUMNS]
    rows = [
        [
            _model_label(row["model"]),
            row["device"],
            str(row["batch_size"]),
            f"{row['seconds']:g}",
            *training_step_cells(row),
        ]
        for row in overhead
    ]
    return [
        "Training step (forward, backward, AdamW), gated (HJPruner attached) vs dense:",
        "",
        *markdown_table(header, rows),
        "",
        "(± is the interquartile range; CPU time is the process CPU time of all threads.)",
    ]


def _training_memory_table(overhead: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        [
            _model_label(row["model"]),
            str(row["batch_size"]),
            f"{row['seconds']:g}",
            f"{row['peak_rss_mib']['dense']['peak_mib']:.0f}",
            f"{row['peak_rss_mib']['gated']['peak_mib']:.0f}",
            f"{row['peak_rss_mib']['dense']['after_loading_mib']:.0f}",
        ]
        for row in overhead
        if row.get("peak_rss_mib")
    ]
    if not rows:
        return []
    return [
        "",
        "Peak resident memory (RSS) of one training process (fresh process: load, 2 steps):",
        "",
        *markdown_table(
            ["model", "batch", "audio (s)", "dense (MiB)", "gated (MiB)", "after loading (MiB)"], rows
        ),
    ]


def bench_markdown(result: Mapping[str, Any]) -> str:
    """Markdown tables of an `hjprune bench` result: models, latency per configuration, pairs, training."""
    lines = [_bench_setting(result), "", *_models_table(result["models"]), ""]
    lines += _latency_table(result["models"])
    for pair in result["pairs"]:
        lines += ["", *_pair_table(pair)]
    overhead = result.get("training_overhead") or []
    if overhead:
        lines += ["", *_training_step_table(overhead), *_training_memory_table(overhead)]
    return "\n".join(lines) + "\n"


__all__ = [
    "NOT_AVAILABLE",
    "SI_COMPACT",
    "SI_UP_TO_GIGA",
    "SPEEDUP_COLUMNS",
    "TRAINING_STEP_COLUMNS",
    "training_step_cells",
    "bench_markdown",
    "change",
    "markdown_table",
    "mean_percent",
    "new_figure",
    "percent",
    "results_page",
    "save_png",
    "si",
    "structure_figure",
]
