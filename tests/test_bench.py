"""The benchmark plumbing on tiny models (fields, quotients, tables, CLI); not the timings themselves."""

import argparse
import json

import pytest
import torch
from conftest import tiny_config
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, WavLMConfig

from hf_hjprune import count_macs, prune_model
from hf_hjprune.bench import (
    add_arguments,
    bench_markdown,
    benchmark_model,
    benchmark_pair,
    run,
    training_overhead,
)
from hf_hjprune.benchmarks.speed_table import structure_for_reduction
from hf_hjprune.start_models import TINY_CONFIG
from hf_hjprune.structure import to_pruned_config, unit_counts

THREADS = torch.get_num_threads()
FAST = dict(repeats=3, warmup=1, threads=1, devices=["cpu"])
KEEP = {
    "conv": [list(range(8)), list(range(6)), list(range(12))],
    "heads": [[0, 1], [2], [0, 1, 2, 3]],
    "ffn": [list(range(20)), list(range(48)), list(range(7))],
}
LATENCY_FIELDS = {
    "device",
    "batch_size",
    "seconds",
    "macs",
    "median_ms",
    "iqr_ms",
    "q25_ms",
    "q75_ms",
    "min_ms",
    "runs",
    "cpu_median_ms",
    "times_ms",
    "peak_memory_mib",
}


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    dense = Wav2Vec2ForCTC(tiny_config()).eval()
    return dense, prune_model(dense, KEEP)


@pytest.fixture(scope="module")
def pair_result(tiny_pair):
    dense, pruned = tiny_pair
    return benchmark_pair(dense, pruned, seconds=(0.5, 1.0), batch_sizes=(1, 2), **FAST)


def test_pair_result_has_every_field(pair_result):
    json.dumps(pair_result)  # a JSON document
    machine, settings = pair_result["machine"], pair_result["settings"]
    for key in ("date", "torch", "transformers", "cpu", "threads", "load_average"):
        assert key in machine
    assert settings["threads"] == 1 and settings["repeats"] == 3 and settings["warmup"] == 1
    assert settings["timing"] and settings["memory"]
    assert set(pair_result["models"]) == {"dense", "pruned"}
    for entry in pair_result["models"].values():
        for part in ("cnn", "transformer", "attention", "ffn", "total"):
            assert entry["macs_per_second"][part] > 0
        assert entry["params"]["total"] > 0
        assert len(entry["latency"]) == 4
        for row in entry["latency"]:
            assert set(row) == LATENCY_FIELDS
            assert row["median_ms"] > 0 and row["cpu_median_ms"] > 0
            assert row["iqr_ms"] >= 0 and row["runs"] == 3 and len(row["times_ms"]) == 3
            assert row["q25_ms"] <= row["median_ms"] <= row["q75_ms"]
            assert row["peak_memory_mib"] > 0
    assert torch.get_num_threads() == THREADS  # restored after the benchmark


def test_pair_speedup_and_ideal_ratio(pair_result, tiny_pair):
    dense, pruned = tiny_pair
    (pair,) = pair_result["pairs"]
    rows = {name: pair_result["models"][name]["latency"] for name in ("dense", "pruned")}
    assert len(pair["results"]) == 4
    for i, row in enumerate(pair["results"]):
        dense_row, pruned_row = rows["dense"][i], rows["pruned"][i]
        assert (row["batch_size"], row["seconds"]) == (dense_row["batch_size"], dense_row["seconds"])
        assert row["dense_median_ms"] == dense_row["median_ms"]
        assert row["pruned_median_ms"] == pruned_row["median_ms"]
        assert row["speedup"] == pytest.approx(dense_row["median_ms"] / pruned_row["median_ms"], rel=1e-12)
        ideal = count_macs(dense, row["seconds"]).total / count_macs(pruned, row["seconds"]).total
        assert row["macs_ratio"] == pytest.approx(ideal, rel=1e-12) and ideal > 1
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["macs_ratio"], rel=1e-12)
        assert row["cpu_speedup"] == pytest.approx(dense_row["cpu_median_ms"] / pruned_row["cpu_median_ms"])


def test_markdown_has_a_row_per_configuration(pair_result):
    markdown = bench_markdown(pair_result)
    latency_rows = [line for line in markdown.splitlines() if line.startswith("| `") and "| cpu |" in line]
    assert len(latency_rows) == 2 * 4
    pair_rows = [line for line in markdown.splitlines() if line.startswith("| cpu |")]
    assert len(pair_rows) == 4
    assert all("×" in line and "%" in line for line in pair_rows)


def test_single_model_and_no_memory(tiny_pair):
    result = benchmark_model(tiny_pair[1], seconds=(0.5,), batch_sizes=(1,), memory=False, name="m", **FAST)
    (row,) = result["models"]["m"]["latency"]
    assert row["median_ms"] > 0 and row["peak_memory_mib"] is None
    assert result["pairs"] == []
    assert "peak memory" not in bench_markdown(result)


