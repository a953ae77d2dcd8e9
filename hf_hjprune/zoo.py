"""The model zoo: an index of pruned models, their cards and a leaderboard: `hjprune zoo`.

`model_cards/zoo.json` is the index. Each entry names a model (`name`, `repo_id`), what it is
(`family`, `task`, `data`, `start_model`, `base_model`, `variant`, `target`), how it is trained
(`recipe`, `overrides`, its dense baseline's `baseline_recipe` and `baseline_overrides`, `command`)
and its `status`: `"trained"` entries also carry their key numbers (`metrics`, `params`, `macs`
before/after with the CNN share), the run's `summary`, its baseline's (`baseline_summary`), the pruned
model's `config` and `bench` result, and the hashes of its model files (`model_files`, what the Hub
must hold), so that everything below is regenerated offline from the index alone::

    hjprune zoo build            # model_cards/LEADERBOARD.md and model_cards/<name>/{README.md,structure.png}
    hjprune zoo build --check    # exit 1 if the committed files differ from what the index gives
    hjprune zoo add outputs/zoo/NAME --name NAME --baseline outputs/zoo/NAME-dense
    hjprune zoo train            # train the synthetic entries and their baselines, then add them
    hjprune zoo push --org ORG   # publish the models, leaderboard, Space and collection (see publish.py)
    hjprune zoo check --org ORG  # report what on the Hub differs from the index

The planned entries (`planned_entries`) are always in the index: one small model per family on the
synthetic corpus (cheap enough for any machine), and the paper-scale models (wav2vec2 / HuBERT / WavLM
base on LibriSpeech and SLURP at 10-50% fewer MACs), listed "not trained yet" without numbers until a
run is added. The small ones follow the paper's protocol: the family's shipped pretrained start model
(`pretrained:tiny-FAMILY-asr`) is pruned while it is fine-tuned, and a dense baseline is fine-tuned from
it for as many steps beside it (`<name>-dense`); their cards and the leaderboard compare the two. The
build is deterministic: the same index gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from .atomic import atomic_write_json, atomic_write_text
from .cards import (
    METRIC_NAMES,
    METRICS,
    STRUCTURE_PLOT,
    attach_baseline,
    card_from_summary,
    family_name,
    hub_model_id,
    plot_structure,
    read_baseline,
    read_run,
    read_start_summary,
)
from .errors import HJPruneInputError
from .hub import folder_digests
from .pruner import VARIANTS
from .reporting import NOT_AVAILABLE, SI_COMPACT, change, markdown_table, percent, si
from .start_models import PRETRAINED_PREFIX, is_tiny, resolve_model
from .structure import FAMILIES

DEFAULT_ZOO_DIR = Path("model_cards")
DEFAULT_OUTPUT_ROOT = Path("outputs/zoo")
INDEX_FILE = "zoo.json"
LEADERBOARD_FILE = "LEADERBOARD.md"
LEADERBOARD_JSON = "leaderboard.json"
LEADERBOARD_KEYS = (
    "name", "repo_id", "status", "family", "task", "data", "start_model", "base_model", "variant", "target",
    "metrics", "params", "macs", "command",
)  # fmt: skip
"""The keys of an entry in `leaderboard.json`: what the tables show, not the run's full record."""
HUB_URL = "https://huggingface.co"
"""Links in published cards and tables (not the API endpoint: the same files for every endpoint)."""
CARD_FILES = ("README.md", STRUCTURE_PLOT)
ORGANIZATION = "hf-hjprune"
"""Namespace of the zoo's repository ids."""

TRAINED, NOT_TRAINED = "trained", "not trained yet"
PAPER_MODELS = {
    "wav2vec2": "facebook/wav2vec2-base",
    "hubert": "facebook/hubert-base-ls960",
    "wavlm": "microsoft/wavlm-base",
}
PAPER_DATA = {"librispeech": "asr", "slurp": "slu"}
PAPER_TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5)
DATA_NAMES = {"synthetic": "synthetic (eSpeak NG)", "librispeech": "LibriSpeech", "slurp": "SLURP"}
TASK_TITLES = {"asr": "Speech recognition (CTC)", "slu": "Intent classification (SLU)"}
RESULT_KEYS = (
    "metrics", "params", "macs", "summary", "config", "bench", "start_summary", "baseline_summary", "model_files",
)  # fmt: skip
BENCH_SETTINGS: dict[str, Any] = {}
"""`benchmark_models` arguments of the zoo's (start model, pruned model) pairs: `hjprune bench`'s defaults."""


