"""Model cards generated from run folders: front matter, structure table and plot, results, usage, recipe."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from huggingface_hub import ModelCard

from hf_hjprune.bench import benchmark_models, benchmark_pair, onnx_models
from hf_hjprune.cards import (
    attach_baseline,
    check_baseline,
    make_model_card,
    plot_structure,
    read_baseline,
    read_run,
    structure_table,
)
from hf_hjprune.cost import count_macs, count_params
from hf_hjprune.errors import HJPruneInputError
from hf_hjprune.materialize import prune_model
from hf_hjprune.recipes import load_recipe
from hf_hjprune.reporting import bench_markdown
from hf_hjprune.structure import FAMILIES

# Kept units of the tiny_config models (3 conv layers of 16/12/12 channels, 3 layers of 4 heads and 48 FFN units).
KEEP = {
    "conv": [[0, 2, 5], list(range(12)), [1, 3, 4, 5, 6, 7, 8, 9]],
    "heads": [[], [0, 1, 2, 3], [1, 3]],
    "ffn": [list(range(48)), list(range(20)), []],
}
METRICS = {
    "asr": (
        {"wer": 1.0, "cer": 0.875, "num_utterances": 16},
        {"wer": 0.3125, "cer": 0.1234, "num_utterances": 16},
    ),
    "slu": ({"accuracy": 0.0625, "num_utterances": 16}, {"accuracy": 0.8125, "num_utterances": 16}),
}


def make_run(
    run_dir: Path,
    family: str = "wav2vec2",
    task: str = "asr",
    model: str | None = None,
    data: str = "synthetic",
) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """A run folder in the shape `hf_hjprune.train` writes, with a randomly initialised tiny pruned model.

    Returns the folder, the dense model and the pruned model.
    """
    torch.manual_seed(0)
    head = "ctc" if task == "asr" else "classification"
    dense = FAMILIES[family].stock_models[head](tiny_config(family)).eval()
    pruned = prune_model(dense, KEEP).eval()
    pruned.save_pretrained(run_dir / "model")
    recipe = load_recipe(
        f"tiny_{task}", [f"model={model or 'tiny:' + family}", f"data={data}", "output_dir=outputs/test"]
    )
    before, after = METRICS[task]
    summary = {
        "recipe": recipe.to_dict(),
        "variant": recipe.variant,
        "target": recipe.target,
        "steps": 12,
        "train_seconds": 3.5,
        "num_processes": 1,
        "params": {"before": count_params(dense).as_dict(), "after": count_params(pruned).as_dict()},
        "macs": {
            "seconds": 1.0,
            "before": count_macs(dense).as_dict(),
            "after": count_macs(pruned).as_dict(),
        },
        "metrics": {"before": before, "after": after},
        "skipped_files": {"train": {}, "validation": {}, "test": {}},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir, dense, pruned


@pytest.fixture
def asr_run(tmp_path):
    return make_run(tmp_path / "run")


def test_structure_table_against_the_config(asr_run):
    run_dir, _, pruned = asr_run
    table = structure_table(pruned.config)
    assert "| 0 | 10 | 5 | 3 / 16 (19%) |" in table
    assert "| 1 | 3 | 2 | 12 / 12 (100%) |" in table
    assert "| 2 | 3 | 2 | 8 / 12 (67%) |" in table
    assert "| **all** | | | **23 / 40 (57%)** |" in table
    assert "| 0 | 0 / 4 (0%) | 48 / 48 (100%) |" in table
    assert "| 1 | 4 / 4 (100%) | 20 / 48 (42%) |" in table
    assert "| 2 | 2 / 4 (50%) | 0 / 48 (0%) |" in table
    assert "| **all** | **6 / 12 (50%)** | **68 / 144 (47%)** |" in table
    # The saved config.json gives the same table (the zoo renders cards from it).
    assert structure_table(json.loads((run_dir / "model" / "config.json").read_text())) == table


def test_structure_table_of_a_dense_model_keeps_everything():
    table = structure_table(tiny_config("hubert"))
    assert "**40 / 40 (100%)**" in table and "**12 / 12 (100%)** | **144 / 144 (100%)**" in table


def test_plot_is_written_and_reproducible(asr_run, tmp_path):
    _, _, pruned = asr_run
    first = plot_structure(pruned.config, tmp_path / "a.png").read_bytes()
    second = plot_structure(pruned.config.to_dict(), tmp_path / "b.png").read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n") and len(first) > 10_000
    assert first == second


def _yaml_block(text: str) -> dict:
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))


def test_asr_card_of_a_tiny_synthetic_run(asr_run):
    run_dir, _, _ = asr_run
    card = make_model_card(run_dir, repo_id="org/tiny-asr")
    data = card.data
    assert data.model_name == "tiny-asr"
    assert (data.pipeline_tag, data.library_name, data.license) == (
        "automatic-speech-recognition",
        "transformers",
        "apache-2.0",
    )
    assert data.tags == ["hf_hjprune", "hj-pruning", "structured-pruning", "speech", "wav2vec2", "hj-mac"]
    assert data.base_model is None and data.datasets is None  # built in code, synthetic data
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"wer", "cer"}
    assert (results["wer"].metric_value, results["cer"].metric_value) == (31.25, 12.34)
    assert all(
        r.dataset_split == "test" and r.task_type == "automatic-speech-recognition" for r in results.values()
    )

    text = card.text
    assert "no base model on the Hub" in text and "`tiny:wav2vec2`" in text
    assert "HJ-MAC" in text and "40% fewer MACs" in text
    assert "![Kept vs original units per layer](structure.png)" in text
    assert structure_table(json.loads((run_dir / "model" / "config.json").read_text())) in text
    assert "| WER on `test` | 100.00% | 31.25% | -68.75 pts |" in text
    assert "| MACs per 1 s of audio |" in text and "Latency" not in text
    assert "import hf_hjprune" in text and 'AutoModelForCTC.from_pretrained("org/tiny-asr")' in text
    assert 'AutoModelForCTC.from_pretrained("org/tiny-asr", trust_remote_code=True)' in text
    assert "python -m hf_hjprune.train recipe.yaml" in text
    assert _yaml_block(text) == json.loads((run_dir / "summary.json").read_text())["recipe"]
    assert "Not useful for real speech" in text and "No pre-training" in text

    # What the Hub parses back is what was generated; the same run gives the same card.
    assert ModelCard(str(card)).data.to_dict() == data.to_dict()
    assert str(make_model_card(run_dir, repo_id="org/tiny-asr")) == str(card)


def test_slu_card_from_a_hub_checkpoint(tmp_path):
    run_dir, _, _ = make_run(tmp_path / "run", "wavlm", "slu", model="microsoft/wavlm-base", data="slurp")
    card = make_model_card(run_dir, repo_id="org/wavlm-slurp")
    data = card.data
    assert data.base_model == "microsoft/wavlm-base" and data.datasets == ["marcel-gohsen/slurp"]
    assert data.pipeline_tag == "audio-classification" and "wavlm" in data.tags
    [result] = data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == (
        "accuracy",
        81.25,
        "marcel-gohsen/slurp",
    )
    assert "[`microsoft/wavlm-base`](https://huggingface.co/microsoft/wavlm-base)" in card.text
    assert 'AutoModelForAudioClassification.from_pretrained("org/wavlm-slurp")' in card.text
    assert "Not useful for real speech" not in card.text and "SLURP" in card.text


def test_card_of_a_dense_run(asr_run):
    run_dir, dense, _ = asr_run
    shutil.rmtree(run_dir / "model")
    dense.save_pretrained(run_dir / "model")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(variant="none", target=None)
    for cost in ("params", "macs"):
        summary[cost]["after"] = summary[cost]["before"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    card = make_model_card(run_dir, repo_id="org/dense")
    assert card.data.tags[-1] == "dense" and "- **Target:** none (dense fine-tuning)" in card.text
    assert "| 0 | 10 | 5 | 16 / 16 (100%) |" in card.text
    assert (
        "nothing was pruned" in card.text
        and "hf_hjprune  #" not in card.text
        and "trust_remote_code" not in card.text
    )


def test_card_without_repo_id_loads_from_the_run_folder(asr_run):
    run_dir, _, _ = asr_run
    card = make_model_card(run_dir)
    assert card.data.model_name == "run"
    assert f'AutoModelForCTC.from_pretrained("{run_dir / "model"}")' in card.text


def test_card_with_bench_result(asr_run):
    run_dir, dense, pruned = asr_run
    bench = benchmark_pair(dense, pruned, seconds=[0.5], batch_sizes=[1], repeats=1, warmup=0, memory=False)
    (run_dir / "bench.json").write_text(json.dumps(bench))
    [result] = bench["pairs"][0]["results"]
    text = make_model_card(run_dir).text
    assert (
        f"| Latency (cpu, batch 1, 0.5 s audio) | {result['dense_median_ms']:.1f} ms | "
        f"{result['pruned_median_ms']:.1f} ms | speed-up {result['speedup']:.2f}×" in text
    )
    assert bench_markdown(bench).rstrip("\n") in text
    assert make_model_card(run_dir, bench=bench).text == text  # passed explicitly: the same


def test_card_with_onnx_runtime_rows(asr_run, tmp_path):
    run_dir, dense, pruned = asr_run
    models = {"dense": dense, "pruned": pruned, **onnx_models(pruned, tmp_path, threads=1)}
    pairs = [("dense", name) for name in models if name != "dense"]
    bench = benchmark_models(models, pairs, seconds=[0.5], batch_sizes=[1], repeats=1, warmup=0, memory=False)
    text = make_model_card(run_dir, bench=json.loads(json.dumps(bench))).text
    int8 = bench["pairs"][2]["results"][0]
    assert (
        f"| Latency, this model in ONNX Runtime int8 (cpu, batch 1, 0.5 s audio) | {int8['dense_median_ms']:.1f} ms | "
        f"{int8['pruned_median_ms']:.1f} ms | speed-up {int8['speedup']:.2f}×" in text
    )
    assert "| Latency (cpu, batch 1, 0.5 s audio) |" in text and "`hjprune export`" in text


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ValueError, match="summary.json is missing"):
        read_run(tmp_path)


def make_dense_baseline(run_dir: Path, baseline_dir: Path, wer: float = 0.30) -> Path:
    """A dense run beside `run_dir`'s pruned one: the same recipe without pruning, its own final WER."""
    shutil.copytree(run_dir, baseline_dir)
    summary = json.loads((baseline_dir / "summary.json").read_text())
    summary["variant"] = summary["recipe"]["variant"] = "none"
    summary["target"] = summary["recipe"]["target"] = None
    summary["params"]["after"], summary["macs"]["after"] = (
        summary["params"]["before"],
        summary["macs"]["before"],
    )
    summary["metrics"]["after"] = {"wer": wer, "cer": 0.1, "num_utterances": 16}
    summary["recipe"]["output_dir"] = str(baseline_dir)
    (baseline_dir / "summary.json").write_text(json.dumps(summary))
    return baseline_dir