def test_training_overhead_reports_both_steps(tiny_pair):
    dense = tiny_pair[0]
    before = {name: p.detach().clone() for name, p in dense.named_parameters()}
    result = training_overhead(dense, seconds=0.5, batch_size=2, repeats=2, warmup=1, threads=1)
    for step in ("dense_step", "gated_step"):
        assert result[step]["median_ms"] > 0 and result[step]["runs"] == 2
    assert result["ratio"] == pytest.approx(
        result["gated_step"]["median_ms"] / result["dense_step"]["median_ms"]
    )
    assert result["cpu_ratio"] == pytest.approx(
        result["gated_step"]["cpu_median_ms"] / result["dense_step"]["cpu_median_ms"]
    )
    assert result["variant"] == "macs" and result["target"] == 0.4
    assert result["dense_step"]["peak_memory_mib"] > 0 and result["gated_step"]["peak_memory_mib"] > 0
    assert result["memory_ratio"] == pytest.approx(
        result["gated_step"]["peak_memory_mib"] / result["dense_step"]["peak_memory_mib"]
    )
    # The model itself is neither trained nor gated.
    assert all(torch.equal(before[name], p) for name, p in dense.named_parameters())
    assert not any(name.endswith(".original") for name, _ in dense.named_parameters())


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


FAST_ARGS = ["--seconds", "0.5", "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--threads", "1"]


def test_cli_on_two_saved_models(tmp_path, tiny_pair, capsys):
    dense, pruned = tiny_pair
    dense.save_pretrained(tmp_path / "dense")
    pruned.save_pretrained(tmp_path / "pruned")
    out_json, out_md = tmp_path / "out" / "bench.json", tmp_path / "out" / "bench.md"
    args = _parse(
        [str(tmp_path / "dense"), str(tmp_path / "pruned"), *FAST_ARGS]
        + ["--output-json", str(out_json), "--output-md", str(out_md)]
    )
    assert run(args) == 0
    result = json.loads(out_json.read_text())
    (pair,) = result["pairs"]
    assert pair["dense"] == str(tmp_path / "dense") and pair["pruned"] == str(tmp_path / "pruned")
    assert result["models"][pair["pruned"]]["class"] == "HJPrunedWav2Vec2ForCTC"
    assert pair["results"][0]["macs_ratio"] == pytest.approx(
        count_macs(dense, 0.5).total / count_macs(pruned, 0.5).total
    )
    assert out_md.read_text() == bench_markdown(result)
    assert "speedup" in capsys.readouterr().out


def test_cli_times_the_onnx_exports(tmp_path, tiny_pair):
    dense, pruned = tiny_pair
    dense.save_pretrained(tmp_path / "dense")
    pruned.save_pretrained(tmp_path / "pruned")
    out_json = tmp_path / "bench.json"
    models = [str(tmp_path / "dense"), str(tmp_path / "pruned")]
    assert run(_parse([*models, "--onnx", *FAST_ARGS, "--output-json", str(out_json)])) == 0
    result = json.loads(out_json.read_text())
    runtimes = [pair["runtime"] for pair in result["pairs"]]
    assert runtimes == ["PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8"]
    for pair in result["pairs"][1:]:
        entry = result["models"][pair["pruned"]]
        assert entry["runtime"] == pair["runtime"] and entry["class"] == "OnnxRuntimeModel"
        assert entry["macs_per_second"] == result["models"][str(tmp_path / "pruned")]["macs_per_second"]
        assert entry["latency"][0]["peak_memory_mib"] is None  # ONNX Runtime allocates outside PyTorch
        assert pair["results"][0]["speedup"] > 0
    assert "(ONNX Runtime int8):" in bench_markdown(result)


def test_cli_on_a_run_folder(tmp_path):
    config = Wav2Vec2Config(**TINY_CONFIG, vocab_size=12)
    dense = Wav2Vec2ForCTC(config)
    pruned = prune_model(dense, {"ffn": [list(range(100))] * config.num_hidden_layers})
    pruned.save_pretrained(tmp_path / "run" / "model")
    summary = {
        "recipe": {"model": "tiny:wav2vec2", "model_config": {}},
        "macs": {"seconds": 1.0, "before": count_macs(dense, 1.0).as_dict()},
    }
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    out_json = tmp_path / "bench.json"
    args = _parse(
        ["--pair", str(tmp_path / "run"), "--no-memory", *FAST_ARGS, "--output-json", str(out_json)]
    )
    assert run(args) == 0
    (pair,) = json.loads(out_json.read_text())["pairs"]
    ideal = count_macs(dense, 0.5).total / count_macs(pruned, 0.5).total
    assert pair["results"][0]["macs_ratio"] == pytest.approx(ideal)

    # A starting model that does not match the run is refused; --dense names the right one.
    summary["macs"]["before"]["total"] *= 2
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="--dense"):
        run(args)
    dense.save_pretrained(tmp_path / "dense")
    args = _parse(
        ["--pair", str(tmp_path / "run"), "--dense", str(tmp_path / "dense"), "--no-memory", *FAST_ARGS]
    )
    assert run(args) == 0