def _entry(
    name: str,
    family: str,
    task: str,
    data: str,
    start_model: str,
    target: float,
    recipe: str,
    overrides: list[str],
    baseline: tuple[str, list[str]] | None = None,
) -> dict[str, Any]:
    baseline_recipe, baseline_overrides = baseline if baseline is not None else (None, None)
    return {
        "name": name,
        "repo_id": f"{ORGANIZATION}/{name}",
        "status": NOT_TRAINED,
        "family": family,
        "task": task,
        "data": data,
        "start_model": start_model,
        "base_model": hub_model_id(start_model),
        "variant": "macs",
        "target": target,
        "recipe": recipe,
        "overrides": overrides,
        "baseline_recipe": baseline_recipe,
        "baseline_overrides": baseline_overrides,
        "command": train_command(recipe, overrides, name, baseline),
        **dict.fromkeys(RESULT_KEYS),
    }


def baseline_dir(output_root: str | os.PathLike, name: str) -> Path:
    """Where `hjprune zoo train` trains the dense baseline of the entry `name`, when it has one."""
    return Path(output_root) / f"{name}-dense"


def train_command(
    recipe: str, overrides: Sequence[str], name: str, baseline: tuple[str, Sequence[str]] | None = None
) -> str:
    """The shell command that trains a zoo entry into `outputs/zoo/<name>` (its dense baseline first)."""

    def command(recipe: str, overrides: Sequence[str], output_dir: Path) -> str:
        sets = "".join(f" --set {override}" for override in overrides)
        return f"python -m hf_hjprune.train {recipe}{sets} --set output_dir={output_dir}"

    pruning = command(recipe, overrides, DEFAULT_OUTPUT_ROOT / name)
    if baseline is None:
        return pruning
    return f"{command(*baseline, baseline_dir(DEFAULT_OUTPUT_ROOT, name))} && {pruning}"


def planned_entries() -> list[dict[str, Any]]:
    """The zoo's planned models, untrained: the synthetic small ones, then the paper-scale ones."""
    entries = [
        _entry(
            f"tiny-{family}-synthetic-asr-hjmac40",
            family,
            "asr",
            "synthetic",
            start_model,
            0.4,
            "demo_asr_hjmac",
            [f"model={start_model}"],
            baseline=("demo_asr_dense", [f"model={start_model}"]),
        )
        for family, start_model in ((family, f"{PRETRAINED_PREFIX}tiny-{family}-asr") for family in FAMILIES)
    ]
    for data, task in PAPER_DATA.items():
        for family, model in PAPER_MODELS.items():
            for target in PAPER_TARGETS:
                entries.append(
                    _entry(
                        f"{family}-base-{data}-hjmac{round(100 * target)}",
                        family,
                        task,
                        data,
                        model,
                        target,
                        f"{family}_base_{data}_hjmac",
                        [f"target={target}"],
                    )
                )
    return entries


def load_index(zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR) -> dict[str, Any]:
    """The zoo index of `zoo_dir/zoo.json` (the planned entries alone if it does not exist yet).

    Planned entries missing from the file are appended, so the index always lists them.
    """
    path = Path(zoo_dir) / INDEX_FILE
    index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"entries": []}
    entries = index.get("entries")
    if not isinstance(entries, list):
        raise HJPruneInputError(f"{path}: expected a mapping with an 'entries' list")
    for entry in entries:  # an index written before a result key existed
        for key in RESULT_KEYS:
            entry.setdefault(key, None)
    names = [entry["name"] for entry in entries]
    if len(set(names)) != len(names):
        raise HJPruneInputError(
            f"{path}: duplicate entry names {sorted({n for n in names if names.count(n) > 1})}"
        )
    entries += [entry for entry in planned_entries() if entry["name"] not in names]
    for entry in entries:
        if entry["status"] not in (TRAINED, NOT_TRAINED):
            raise HJPruneInputError(f"{path}: entry {entry['name']!r} has unknown status {entry['status']!r}")
    return {"entries": entries}


