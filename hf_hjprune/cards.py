"""Model cards of pruned runs, generated from a run folder (never typed by hand).

A card is built from what a training run wrote (`summary.json`, `model/config.json`) and, when
present, the `hjprune bench` result (`bench.json`): front matter with `model-index` results for the
Hub, then what was pruned (per-layer structure table and plot), the costs and metrics before and
after, how to load the model, the recipe that produced it, and its limitations::

    card = make_model_card("outputs/tiny_asr", repo_id="org/tiny-asr")
    plot_structure(config, "staging/structure.png")  # the image the card shows

The same input always gives the same card (no dates or paths beyond those the run and bench recorded),
so the zoo can regenerate its cards offline from the summaries it keeps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import PretrainedConfig

from .atomic import atomic_write_json
from .errors import HJPruneInputError
from .pruner import DENSE, VARIANTS
from .reporting import bench_markdown, change, markdown_table, percent, save_png, si, structure_figure
from .start_models import PRETRAINED_PREFIX, TINY_PREFIX
from .structure import FAMILIES, original_unit_counts, unit_counts

STRUCTURE_PLOT = "structure.png"
"""File name of the structure plot, next to the card."""

RECIPE_FILE = "recipe.yaml"
"""File name of the run's full recipe, next to the card."""

START_RECIPE_FILE = "start_recipe.yaml"
"""File name of the recipe of the start model, when `hf_hjprune` trained it."""

BASELINE_FILE = "baseline.json"
"""In a pruned run's folder: the summary of its dense baseline (see `attach_baseline`)."""

BASELINE_RECIPE_FILE = "baseline_recipe.yaml"
"""File name of the dense baseline's recipe, next to the card."""

PIPELINE_TAGS = {"asr": "automatic-speech-recognition", "slu": "audio-classification"}
TASK_NAMES = {
    "asr": "speech recognition (CTC)",
    "slu": "intent classification (spoken language understanding)",
}
METRICS = {"asr": ("wer", "cer"), "slu": ("accuracy",)}
METRIC_NAMES = {"wer": "WER", "cer": "CER", "accuracy": "Accuracy"}
SYNTHETIC_DATASET = "synthetic-espeak-commands"
# Those of hf_hjprune.data.real, not imported from there: it pulls in `datasets`.
HUB_DATASETS = {
    "librispeech": ("openslr/librispeech_asr", "LibriSpeech", "test.clean"),
    "slurp": ("marcel-gohsen/slurp", "SLURP", "test"),
}

CITATION = """\
@inproceedings{peng2023structured,
  title     = {Structured Pruning of Self-Supervised Pre-trained Models for Speech Recognition and Understanding},
  author    = {Peng, Yifan and Kim, Kwangyoun and Wu, Felix and Sridhar, Prashant and Watanabe, Shinji},
  booktitle = {ICASSP 2023},
  year      = {2023},
  eprint    = {2302.14132},
  archivePrefix = {arXiv}
}"""


def _config_dict(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)


def family_name(config: PretrainedConfig | Mapping[str, Any]) -> str:
    """`"wav2vec2"`, `"hubert"` or `"wavlm"` for a stock or pruned config (or its `config.json` dict)."""
    model_type = _config_dict(config).get("model_type", "")
    family = model_type.removeprefix("hjpruned_")
    if family not in FAMILIES:
        raise HJPruneInputError(
            f"unsupported model_type {model_type!r}: expected one of {', '.join(FAMILIES)}"
        )
    return family