def test_cli_rejects_ambiguous_input(tmp_path):
    with pytest.raises(ValueError, match="either"):
        run(_parse(["a", "--pair", str(tmp_path)]))
    with pytest.raises(ValueError, match="one model"):
        run(_parse([]))
    with pytest.raises(ValueError, match="run folder"):
        run(_parse(["--pair", str(tmp_path)]))
    with pytest.raises(ValueError, match="cannot load"):
        run(_parse([str(tmp_path / "missing")]))


@pytest.mark.parametrize("config_class", [Wav2Vec2Config, WavLMConfig])
@pytest.mark.parametrize("multiple_of", [1, 8])
@pytest.mark.parametrize("cnn_weight", [1.0, 0.5])
def test_structure_for_reduction_meets_the_target(config_class, multiple_of, cnn_weight):
    config = config_class(vocab_size=32)
    dense_macs = count_macs(config).total
    for reduction in (0.1, 0.3, 0.5):
        keep = structure_for_reduction(config, reduction, multiple_of=multiple_of, cnn_weight=cnn_weight)
        pruned = to_pruned_config(config)
        pruned.conv_dim = [len(kept) for kept in keep["conv"]]
        pruned.attention_heads_per_layer = [len(kept) for kept in keep["heads"]]
        pruned.intermediate_size_per_layer = [len(kept) for kept in keep["ffn"]]
        assert 1 - count_macs(pruned).total / dense_macs == pytest.approx(reduction, abs=0.01)
        counts = unit_counts(pruned)
        assert all(c % multiple_of == 0 and c >= multiple_of for c in counts["conv"])
        assert all(f % multiple_of == 0 for f in counts["ffn"])
        # Every group is pruned, and layers of one group differ by at most one chunk.
        for group, chunk in (("conv", multiple_of), ("heads", 1), ("ffn", multiple_of)):
            assert sum(counts[group]) < sum(unit_counts(config)[group])
            assert max(counts[group]) - min(counts[group]) <= chunk


def test_structure_for_reduction_rejects_bad_targets():
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        structure_for_reduction(tiny_config(), 1.0)
    with pytest.raises(ValueError, match="out of reach"):
        structure_for_reduction(tiny_config(), 0.999)


def test_speed_table_deployment_and_training_experiments(tmp_path, monkeypatch):
    """The deployment and training experiments of the speed table, on a tiny shape: every runtime column
    is filled, and each training configuration gets a row with its time and memory ratios."""
    from hf_hjprune.benchmarks import speed_table

    def tiny(**overrides):
        return tiny_config("wav2vec2", conv_dim=(32, 24, 24), intermediate_size=64, **overrides)

    monkeypatch.setattr(speed_table.measure, "TABLE_MODELS", {"tiny": (tiny, Wav2Vec2ForCTC)})
    monkeypatch.setattr(speed_table.measure, "REDUCTIONS", (0.3, 0.5))
    plan = speed_table.Plan(
        (), (), (), (), ((1, 0.5, 1), (2, 0.25, 1)), 1, 0, (1,), deployment=((1, 0.5, 1),)
    )
    result = speed_table.run_table(
        plan, threads=1, log=lambda _: None, experiments=("training", "deployment")
    )
    rows = speed_table.results.deployment_rows(result["families"]["tiny"])
    assert [row["structure"] for row in rows] == ["dense", "-30% (conv x64)", "-50% (conv x64)"]
    for row in rows:
        assert all(speedup > 0 for speedup in row["speedups"].values())
    assert rows[0]["speedups"]["PyTorch fp32"] == 1.0 and rows[2]["macs_ratio"] > rows[1]["macs_ratio"] > 1
    markdown = speed_table.table_markdown(json.loads(json.dumps(result)), "cmd")
    assert "### Deployment" in markdown and "| tiny | 1 | 1 | 0.5 | -50% (conv x64) |" in markdown
    assert "**Deployment, tiny -50% (conv x64).**" in markdown and "### Speedup against" not in markdown
    training = result["families"]["tiny"]["training_overhead"]
    assert [(t["batch_size"], t["seconds"]) for t in training] == [(1, 0.5), (2, 0.25)]
    for overhead in training:
        row = f"| tiny | {overhead['batch_size']} | {overhead['seconds']:g} |"
        assert (
            row in markdown and f"{overhead['memory_ratio']:.2f}× |" in markdown.split(row)[1].split("\n")[0]
        )
    assert "**Training overhead.**" in markdown


def test_speed_table_renders_the_committed_results(tmp_path):
    """The committed speed_table.json (a partial run: one family, three experiments) renders to the
    committed speed_table.md byte for byte: rendering reads experiments, reductions and machine facts from
    the document."""
    from hf_hjprune.benchmarks.speed_table.__main__ import RESULTS_DIR, main

    (tmp_path / "speed_table.json").write_bytes((RESULTS_DIR / "speed_table.json").read_bytes())
    assert main(["--markdown-only", "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / "speed_table.md").read_text(encoding="utf-8") == (
        RESULTS_DIR / "speed_table.md"
    ).read_text(encoding="utf-8")