def test_a_card_compares_with_its_dense_baseline(asr_run, tmp_path):
    run_dir, _, _ = asr_run
    baseline_dir = make_dense_baseline(run_dir, tmp_path / "dense")
    before = str(make_model_card(run_dir, repo_id="org/tiny-asr"))
    assert "Dense baseline" not in before and "| Start model (before training) |" in before

    attach_baseline(run_dir, baseline_dir)
    assert read_baseline(run_dir) == json.loads((baseline_dir / "summary.json").read_text())
    card = str(make_model_card(run_dir, repo_id="org/tiny-asr"))
    assert "| | Dense baseline | This model | Change |" in card
    assert "| WER on `test` | 30.00% | 31.25% | +1.25 pts |" in card  # the baseline's WER, not the start's
    assert "- **Against the dense baseline:** WER 30.00% → 31.25%, CER 10.00% → 12.34%" in card
    assert (
        "fine-tuned for 12 steps (4 s on 1 process) with `python -m hf_hjprune.train baseline_recipe.yaml`"
        in card
    )
    # Params and MACs against the baseline's (dense) model: the same as against the start model.
    params_row = next(line for line in before.splitlines() if line.startswith("| Parameters |"))
    assert params_row in card

    # A baseline that is not a fair reference is refused, naming why; the recorded one stays.
    other_start = make_dense_baseline(run_dir, tmp_path / "other")
    summary = json.loads((other_start / "summary.json").read_text())
    summary["recipe"]["model"] = "tiny:hubert"
    summary["recipe"]["data_options"]["num_test"] = 99
    (other_start / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(
        HJPruneInputError, match=r"its model is 'tiny:hubert', not 'tiny:wav2vec2'; its data_options differ"
    ):
        attach_baseline(run_dir, other_start)
    with pytest.raises(HJPruneInputError, match=r"it is a pruning run \(variant 'macs'\)"):
        check_baseline(run_dir, run_dir)
    with pytest.raises(HJPruneInputError, match="is not a finished run folder"):
        check_baseline(run_dir, tmp_path / "nothing")
    assert read_baseline(run_dir)["recipe"]["output_dir"] == str(baseline_dir)