def layer_structure(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Per group (`conv`, `heads`, `ffn`), the `(kept, original)` unit counts of every layer."""
    kept, original = unit_counts(config), original_unit_counts(config)
    return {group: list(zip(kept[group], original[group])) for group in kept}


def _fraction(kept: int, original: int) -> str:
    return f"{kept} / {original} ({kept / original:.0%})" if original else "0 / 0"


def structure_table(config: PretrainedConfig | Mapping[str, Any]) -> str:
    """Markdown tables of the kept units per layer against the original model.

    One table for the CNN feature extractor (output channels per conv layer, with its kernel and
    stride) and one for the Transformer (attention heads and FFN units per layer), each with a total.
    """
    values = _config_dict(config)
    structure = layer_structure(values)
    conv_rows = [
        [str(i), str(kernel), str(stride), _fraction(kept, original)]
        for i, ((kept, original), kernel, stride) in enumerate(
            zip(structure["conv"], values["conv_kernel"], values["conv_stride"])
        )
    ]
    conv_rows.append(["**all**", "", "", f"**{_fraction(*_total(structure['conv']))}**"])
    layer_rows = [
        [str(i), _fraction(h, h0), _fraction(f, f0)]
        for i, ((h, h0), (f, f0)) in enumerate(zip(structure["heads"], structure["ffn"]))
    ]
    layer_rows.append(
        ["**all**", *(f"**{_fraction(*_total(structure[group]))}**" for group in ("heads", "ffn"))]
    )
    lines = [
        *markdown_table(["Conv layer", "Kernel", "Stride", "Channels kept / original"], conv_rows, "rrrr"),
        "",
        *markdown_table(
            ["Transformer layer", "Attention heads kept / original", "FFN units kept / original"],
            layer_rows,
            "rrr",
        ),
    ]
    return "\n".join(lines) + "\n"


def _total(layers: list[tuple[int, int]]) -> tuple[int, int]:
    """`(kept, original)` summed over the layers."""
    return sum(kept for kept, _ in layers), sum(original for _, original in layers)


def plot_structure(config: PretrainedConfig | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save a bar chart of kept vs original units per layer (conv channels, heads, FFN units) as PNG.

    The image is byte-for-byte reproducible for a given matplotlib version (no metadata, Agg canvas).
    """
    return save_png(structure_figure(unit_counts(config), original_unit_counts(config)), path)


def hub_model_id(model: str) -> str | None:
    """`model` if it names a Hub repository, None for a `tiny:` spec or a local path."""
    if model.startswith((TINY_PREFIX, ".", "/", "~")) or Path(model).exists():
        return None
    try:
        validate_repo_id(model)
    except HFValidationError:
        return None
    return model


def dataset_info(recipe: Mapping[str, Any]) -> dict[str, str | None]:
    """The test data of a recipe: `hub_id` (or None), `type`, `name`, `split` and `config` (or None)."""
    data, options = recipe["data"], recipe.get("data_options") or {}
    if data == "synthetic":
        name = "Synthetic eSpeak NG spoken commands"
        return {"hub_id": None, "type": SYNTHETIC_DATASET, "name": name, "split": "test", "config": None}
    if data in HUB_DATASETS:
        hub_id, name, default_split = HUB_DATASETS[data]
        split = options.get("test_split", default_split)
        split = split if isinstance(split, str) else split[0]
        config = options.get("config", "all") if data == "librispeech" else options.get("config")
        return {"hub_id": hub_id, "type": hub_id, "name": name, "split": split, "config": config}
    name = f"local data set {Path(data).name}"
    return {"hub_id": None, "type": "local", "name": name, "split": "test", "config": None}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _reduction(before: float, after: float) -> float:
    return 1 - after / before if before else 0.0


def _target_text(variant: str, target: Any) -> str:
    if variant == DENSE or target is None:
        return "none (dense fine-tuning)"
    if isinstance(target, Mapping):
        return f"{target['cnn']:.0%} fewer CNN MACs and {target['transformer']:.0%} fewer Transformer MACs"
    what = "parameters" if variant == "params" else "MACs"
    return f"{target:.0%} fewer {what}"


def _start_model_text(model: str, params_before: float, start: Mapping[str, Any] | None = None) -> str:
    if start is not None:
        recipe = start["recipe"]
        task = recipe["task"]
        scores = ", ".join(
            f"{METRIC_NAMES[metric]} {percent(start['metrics']['after'][metric])}" for metric in METRICS[task]
        )
        origin = (
            "from random initialisation (no pre-training)"
            if recipe["model"].startswith(TINY_PREFIX)
            else f"from {_start_model_text(recipe['model'], start['params']['before']['total'])}"
        )
        return (
            f"a dense model ({si(params_before)} parameters) fine-tuned by `hf_hjprune` for "
            f"{start['steps']} steps {origin} on {dataset_info(recipe)['name']} "
            f"({scores} on its `{dataset_info(recipe)['split']}` split); it stands in for a pre-trained "
            "checkpoint and is the reference of the tables below"
        )
    if model.startswith(TINY_PREFIX):
        family = FAMILIES[model[len(TINY_PREFIX) :]].display_name
        return (
            f"a tiny {family}-shaped model built in code with random weights (`{model}`, "
            f"{si(params_before)} parameters, no pre-training); there is no base model on the Hub"
        )
    if model.startswith(PRETRAINED_PREFIX):
        return (
            f"`{model}` ({si(params_before)} parameters), a start model that ships with `hf_hjprune`: pretrained "
            "here on broad synthetic speech, not on this task (its card is `hf_hjprune/pretrained/"
            f"{model[len(PRETRAINED_PREFIX) :]}/README.md`)"
        )
    hub_id = hub_model_id(model)
    if hub_id is not None:
        return f"[`{hub_id}`](https://huggingface.co/{hub_id})"
    return f"a local checkpoint (`{model}`)"


def _eval_results(task: str, metrics: Mapping[str, float], dataset: Mapping[str, Any]) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=PIPELINE_TAGS[task],
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_config=dataset["config"],
            dataset_split=dataset["split"],
            metric_type=metric,
            metric_name=f"{METRIC_NAMES[metric]} (%)",
            metric_value=round(100 * metrics[metric], 2),
        )
        for metric in METRICS[task]
    ]