def save_index(index: Mapping[str, Any], zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR) -> Path:
    """Write `zoo_dir/zoo.json` (stable formatting: the same index gives the same bytes)."""
    path = Path(zoo_dir) / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    return path


def _costs(cost: Mapping[str, float]) -> dict[str, float]:
    return {
        "total": cost["total"],
        "cnn": cost["cnn"],
        "transformer": cost["transformer"],
        "cnn_share": cost["cnn"] / cost["total"],
    }


def entry_from_run(
    run_dir: str | os.PathLike,
    name: str,
    repo_id: str | None = None,
    planned: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A trained zoo entry from a run folder (and its dense baseline's `baseline.json`, if any);
    `planned` is the entry it fills in, if any.

    Raises:
        ValueError: The run is not what the planned entry describes (family, task, data, variant or target).
    """
    summary, config, bench = read_run(run_dir)
    start_summary = read_start_summary(summary)
    baseline_summary = read_baseline(run_dir)
    recipe = summary["recipe"]
    origin = (start_summary or summary)["recipe"]["model"]  # what the first of the runs started from
    facts = {
        "family": family_name(config),
        "task": recipe["task"],
        "data": recipe["data"] if recipe["data"] in DATA_NAMES else Path(recipe["data"]).name,
        "start_model": origin,
        "variant": summary["variant"],
        "target": summary["target"],
    }
    if planned is not None:
        # The start model may differ: a planned entry can be trained from another checkpoint.
        checked = ("family", "task", "data", "variant", "target")
        wrong = {key: (facts[key], planned[key]) for key in checked if facts[key] != planned[key]}
        if wrong:
            details = ", ".join(f"{key} is {run!r}, not {plan!r}" for key, (run, plan) in wrong.items())
            raise HJPruneInputError(f"{run_dir} does not match the zoo entry {name!r}: {details}")
    task = facts["task"]
    metrics = summary["metrics"]
    return {
        "name": name,
        "repo_id": repo_id or (planned["repo_id"] if planned else f"{ORGANIZATION}/{name}"),
        "status": TRAINED,
        **facts,
        "base_model": hub_model_id(origin),
        "recipe": planned["recipe"] if planned else None,
        "overrides": planned["overrides"] if planned else [],
        # The planned baseline, when the run has one.
        "baseline_recipe": planned.get("baseline_recipe") if planned and baseline_summary else None,
        "baseline_overrides": planned.get("baseline_overrides") if planned and baseline_summary else None,
        "command": planned["command"] if planned else None,
        # "dense": the baseline's final metric, the paper's reference (None without a baseline).
        "metrics": {
            m: {
                "before": metrics["before"][m],
                "after": metrics["after"][m],
                "dense": baseline_summary["metrics"]["after"][m] if baseline_summary else None,
            }
            for m in METRICS[task]
        },
        "params": {when: _costs(summary["params"][when]) for when in ("before", "after")},
        "macs": {
            "seconds": summary["macs"].get("seconds", 1.0),
            **{when: _costs(summary["macs"][when]) for when in ("before", "after")},
        },
        "summary": summary,
        "config": config,
        "bench": bench,
        "start_summary": start_summary,
        "baseline_summary": baseline_summary,
        # What `hjprune zoo push` publishes and `hjprune zoo check` compares with the Hub.
        "model_files": {
            path: dataclasses.asdict(digest)
            for path, digest in folder_digests(Path(run_dir) / "model").items()
        },
    }


def compared_run(entry: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """`(kind, summary)` of the dense run an entry is compared with: its dense baseline, else the start
    model it was pruned from (the summary None when `hf_hjprune` did not train it)."""
    if entry.get("baseline_summary"):
        return "dense baseline", entry["baseline_summary"]
    return "start model", entry.get("start_summary")


def add_run(
    run_dir: str | os.PathLike,
    name: str,
    repo_id: str | None = None,
    zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR,
    baseline: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Add or update the trained entry `name` from a run folder, then rebuild the zoo; returns the entry.

    `baseline`: a dense run from the same start model that the entry is compared with; it is recorded
    in the run folder (`cards.attach_baseline`), which keeps the one it had otherwise.
    """
    if baseline is not None:
        attach_baseline(run_dir, baseline)
    index = load_index(zoo_dir)
    entries = index["entries"]
    position = next((i for i, entry in enumerate(entries) if entry["name"] == name), None)
    planned = entries[position] if position is not None else None
    entry = entry_from_run(run_dir, name, repo_id, planned)
    if position is None:
        entries.append(entry)
    else:
        entries[position] = entry
    save_index(index, zoo_dir)
    build_zoo(zoo_dir)
    return entry


# -- rendering -----------------------------------------------------------------------------------


def _reference(numbers: Mapping[str, float | None]) -> float:
    """What a pruned model's metric is compared with: its dense baseline's, else its start model's."""
    dense = numbers.get("dense")
    return numbers["before"] if dense is None else dense


def _before_after(before: float, after: float, metric: bool = False) -> str:
    """`before → **after**`: a metric in percent, else a count with its change (narrow columns: compact SI)."""
    if metric:
        return f"{percent(before, decimals=1, symbol=False)} → **{percent(after, decimals=1, symbol=False)}**"
    return f"{si(before, **SI_COMPACT)} → **{si(after, **SI_COMPACT)}** ({change(before, after, decimals=0)})"


def _target(entry: Mapping[str, Any]) -> str:
    target = entry["target"]
    if isinstance(target, Mapping):
        return f"CNN {target['cnn']:.0%}, Transformer {target['transformer']:.0%}"
    return NOT_AVAILABLE if target is None else f"{target:.0%}"


def _model_cell(entry: Mapping[str, Any], hub: bool = False) -> str:
    link = f"{HUB_URL}/{entry['repo_id']}" if hub else f"{entry['name']}/README.md"
    return f"[{entry['name']}]({link})<br>`{entry['repo_id']}`"


def _start_cell(entry: Mapping[str, Any]) -> str:
    origin = f"`{entry['base_model']}`" if entry["base_model"] else f"`{entry['start_model']}`"
    if entry.get("start_summary"):
        return f"{origin}, trained dense for {entry['start_summary']['steps']} steps"
    if is_tiny(entry["start_model"]):
        return f"{origin} (random init)"
    if entry["start_model"].startswith(PRETRAINED_PREFIX):
        return f"{origin} (pretrained here)"
    return origin


def _trained_table(task: str, entries: Sequence[Mapping[str, Any]], hub: bool = False) -> list[str]:
    first = METRICS[task][0]
    descending = first == "accuracy"
    entries = sorted(
        entries,
        key=lambda e: (
            -e["metrics"][first]["after"] if descending else e["metrics"][first]["after"],
            e["name"],
        ),
    )
    metric_headers = [f"{METRIC_NAMES[m]} % dense → pruned" for m in METRICS[task]]
    header = ["Model", "Family", "Start model", "Data", "Variant", "Target", *metric_headers]
    header += ["Params", "MACs", "CNN share of MACs"]
    rows = []
    for e in entries:
        macs = e["macs"]
        rows.append(
            [
                _model_cell(e, hub),
                FAMILIES[e["family"]].display_name,
                _start_cell(e),
                DATA_NAMES.get(e["data"], e["data"]),
                VARIANTS[e["variant"]].tag,
                _target(e),
                *(
                    _before_after(_reference(e["metrics"][m]), e["metrics"][m]["after"], metric=True)
                    for m in METRICS[task]
                ),
                _before_after(e["params"]["before"]["total"], e["params"]["after"]["total"]),
                f"{_before_after(macs['before']['total'], macs['after']['total'])} per {macs['seconds']:g} s",
                f"{macs['before']['cnn_share']:.0%} → {macs['after']['cnn_share']:.0%}",
            ]
        )
    return markdown_table(header, rows)


def leaderboard_markdown(index: Mapping[str, Any], hub: bool = False) -> str:
    """`LEADERBOARD.md`: trained models per task, best first, then the models not trained yet.

    With `hub`, models link to their Hub repositories instead of their cards in the zoo folder: the
    table published by `hjprune zoo push`, next to `leaderboard.json`.
    """
    entries = index["entries"]
    trained = [e for e in entries if e["status"] == TRAINED]
    source = (
        f"Published by `hjprune zoo push` from the zoo's index; the same table as JSON: [`{LEADERBOARD_JSON}`]({LEADERBOARD_JSON})."
        if hub
        else "Generated by `hjprune zoo build` from [`zoo.json`](zoo.json): do not edit by hand."
    )
    lines = [
        "# hf_hjprune model zoo",
        "",
        "Speech models structurally pruned with HJ-Pruning ([arXiv 2302.14132](https://arxiv.org/abs/2302.14132)). "
        + source,
        "",
        "Metrics are on each data set's test split, dense → pruned: as in the paper, the dense model is a "
        "baseline fine-tuned from the same start model for as many steps without pruning (for a model "
        "added without one, the start model before training). Params and MACs (dense → pruned) include "
        "the task head; MACs are those of one forward pass over the given length of 16 kHz audio, batch 1. "
        "Models trained on the synthetic corpus only exercise the method and the pipeline at a size a CPU "
        "trains in minutes: they are not useful for real speech.",
    ]
    for task, title in TASK_TITLES.items():
        rows = [e for e in trained if e["task"] == task]
        lines += ["", f"## {title}", ""]
        lines += _trained_table(task, rows, hub) if rows else ["No trained model yet."]
    planned = [e for e in entries if e["status"] == NOT_TRAINED]
    if planned:
        header = ["Model", "Family", "Start model", "Data", "Task", "Variant", "Target", "Command"]
        lines += [
            "",
            "## Not trained yet",
            "",
            "Planned; no numbers until a run is added with `hjprune zoo add`.",
            "",
        ]
        rows = [
            [
                f"{e['name']}<br>`{e['repo_id']}`",
                FAMILIES[e["family"]].display_name,
                _start_cell(e),
                DATA_NAMES.get(e["data"], e["data"]),
                e["task"].upper(),
                VARIANTS[e["variant"]].tag,
                _target(e),
                f"`{e['command']}`" if e["command"] else NOT_AVAILABLE,
            ]
            for e in planned
        ]
        lines += markdown_table(header, rows)
    return "\n".join(lines) + "\n"


def _speedup(bench: Mapping[str, Any] | None) -> str:
    """The measured speed-up at batch 1 on the longest audio of a bench result, "–" without one."""
    results = [r for pair in (bench or {}).get("pairs", []) for r in pair["results"] if r["batch_size"] == 1]
    if not results:
        return NOT_AVAILABLE
    result = max(results, key=lambda r: r["seconds"])
    return f"{result['speedup']:.2f}× ({result['device']}, {result['seconds']:g} s of audio)"


def org_card_markdown(
    entries: Sequence[Mapping[str, Any]], leaderboard_url: str, space_url: str, collection_title: str
) -> str:
    """The organisation card (`ORG/README` Space): one headline row per published model, and links.

    Args:
        entries: The trained entries published under the organisation, their `repo_id` there.
        leaderboard_url: The full leaderboard (`hjprune zoo push` publishes it as a dataset).
        space_url: The demo Space.
        collection_title: The title of the organisation's collection of the zoo.
    """
    header = ["Model", "Task", "Params", "MACs", "Measured speed-up (batch 1)", "Metric % (dense → pruned)"]
    lines = [
        "---",
        "title: hf_hjprune model zoo",
        "emoji: ✂️",
        "colorFrom: yellow",
        "colorTo: gray",
        "sdk: static",
        "pinned: false",
        "---",
        "",
        "# hf_hjprune model zoo",
        "",
        "Speech models (wav2vec 2.0, HuBERT, WavLM) structurally pruned with HJ-Pruning "
        "([arXiv 2302.14132](https://arxiv.org/abs/2302.14132)): conv channels of the CNN feature extractor, "
        "attention heads and FFN units of the Transformer removed jointly under a budget on MACs. "
        "Published by `hjprune zoo push` (hf_hjprune).",
        "",
    ]
    rows = []
    for e in entries:
        metric = METRICS[e["task"]][0]
        numbers = e["metrics"][metric]
        macs = e["macs"]
        rows.append(
            [
                _model_cell(e, hub=True),
                e["task"].upper(),
                _before_after(e["params"]["before"]["total"], e["params"]["after"]["total"]),
                f"{_before_after(macs['before']['total'], macs['after']['total'])} per {macs['seconds']:g} s",
                _speedup(e["bench"]),
                f"{METRIC_NAMES[metric]} {_before_after(_reference(numbers), numbers['after'], metric=True)}",
            ]
        )
    lines += markdown_table(header, rows or [["No model published yet.", *[""] * (len(header) - 1)]])
    lines += [
        "",
        f"- [Leaderboard]({leaderboard_url}): every model's numbers (also as `{LEADERBOARD_JSON}`), "
        "and the models planned but not trained yet.",
        f"- [Demo Space]({space_url}): each pruned model next to its dense model, on your own audio.",
        f"- The collection *{collection_title}* holds the models, their dense baselines or start models, the "
        "leaderboard and the Space.",
    ]
    return "\n".join(lines) + "\n"


def collection_note(entry: Mapping[str, Any]) -> str:
    """One line on a trained entry for its item in a Hub collection: what it is and its key numbers."""
    metric = METRICS[entry["task"]][0]
    numbers, macs = entry["metrics"][metric], entry["macs"]
    fewer = 1 - macs["after"]["total"] / macs["before"]["total"]
    return (
        f"{FAMILIES[entry['family']].display_name}, {VARIANTS[entry['variant']].tag} {_target(entry)}: "
        f"{METRIC_NAMES[metric]} {percent(_reference(numbers), decimals=1)} → {percent(numbers['after'], decimals=1)}, "
        f"{fewer:.0%} fewer MACs"
    )


def leaderboard_records(index: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard as data (`leaderboard.json`): every entry's `LEADERBOARD_KEYS`, trained ones first."""
    entries = sorted(index["entries"], key=lambda e: e["status"] != TRAINED)
    return [{key: entry.get(key) for key in LEADERBOARD_KEYS} for entry in entries]


def entry_card(entry: Mapping[str, Any], leaderboard: str | None = None) -> ModelCard:
    """The model card of a trained entry, for its `repo_id`; `leaderboard`: a URL the card links to."""
    return card_from_summary(
        entry["summary"],
        entry["config"],
        name=entry["name"],
        model_id=entry["repo_id"],
        bench=entry["bench"],
        start=entry.get("start_summary"),
        baseline=entry.get("baseline_summary"),
        leaderboard=leaderboard,
    )


def write_zoo(index: Mapping[str, Any], folder: str | os.PathLike) -> list[str]:
    """Write `zoo.json`, `LEADERBOARD.md` and every trained entry's card and plot; returns their paths."""
    folder = Path(folder)
    written = [save_index(index, folder), folder / LEADERBOARD_FILE]
    atomic_write_text(written[1], leaderboard_markdown(index))
    for entry in index["entries"]:
        if entry["status"] != TRAINED:
            continue
        card_dir = folder / entry["name"]
        card_dir.mkdir(parents=True, exist_ok=True)
        entry_card(entry).save(card_dir / "README.md")
        written += [card_dir / "README.md", plot_structure(entry["config"], card_dir / STRUCTURE_PLOT)]
    return sorted(path.relative_to(folder).as_posix() for path in written)


def _generated_files(zoo_dir: Path) -> list[str]:
    """Files in `zoo_dir` that a build writes or may have written (stale cards included)."""
    found = [name for name in (INDEX_FILE, LEADERBOARD_FILE) if (zoo_dir / name).is_file()]
    for card_dir in sorted(p for p in zoo_dir.iterdir() if p.is_dir()) if zoo_dir.is_dir() else []:
        found += [f"{card_dir.name}/{name}" for name in CARD_FILES if (card_dir / name).is_file()]
    return found


def build_zoo(zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR) -> list[str]:
    """Regenerate the zoo in `zoo_dir` from its `zoo.json`; removes the cards of entries no longer trained."""
    zoo_dir = Path(zoo_dir)
    written = write_zoo(load_index(zoo_dir), zoo_dir)
    for stale in sorted(set(_generated_files(zoo_dir)) - set(written)):
        (zoo_dir / stale).unlink()
        if not any((zoo_dir / stale).parent.iterdir()):
            (zoo_dir / stale).parent.rmdir()
    return written


def check_zoo(zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR) -> list[str]:
    """Differences between `zoo_dir` and a fresh build of its index: `"changed: PATH"`, `"missing: ..."`, `"stale: ..."`."""
    zoo_dir = Path(zoo_dir)
    with tempfile.TemporaryDirectory(prefix="hjprune-zoo-") as fresh:
        expected = write_zoo(load_index(zoo_dir), fresh)
        problems = [
            f"missing: {path}" if not (zoo_dir / path).is_file() else f"changed: {path}"
            for path in expected
            if not (zoo_dir / path).is_file()
            or not filecmp.cmp(Path(fresh, path), zoo_dir / path, shallow=False)
        ]
    problems += [f"stale: {path}" for path in _generated_files(zoo_dir) if path not in expected]
    return problems


# -- training ------------------------------------------------------------------------------------


def train_zoo(
    names: Iterable[str] | None = None,
    zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR,
    output_root: str | os.PathLike = DEFAULT_OUTPUT_ROOT,
    bench_settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train zoo entries and their dense baselines with their recipes, benchmark the pair and add each
    run to the zoo; returns the new entries. Finished runs of the same recipe are reused.

    Args:
        names: The entries to train; default: every entry on the synthetic corpus.
        zoo_dir: The zoo folder.
        output_root: Runs go to `output_root/<name>` (and their dense baselines to `output_root/<name>-dense`).
        bench_settings: `benchmark_models` arguments replacing those of `BENCH_SETTINGS`.

    Raises:
        HJPruneInputError: An unknown name, an entry whose recipe is not shipped or whose start model
            is missing, or a run folder holding a finished run of another recipe. Checked before any training.
    """
    from .recipes import available_recipes, load_recipe
    from .train import finished_summary, train_or_continue

    entries = {entry["name"]: entry for entry in load_index(zoo_dir)["entries"]}
    names = list(names) if names is not None else [n for n, e in entries.items() if e["data"] == "synthetic"]
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise HJPruneInputError(f"unknown zoo entries {unknown}; known: {', '.join(entries)}")
    shipped = available_recipes()
    missing = [name for name in names if entries[name]["recipe"] not in shipped]
    if missing:
        raise HJPruneInputError(
            f"no shipped recipe for {missing} (recipes: {', '.join(shipped)}); train them with "
            "python -m hf_hjprune.train and add the runs with `hjprune zoo add`"
        )
    plans = {}
    for name in names:  # every recipe, start model and reusable run is checked before any training
        entry = entries[name]
        recipe = load_recipe(entry["recipe"], [*entry["overrides"], f"output_dir={Path(output_root) / name}"])
        baseline = None
        if entry.get("baseline_recipe"):
            where = baseline_dir(output_root, name)
            baseline = load_recipe(
                entry["baseline_recipe"], [*entry["baseline_overrides"], f"output_dir={where}"]
            )
        for planned in filter(None, (baseline, recipe)):
            resolve_model(planned.model)
            finished_summary(planned)
        plans[name] = (recipe, baseline)
    added = []
    for name, (recipe, baseline) in plans.items():
        started = time.perf_counter()
        for planned in filter(None, (baseline, recipe)):
            if finished_summary(planned) is None:
                train_or_continue(planned)  # a run a killed `zoo train` stopped continues
        run_dir = Path(recipe.output_dir)
        if baseline is not None:
            attach_baseline(run_dir, baseline.output_dir)
        bench_run(run_dir, **(bench_settings or {}))
        print(f"{name}: trained in {time.perf_counter() - started:.0f} s -> {run_dir}", file=sys.stderr)
        added.append(add_run(run_dir, name, entries[name]["repo_id"], zoo_dir))
    return added


def bench_run(run_dir: str | os.PathLike, **settings: Any) -> Path:
    """Benchmark a run's (dense, pruned) pair into `run_dir/bench.json` (`BENCH_SETTINGS`): the dense
    model is the run's baseline (`baseline.json`) when it has one, else its start model with the same head."""
    from .bench import benchmark_models, dense_model_of_run, load_model

    pruned = load_model(str(Path(run_dir) / "model"))
    baseline = read_baseline(run_dir)
    if baseline is not None:
        models = {"dense baseline": load_model(str(Path(baseline["recipe"]["output_dir"]) / "model"))}
    else:
        models = {"start model": dense_model_of_run(run_dir, pruned)}
    models["pruned model"] = pruned
    result = benchmark_models(models, pairs=[tuple(models)], **{**BENCH_SETTINGS, **settings})
    path = Path(run_dir) / "bench.json"
    atomic_write_json(path, result)
    return path


# -- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune zoo {build,add,train,push,check}`."""
    parser.add_argument(
        "--zoo-dir", default=str(DEFAULT_ZOO_DIR), help="the zoo folder (default: model_cards)"
    )
    actions = parser.add_subparsers(dest="zoo_action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="regenerate the cards and the leaderboard from zoo.json")
    build.add_argument("--check", action="store_true", help="only compare: exit 1 if a file is out of date")
    add = actions.add_parser("add", help="add or update a trained entry from a run folder")
    add.add_argument("run_dir", metavar="RUN_DIR")
    add.add_argument("--name", required=True, help="the entry's name (a planned one, or a new one)")
    add.add_argument(
        "--repo-id", metavar="ORG/NAME", help=f"default: the planned one, or {ORGANIZATION}/NAME"
    )
    add.add_argument(
        "--baseline", metavar="DENSE_RUN", help="the dense run from the same start model to compare with"
    )
    train = actions.add_parser(
        "train", help="train the synthetic entries (or --names) and their dense baselines, and add them"
    )
    train.add_argument(
        "--names", nargs="+", metavar="NAME", help="entries to train (default: the synthetic ones)"
    )
    train.add_argument("--output-root", default=str(DEFAULT_OUTPUT_ROOT), help="runs go to OUTPUT_ROOT/NAME")
    from . import publish  # it imports this module

    publish.add_arguments(actions)


def run(args: argparse.Namespace) -> int:
    """Run one `hjprune zoo` action; 1 when `build --check` finds differences, 2 for invalid input."""
    if args.zoo_action in ("push", "check"):
        from . import publish

        return publish.run(args)
    try:
        if args.zoo_action == "build":
            if args.check:
                problems = check_zoo(args.zoo_dir)
                for problem in problems:
                    print(problem, file=sys.stderr)
                if problems:
                    print("the zoo is out of date: run `hjprune zoo build`", file=sys.stderr)
                return 1 if problems else 0
            for path in build_zoo(args.zoo_dir):
                print(Path(args.zoo_dir) / path)
        elif args.zoo_action == "add":
            entry = add_run(args.run_dir, args.name, args.repo_id, args.zoo_dir, args.baseline)
            print(f"added {entry['name']} ({entry['repo_id']}) to {Path(args.zoo_dir) / INDEX_FILE}")
        else:
            for entry in train_zoo(args.names, args.zoo_dir, args.output_root):
                print(f"added {entry['name']} ({entry['repo_id']}) to {Path(args.zoo_dir) / INDEX_FILE}")
    except HJPruneInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "add_run",
    "build_zoo",
    "check_zoo",
    "entry_card",
    "entry_from_run",
    "leaderboard_markdown",
    "leaderboard_records",
    "load_index",
    "org_card_markdown",
    "planned_entries",
    "save_index",
    "train_zoo",
    "write_zoo",
]