def _cost_rows(label: str, cost: Mapping[str, Mapping[str, float]]) -> list[list[str]]:
    before, after = cost["before"], cost["after"]
    rows = [[label, si(before["total"]), si(after["total"]), change(before["total"], after["total"])]]
    for part, name in (("cnn", "CNN"), ("transformer", "Transformer")):
        share_before, share_after = before[part] / before["total"], after[part] / after["total"]
        rows.append(
            [
                f"&nbsp;&nbsp;{name}",
                f"{si(before[part])} ({share_before:.0%})",
                f"{si(after[part])} ({share_after:.0%})",
                change(before[part], after[part]),
            ]
        )
    return rows


def _metric_rows(metrics: Mapping[str, Mapping[str, float]], task: str, split: str) -> list[list[str]]:
    rows = []
    for metric in METRICS[task]:
        before, after = metrics["before"][metric], metrics["after"][metric]
        rows.append(
            [
                f"{METRIC_NAMES[metric]} on `{split}`",
                percent(before),
                percent(after),
                f"{100 * (after - before):+.2f} pts",
            ]
        )
    return rows


def _latency_rows(bench: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for pair in bench.get("pairs", []):
        runtime = pair.get("runtime", "PyTorch")
        # The start model always runs in PyTorch fp32; an exported model's rows name its runtime.
        label = "Latency" if runtime == "PyTorch" else f"Latency, this model in {runtime}"
        for result in pair["results"]:
            rows.append(
                [
                    f"{label} ({result['device']}, batch {result['batch_size']}, {result['seconds']:g} s audio)",
                    f"{result['dense_median_ms']:.1f} ms",
                    f"{result['pruned_median_ms']:.1f} ms",
                    f"speed-up {result['speedup']:.2f}× (MACs ratio {result['macs_ratio']:.2f}×)",
                ]
            )
    return rows


def _against_baseline(summary: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The run's final costs and metrics, with the dense baseline's final ones as "before"."""
    compared = {
        key: {"before": baseline[key]["after"], "after": summary[key]["after"]}
        for key in ("params", "macs", "metrics")
    }
    compared["macs"]["seconds"] = summary["macs"].get("seconds", 1.0)
    return compared


def _results_section(
    summary: Mapping[str, Any],
    task: str,
    dataset: Mapping[str, Any],
    bench: Any,
    trained_start: bool,
    baseline: Mapping[str, Any] | None = None,
) -> str:
    seconds = summary["macs"].get("seconds", 1.0)
    compared = summary if baseline is None else _against_baseline(summary, baseline)
    rows = [
        *_cost_rows("Parameters", compared["params"]),
        *_cost_rows(f"MACs per {seconds:g} s of audio", compared["macs"]),
        *_metric_rows(compared["metrics"], task, dataset["split"]),
        *(_latency_rows(bench) if bench else []),
    ]
    reference = "Start model (before training)" if baseline is None else "Dense baseline"
    lines = markdown_table(["", reference, "This model", "Change"], rows, "-rrr")
    if baseline is not None:
        about_reference = (
            'The "Dense baseline" column is the paper\'s reference: the same start model fine-tuned on the same '
            f"data for {baseline['steps']} steps without pruning (its recipe: `{BASELINE_RECIPE_FILE}`), so the "
            "change is what pruning cost."
        )
    elif trained_start:
        about_reference = (
            'The "before" metrics are those of the start model, the dense model this one was pruned from.'
        )
    else:
        about_reference = (
            'The "before" metrics are those of the start model evaluated before this run\'s training; without a '
            "trained task head (a `tiny:` model, a pre-trained-only checkpoint) it is at chance level there: the "
            "starting point, not a trained dense baseline."
        )
    lines += [
        "",
        f"Parameters and MACs are counted exactly from the per-layer sizes (`hf_hjprune.count_params` / "
        f"`count_macs`: multiply-accumulates of one forward pass over {seconds:g} s of 16 kHz audio, batch 1, "
        "task head included; the CNN and Transformer shares in parentheses leave out the head). Metrics are "
        f"measured on the `{dataset['split']}` split of {dataset['name']}. " + about_reference,
    ]
    if bench:
        lines += [
            "",
            "Latency was measured with `hjprune bench` (median of timed runs; the dense model is "
            + ("the baseline" if baseline is not None else "the start model rebuilt with the same task head")
            + ")"
            + (
                "; the ONNX Runtime rows time this model exported with `hjprune export` (fp32, and int8: "
                "dynamic quantisation of the MatMul/Gemm weights), against the dense model in PyTorch fp32"
                if any(pair.get("runtime", "PyTorch") != "PyTorch" for pair in bench.get("pairs", []))
                else ""
            )
            + ":",
            "",
            "<details><summary>Full benchmark</summary>",
            "",
            bench_markdown(bench).rstrip("\n"),
            "",
            "</details>",
        ]
    return "\n".join(lines)


def _usage_section(task: str, model_id: str, pruned: bool) -> str:
    if task == "asr":
        auto_class, processor_class = "AutoModelForCTC", "AutoProcessor"
        decode = ["predicted = logits.argmax(-1)", "print(processor.batch_decode(predicted))"]
    else:
        auto_class, processor_class = "AutoModelForAudioClassification", "AutoFeatureExtractor"
        decode = ["print(model.config.id2label[int(logits.argmax(-1))])"]
    code = [
        "import numpy as np",
        "import torch",
        *(["import hf_hjprune  # registers the pruned architectures with transformers"] if pruned else []),
        f"from transformers import {processor_class}, {auto_class}",
        "",
        f'model = {auto_class}.from_pretrained("{model_id}")',
        f'processor = {processor_class}.from_pretrained("{model_id}")',
        "audio = np.zeros(16000, dtype=np.float32)  # 1 s of 16 kHz mono audio",
        'inputs = processor(audio, sampling_rate=16000, return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**inputs).logits",
        *decode,
    ]
    if not pruned:
        return "\n".join(
            [
                "A stock `transformers` model (nothing was pruned): `hf_hjprune` is not needed.",
                "",
                "```python",
            ]
            + code
            + ["```"]
        )
    return "\n".join(
        [
            "With `hf_hjprune` installed (`pip install hf_hjprune`), importing it registers the pruned "
            "architectures with the `transformers` Auto classes:",
            "",
            "```python",
            *code,
            "```",
            "",
            "Without `hf_hjprune`, the modeling code shipped in this repository is used "
            "(read it before running it):",
            "",
            "```python",
            f"from transformers import {auto_class}",
            "",
            f'model = {auto_class}.from_pretrained("{model_id}", trust_remote_code=True)',
            "```",
            "",
            "The pruned model is an ordinary `transformers` model whose config lists the kept units per layer "
            "(`conv_dim`, `attention_heads_per_layer`, `intermediate_size_per_layer`); it can be fine-tuned "
            "further like any other.",
        ]
    )


def recipe_yaml(recipe: Mapping[str, Any]) -> str:
    """A recipe as the YAML file that reproduces the run: `python -m hf_hjprune.train recipe.yaml`."""
    return yaml.safe_dump(dict(recipe), sort_keys=False, default_flow_style=None, width=100)


def _launcher(summary: Mapping[str, Any]) -> str:
    processes = summary.get("num_processes", 1)
    if processes > 1:
        return f"accelerate launch --num_processes {processes} -m hf_hjprune.train"
    return "python -m hf_hjprune.train"


def _trained_for(summary: Mapping[str, Any]) -> str:
    processes = summary.get("num_processes", 1)
    return (
        f"{summary['steps']} steps ({_duration(summary['train_seconds'])} on {processes} "
        f"process{'es' if processes > 1 else ''})"
    )


def _reproduce_section(
    summary: Mapping[str, Any],
    start: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> str:
    lines = []
    if start is not None:
        lines += [
            f"The start model was trained first, for {_trained_for(start)}, with this recipe "
            f"(`{_launcher(start)} {START_RECIPE_FILE}`):",
            "",
            "```yaml",
            recipe_yaml(start["recipe"]).rstrip("\n"),
            "```",
            "",
        ]
    return "\n".join(
        [
            *lines,
            f"{'This model was then' if start else 'Trained with `hf_hjprune` for'} "
            f"{'pruned for ' if start else ''}{_trained_for(summary)} "
            f"with the recipe below, saved as `{RECIPE_FILE}` (also in this repository):",
            "",
            "```bash",
            f"{_launcher(summary)} {RECIPE_FILE}",
            "```",
            "",
            "```yaml",
            recipe_yaml(summary["recipe"]).rstrip("\n"),
            "```",
            *(
                []
                if baseline is None
                else [
                    "",
                    f"The dense baseline was fine-tuned for {_trained_for(baseline)} with "
                    f"`{_launcher(baseline)} {BASELINE_RECIPE_FILE}`:",
                    "",
                    "<details><summary>The baseline's recipe</summary>",
                    "",
                    "```yaml",
                    recipe_yaml(baseline["recipe"]).rstrip("\n"),
                    "```",
                    "",
                    "</details>",
                ]
            ),
        ]
    )


def _limitations_section(recipe: Mapping[str, Any], task: str, start: Mapping[str, Any] | None = None) -> str:
    lines = []
    if recipe["data"] == "synthetic":
        lines += [
            "- **Not useful for real speech.** It was trained and evaluated on a small synthetic corpus of "
            "spoken commands made with the eSpeak NG formant synthesiser: robotic voices, a small command "
            "grammar, no noise, no real speakers. Its numbers say nothing about real recordings.",
        ]
    if recipe["model"].startswith(TINY_PREFIX):
        lines += [
            "- **No pre-training.** The start model is a tiny randomly initialised network, not a "
            "self-supervised checkpoint; HJ-Pruning was designed for (and reported on) pre-trained "
            "wav2vec2 / HuBERT / WavLM base models. This model exists to exercise and document the "
            "pipeline end to end (training, pruning, export, Hub loading), cheaply.",
        ]
    elif start is not None and start["recipe"]["model"].startswith(TINY_PREFIX):
        lines += [
            "- **No pre-training.** The start model is a small network trained from random initialisation "
            "on the same synthetic task, not a self-supervised checkpoint; HJ-Pruning was designed for (and "
            "reported on) pre-trained wav2vec2 / HuBERT / WavLM base models. This model shows the method "
            "and the pipeline end to end (training, pruning, export, Hub loading) at a size a CPU trains "
            "in minutes.",
        ]
    if recipe["data"] == "librispeech":
        lines.append(
            "- Trained on LibriSpeech (read English audiobooks); expect higher error rates on "
            "conversational, noisy or accented speech."
        )
    if recipe["data"] == "slurp":
        lines.append("- Trained on SLURP (English commands to a home assistant); the intent set is SLURP's.")
    lines += [
        f"- Metrics come from one evaluation on the {dataset_info(recipe)['split']} split; "
        + ("decoding is greedy CTC without a language model." if task == "asr" else "accuracy is top-1.")
        + " MACs are counted for a fixed audio length; measured speed depends on the machine.",
        "- The pruned structure is fixed: further fine-tuning cannot bring removed units back.",
    ]
    return "\n".join(lines)


def card_from_summary(
    summary: Mapping[str, Any],
    config: PretrainedConfig | Mapping[str, Any],
    *,
    name: str,
    model_id: str,
    bench: Mapping[str, Any] | None = None,
    start: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
    leaderboard: str | None = None,
) -> ModelCard:
    """The model card of a run, from its summary, the pruned model's config and an optional bench result.

    Args:
        summary: The run's `summary.json` content.
        config: The pruned model's config (or its `config.json` content).
        name: The model's name (`model-index` name and title).
        model_id: What `from_pretrained` is given in the usage example (a Hub id or a path).
        bench: An `hjprune bench` result for the (start model, pruned model) pair.
        start: The summary of the run that trained the start model, when `hf_hjprune` trained it.
        baseline: The summary of the dense baseline (`attach_baseline`): the tables compare with it.
        leaderboard: The URL of the table of the model zoo this model belongs to, if any.
    """
    recipe = summary["recipe"]
    task = recipe["task"]
    dataset = dataset_info(recipe)
    body = [
        *_overview(summary, config, name, dataset, start, baseline, leaderboard),
        "",
        "## Structure",
        "",
        "Kept units per layer against the start model:",
        "",
        f"![Kept vs original units per layer]({STRUCTURE_PLOT})",
        "",
        structure_table(config).rstrip("\n"),
        "",
        "## Results",
        "",
        _results_section(
            summary,
            task,
            dataset,
            bench,
            trained_start=start is not None and start["recipe"]["task"] == task,
            baseline=baseline,
        ),
        "",
        "## How to use",
        "",
        _usage_section(task, model_id, pruned=_config_dict(config)["model_type"].startswith("hjpruned_")),
        "",
        "## How it was made",
        "",
        _reproduce_section(summary, start, baseline),
        "",
        "## Limitations",
        "",
        _limitations_section(recipe, task, start),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    data = _card_data(summary, family_name(config), name, dataset)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _card_data(
    summary: Mapping[str, Any], family: str, name: str, dataset: Mapping[str, Any]
) -> ModelCardData:
    """The front matter of a pruned model's card: what the Hub indexes, with `model-index` results."""
    task = summary["recipe"]["task"]
    return ModelCardData(
        model_name=name,
        base_model=hub_model_id(summary["recipe"]["model"]),
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        language=["en"],
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=PIPELINE_TAGS[task],
        tags=[
            "hf_hjprune",
            "hj-pruning",
            "structured-pruning",
            "speech",
            family,
            VARIANTS[summary["variant"]].tag,
        ],
        metrics=list(METRICS[task]),
        eval_results=_eval_results(task, summary["metrics"]["after"], dataset),
    )


def _reached_text(params: Mapping[str, Any], macs: Mapping[str, Any]) -> str:
    return (
        f"{_reduction(macs['before']['total'], macs['after']['total']):.1%} fewer MACs "
        f"(CNN {_reduction(macs['before']['cnn'], macs['after']['cnn']):.1%}, Transformer "
        f"{_reduction(macs['before']['transformer'], macs['after']['transformer']):.1%}) and "
        f"{_reduction(params['before']['total'], params['after']['total']):.1%} fewer parameters"
    )


def _baseline_text(summary: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    scores = [
        f"{METRIC_NAMES[metric]} {percent(baseline['metrics']['after'][metric])} → "
        f"{percent(summary['metrics']['after'][metric])}"
        for metric in METRICS[summary["recipe"]["task"]]
    ]
    return (
        f"{', '.join(scores)} (the same start model fine-tuned for {baseline['steps']} steps without pruning, "
        "as in the paper)"
    )


def _overview(
    summary: Mapping[str, Any],
    config: PretrainedConfig | Mapping[str, Any],
    name: str,
    dataset: Mapping[str, Any],
    start: Mapping[str, Any] | None,
    baseline: Mapping[str, Any] | None,
    leaderboard: str | None,
) -> list[str]:
    """The title, what the model is, and the key facts of its run as a list."""
    recipe, task, variant = summary["recipe"], summary["recipe"]["task"], summary["variant"]
    kept = structure_totals(config)
    skipped = sum(sum(reasons.values()) for reasons in (summary.get("skipped_files") or {}).values())
    lines = [
        f"# {name}",
        "",
        f"A {FAMILIES[family_name(config)].display_name} model for {TASK_NAMES[task]}, structurally pruned with "
        "HJ-Pruning ([Peng et al., ICASSP 2023](https://arxiv.org/abs/2302.14132)): conv channels of the CNN "
        "feature extractor, attention heads and FFN units of the Transformer were removed jointly while the "
        "model was fine-tuned on the task. Made with `hf_hjprune`; this card was generated from the run's summary.",
        "",
        f"- **Start model:** {_start_model_text(recipe['model'], summary['params']['before']['total'], start)}",
        f"- **Task and data:** {TASK_NAMES[task]} on {dataset['name']}, evaluated on its `{dataset['split']}` split",
        f"- **Pruning variant:** {VARIANTS[variant].description}",
        f"- **Target:** {_target_text(variant, summary.get('target'))}",
        f"- **Reached:** {_reached_text(summary['params'], summary['macs'])}",
        *(
            []
            if baseline is None
            else [f"- **Against the dense baseline:** {_baseline_text(summary, baseline)}"]
        ),
        f"- **Kept units:** {kept['conv'][0]} of {kept['conv'][1]} conv channels, {kept['heads'][0]} of "
        f"{kept['heads'][1]} attention heads, {kept['ffn'][0]} of {kept['ffn'][1]} FFN units",
    ]
    if skipped:
        lines.append(
            f"- **Skipped audio files:** {skipped} (unusable: corrupt, truncated, silent, too short or too "
            "long), counted by reason in `summary.json`"
        )
    if leaderboard:
        lines.append(f"- **Model zoo:** compare it with the other models in the [leaderboard]({leaderboard})")
    return lines


def read_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """`(summary, config, bench)` of a run folder: `summary.json`, `model/config.json`, `bench.json` or None."""
    run_dir = Path(run_dir)
    paths = {"summary": run_dir / "summary.json", "config": run_dir / "model" / "config.json"}
    for path in paths.values():
        if not path.is_file():
            raise HJPruneInputError(f"{run_dir} is not a finished run folder: {path} is missing")
    summary, config = (json.loads(path.read_text(encoding="utf-8")) for path in paths.values())
    bench_path = run_dir / "bench.json"
    bench = json.loads(bench_path.read_text(encoding="utf-8")) if bench_path.is_file() else None
    return summary, config, bench


def read_start_summary(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary of the run that trained a run's start model: `<start>/../summary.json`, if any."""
    model = summary["recipe"]["model"]
    if model.startswith(TINY_PREFIX):
        return None
    path = Path(model).parent / "summary.json"
    if not Path(model).is_dir() or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_baseline(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The summary of a run's dense baseline (`run_dir/baseline.json`, see `attach_baseline`), if any."""
    path = Path(run_dir) / BASELINE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


BASELINE_MUST_MATCH = ("task", "data", "model")
"""Recipe fields a dense baseline shares with the pruned run it is the reference of."""


def check_baseline(run_dir: str | os.PathLike, baseline_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary of the dense run `baseline_dir`, checked to be a fair reference for the pruned run
    `run_dir`: as in the paper, the same start model fine-tuned on the same data without pruning.

    Raises:
        HJPruneInputError: A folder is not a finished run, or the baseline is not dense or differs in
            task, data (test split included) or start model.
    """
    summary, _, _ = read_run(run_dir)
    baseline, _, _ = read_run(baseline_dir)
    problems = (
        [] if baseline["variant"] == DENSE else [f"it is a pruning run (variant {baseline['variant']!r})"]
    )
    run_recipe, baseline_recipe = summary["recipe"], baseline["recipe"]
    problems += [
        f"its {key} is {baseline_recipe[key]!r}, not {run_recipe[key]!r}"
        for key in BASELINE_MUST_MATCH
        if baseline_recipe[key] != run_recipe[key]
    ]
    if _test_data(baseline_recipe) != _test_data(run_recipe):
        problems.append("its data_options differ (another corpus or test split)")
    if problems:
        raise HJPruneInputError(
            f"{baseline_dir} cannot be the dense baseline of {run_dir}: {'; '.join(problems)}"
        )
    return baseline


def attach_baseline(run_dir: str | os.PathLike, baseline_dir: str | os.PathLike) -> Path:
    """Record the dense run `baseline_dir` as the reference of the pruned run `run_dir` (`check_baseline`):
    its summary goes to `run_dir/baseline.json`, where cards, the zoo and `hjprune push` find it."""
    path = Path(run_dir) / BASELINE_FILE
    atomic_write_json(path, check_baseline(run_dir, baseline_dir))
    return path


def _test_data(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The data options that decide the test split (where a corpus is cached does not)."""
    return {key: value for key, value in (recipe.get("data_options") or {}).items() if key != "cache_dir"}


def make_model_card(
    run_dir: str | os.PathLike,
    repo_id: str | None = None,
    bench: Mapping[str, Any] | None = None,
    leaderboard: str | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The model card of a run folder (`summary.json`, `model/`, optional `bench.json` and `baseline.json`).

    Args:
        run_dir: A folder written by `hf_hjprune.train`.
        repo_id: The Hub repository the model goes to; it names the card and the usage example.
            Without it, the card names the run folder and loads from its `model/` path.
        bench: An `hjprune bench` result; defaults to the run's `bench.json` when there is one.
        leaderboard: The URL of the model zoo's table that the card links to, if any.
        baseline: The dense baseline's summary (`check_baseline`); defaults to the run's `baseline.json`.
    """
    summary, config, run_bench = read_run(run_dir)
    if repo_id is not None:
        name, model_id = repo_id.split("/")[-1], repo_id
    else:
        name, model_id = Path(run_dir).resolve().name, os.fspath(Path(run_dir) / "model")
    return card_from_summary(
        summary,
        config,
        name=name,
        model_id=model_id,
        bench=bench or run_bench,
        start=read_start_summary(summary),
        baseline=baseline or read_baseline(run_dir),
        leaderboard=leaderboard,
    )


def structure_totals(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Per group, `(kept, original)` units summed over the layers."""
    return {group: _total(layers) for group, layers in layer_structure(config).items()}


__all__ = [
    "attach_baseline",
    "card_from_summary",
    "check_baseline",
    "dataset_info",
    "hub_model_id",
    "layer_structure",
    "make_model_card",
    "plot_structure",
    "read_baseline",
    "read_run",
    "read_start_summary",
    "recipe_yaml",
    "structure_table",
]


OBJECTIVE_TEXT = {
    "hubert": "self-supervised HuBERT masked prediction of k-means clusters of {targets} frames "
    "(the encoder hears augmented audio; the targets come from the clean signal)",
    "wav2vec2": "self-supervised wav2vec 2.0 contrastive learning against quantized targets",
    "ctc": "supervised CTC over {ctc_targets}",
}


DOWNSTREAM_MARKERS = ("<!-- downstream:start -->", "<!-- downstream:end -->")
"""Around a start-model card's downstream results, which the pretraining benchmark fills in."""


def start_model_card(
    summaries: list[Mapping[str, Any]],
    config: Mapping[str, Any],
    *,
    name: str,
    recipes: list[str],
    downstream: str | None = None,
) -> ModelCard:
    """The card of a start model pretrained with `hjprune pretrain`, from the summaries of its stages
    (in order: each stage continues from the previous one) and its config.

    Args:
        summaries: The `summary.json` of every pretraining stage.
        config: The shipped model's `config.json` content.
        recipes: The pretraining recipe of each stage (`hjprune pretrain RECIPE` regenerates it).
        name: Its name (`pretrained:NAME`).
        downstream: Markdown on how it fine-tunes (e.g. the pretraining benchmark's table), if measured.
    """
    last = summaries[-1]
    family = FAMILIES[last["family"]].display_name
    params, macs = last["params"], last["macs"]
    stages = [
        _stage_line(index, summary, recipe_name)
        for index, (summary, recipe_name) in enumerate(zip(summaries, recipes, strict=True), start=1)
    ]
    body = [
        f"# {name}",
        "",
        f"A small {family} encoder made by `hf_hjprune` as a start model for HJ-Pruning: it is larger than "
        "the downstream command tasks need, and was pretrained on broad speech, not on those tasks.",
        "",
        f"- **Shape:** {config['num_hidden_layers']} Transformer layers of width {config['hidden_size']} "
        f"({config['num_attention_heads']} heads, {config['intermediate_size']} FFN units), "
        f"{len(config['conv_dim'])} conv layers of {config['conv_dim'][0]} channels with wav2vec2-base's kernels and strides",
        f"- **Cost:** {si(params['total'])} parameters, {si(macs['total'])} MACs per second of audio, "
        f"{macs['cnn'] / macs['total']:.0%} of them in the CNN",
        "- **Data:** speech synthesised with eSpeak NG (`hf_hjprune.data.broad_speech`): 40 languages, about 80 "
        "voice variants, speaking rates of 90–300 words per minute, frequent words of each language and nonsense "
        "syllables — never the command templates, and not the voices held out for the command corpus's test split; "
        "augmented with noise, reverberation, band-limiting, speed changes and mixed-in utterances.",
        "",
        "## How it was pretrained",
        "",
        *stages,
        "",
        "## Downstream",
        "",
        DOWNSTREAM_MARKERS[0],
        downstream or "Not measured yet.",
        DOWNSTREAM_MARKERS[1],
        "",
        "## How to use",
        "",
        f"In a recipe: `model: {name}`; in Python: `AutoModelForCTC.from_pretrained(path)` or "
        "`AutoModelForAudioClassification.from_pretrained(path)` (a new head where the task needs one).",
        "",
        "## Limitations",
        "",
        "- Trained on synthetic speech only: it is a start model for experiments with pruning on this machine's "
        "synthetic tasks, not a model of human speech.",
        "- Small and briefly trained (CPU hours): far from the pretrained models of the paper.",
        "",
    ]
    data = _start_card_data(last["family"], config, name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _start_card_data(family: str, config: Mapping[str, Any], name: str) -> ModelCardData:
    """The front matter of a start model's card."""
    return ModelCardData(
        model_name=name,
        language=["en", "multilingual"],
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="automatic-speech-recognition"
        if any("ForCTC" in architecture for architecture in config.get("architectures") or [])
        else "feature-extraction",
        tags=["hf_hjprune", "speech", family, "synthetic-speech", "start-model"],
    )  # fmt: skip


def _stage_line(index: int, summary: Mapping[str, Any], recipe_name: str) -> str:
    """One numbered item of a start model's card: a pretraining stage, its objective, cost and result."""
    recipe = summary["recipe"]
    objective = OBJECTIVE_TEXT[summary["objective"]].format(
        targets="MFCC" if recipe.get("targets") == "mfcc" else f"hidden layer {recipe.get('target_layer')}",
        ctc_targets="eSpeak NG's IPA phonemes (every language)"
        if recipe.get("ctc_targets", "phonemes") == "phonemes"
        else f"characters of the text ({', '.join(recipe.get('languages') or ['all'])} utterances)",
    )
    validation = ", ".join(
        f"{key.replace('_', ' ')} {value:.3f}" for key, value in summary["validation"].items()
    )
    return (
        f"{index}. **{objective}**, {'continuing from stage ' + str(index - 1) if recipe.get('init_from') else 'from random initialisation'}: "
        f"{summary['steps']} steps ({_duration(summary['train_seconds'])} on {summary['num_processes']} CPU "
        f"process{'es' if summary['num_processes'] > 1 else ''}), {summary['audio_hours_seen']:.1f} hours of audio "
        f"heard from {summary['data']['hours']:.1f} hours of broad synthetic speech; final validation: {validation}. "
        f"Regenerate: `hjprune pretrain {recipe_name}`."
    )
