"""The toy reproduction of the paper's comparison: planning, aggregation, reporting, and a quick run."""

import json
import re

import pytest

from hf_hjprune.benchmarks import paper_comparison as pc


def test_plan_covers_every_variant_target_and_seed():
    runs = pc.plan(seeds=(0, 1))
    assert len(runs) == 2 * 2 * (
        1 + len(pc.VARIANTS) * len(pc.TARGETS) + len(pc.LEVERS) * len(pc.LEVER_TARGETS)
    )
    assert len({run.name for run in runs}) == len(runs)
    assert pc.Run("asr", "sep", 0.4, 1).name == "asr_sep_40_seed1"
    assert pc.Run("slu", "none", None, 0).name == "slu_none_seed0"
    assert pc.Run("asr", "macs", 0.4, 2, "distill").name == "asr_macs_40_distill_seed2"
    assert pc.Run("asr", "macs", 0.4, 2, "distill").label == "HJ-MAC + distillation"
    assert all(run.lever is None for run in pc.plan(levers=()))
    with pytest.raises(ValueError, match="targets must lie in"):
        pc.plan(targets=(0.4, 1.2))
    with pytest.raises(ValueError, match="unknown task"):
        pc.plan(tasks=("tts",))


def _row(task, variant, target, seed, value, macs=0.0, lever=None):
    return {
        "task": task,
        "variant": variant,
        "target": target,
        "lever": lever,
        "seed": seed,
        "metric": pc.METRICS[task][0],
        "value": value,
        "ood_value": None,
        "macs_reduction": macs,
        "cnn_macs_reduction": macs / 2,
        "transformer_macs_reduction": macs,
        "params_reduction": macs,
        "cnn_share_of_removed": 0.25 if macs else None,
        "target_error": None if target is None else macs - target,
    }


def test_aggregate_and_observations_follow_the_numbers():
    rows = [
        _row("asr", "none", None, 0, 0.30),
        _row("asr", "none", None, 1, 0.34),
        _row("asr", "macs", 0.4, 0, 0.28, 0.41),
        _row("asr", "macs", 0.4, 1, 0.30, 0.39),
        _row("asr", "transformer", 0.4, 0, 0.40, 0.40),
        _row("asr", "transformer", 0.4, 1, 0.44, 0.40),
        _row("asr", "macs", 0.4, 0, 0.27, 0.40, "finetune"),
        _row("asr", "macs", 0.4, 1, 0.26, 0.45, "finetune"),
        _row("asr", "sep", 0.4, 0, 0.29, 0.40),  # 29.5% ± 0.7%: level with HJ-MAC's 29.0% ± 1.4%
        _row("asr", "sep", 0.4, 1, 0.30, 0.40),
        _row("asr", "params", 0.4, 0, 0.27, 0.20) | {"cnn_share_of_removed": 0.05},
        _row("slu", "none", None, 0, 0.90),
        _row("slu", "macs", 0.4, 0, 0.70, 0.4),
        _row("slu", "transformer", 0.4, 0, 0.80, 0.4),
    ]
    aggregated = pc.aggregate(rows)
    assert len(aggregated) == 9
    dense_asr = aggregated[0]
    assert dense_asr["seeds"] == [0, 1] and dense_asr["value"] == pytest.approx(0.32)
    assert dense_asr["value_std"] == pytest.approx(0.0283, abs=1e-4)
    assert aggregated[1]["macs_reduction"] == pytest.approx(0.40)

    asr = pc.observations(aggregated, "asr")  # lower WER is better
    assert asr[0].startswith(
        "At the −40% MACs target the best WER is HJ-MAC's (29.0% ± 1.4%, 40% fewer MACs reached), better than dense"
    )
    assert (
        "HJ-MAC beats Transformer-only" in asr[1]
        and "25% of the MACs HJ-MAC removed were the CNN's" in asr[1]
    )
    assert (
        "HJ-MAC is level with HJ-Sep (separate budgets) (29.0% ± 1.4% at 40% fewer MACs vs 29.5% ± 0.7%"
        in asr[2]
    )
    assert "the gap is inside the seeds' spread" in asr[2]
    # HJ-Param has the lowest WER but is not at a MACs target, so it is never "the best at −40% MACs".
    assert asr[3] == (
        "HJ-Param at −40% parameters removes 20% of the MACs, 5% of them from the CNN (HJ-MAC at −40% MACs: 25%); "
        "WER 27.0%."
    )
    assert asr[4].startswith(
        "At −40%, the best HJ-MAC lever is HJ-MAC + final fine-tune (26.5% ± 0.7%), better"
    )
    slu = pc.observations(aggregated, "slu")  # higher accuracy is better
    assert (
        "best intent accuracy is Transformer-only's (80.0%, 40% fewer MACs reached), worse than dense (90.0%)"
        in slu[0]
    )
    assert "HJ-MAC does not beat Transformer-only" in slu[1]

    markdown = pc.results_markdown({"aggregated": aggregated})
    assert "| HJ-MAC | −40% | 29.0% ± 1.4% | – | −40.0% |" in markdown
    assert "| HJ-MAC + final fine-tune | −40% | 26.5% ± 0.7% | – | −42.5%² |" in markdown
    assert "² HJ-MAC + final fine-tune at −40%: a seed missed the target by +5.0%" in markdown
    assert "**intent accuracy** on the test split (seed 0); out of domain" in markdown


def test_update_readme_replaces_only_the_marked_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{pc.MARKERS[0]}\nold table\n{pc.MARKERS[1]}\noutro\n")
    assert pc.update_readme("new table\n", readme)
    assert readme.read_text() == f"intro\n{pc.MARKERS[0]}\nnew table\n{pc.MARKERS[1]}\noutro\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not pc.update_readme("x", plain) and plain.read_text() == "no markers\n"


def test_quick_comparison_writes_json_markdown_and_plot_and_reuses_runs(tmp_path, capsys):
    runs_dir, out = tmp_path / "runs", tmp_path / "results"
    argv = ["--quick", "--variants", "macs", "transformer", "--targets", "0.1", "0.4", "--jobs", "2"]
    argv += ["--runs-dir", str(runs_dir), "--output-dir", str(out), "--no-readme"]
    assert pc.main(argv) == 0

    result = json.loads((out / "paper_comparison.json").read_text())
    names = [row["run"] for row in result["runs"]]
    assert names == [
        f"{task}_{variant}_seed0"
        for task in ("asr", "slu")
        for variant in ("none", "macs_10", "macs_40", "transformer_10", "transformer_40", "macs_40_finetune",
                        "macs_40_distill")
    ]  # fmt: skip
    by_name = {row["run"]: row for row in result["runs"]}
    assert by_name["asr_none_seed0"]["macs_reduction"] == 0.0
    assert by_name["asr_transformer_10_seed0"]["cnn_macs_reduction"] == 0.0
    assert by_name["asr_macs_40_seed0"]["macs_reduction"] > 0.0
    assert abs(by_name["asr_macs_40_seed0"]["target_error"]) <= 0.02  # the export lands on the target
    finetuned = json.loads((runs_dir / "asr_macs_40_finetune_seed0" / "summary.json").read_text())
    assert finetuned["final_finetune"]["steps"] == 3
    ratio = finetuned["final_finetune"]["learning_rate"] / finetuned["recipe"]["learning_rate"]
    assert ratio == pytest.approx(pc.FINAL_FINETUNE_LR_FACTOR)
    distilled = json.loads((runs_dir / "asr_macs_40_distill_seed0" / "summary.json").read_text())
    assert distilled["recipe"]["distillation"]["teacher"] == str(runs_dir / "asr_none_seed0" / "model")
    # The tiny model's Transformer holds too few MACs for -40% without the CNN: reported, not fatal.
    assert "is not reachable" in by_name["slu_transformer_40_seed0"]["error"]
    command = pc.COMMAND + " " + " ".join(argv)
    assert result["commands"] == {"asr": command, "slu": command}
    markdown = (out / "paper_comparison.md").read_text()
    assert "| HJ-MAC | −40% |" in markdown and "| Transformer-only | −40% | not reachable¹ |" in markdown
    assert (out / "paper_comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = runs_dir / "asr_macs_40_seed0" / "summary.json"
    written = summary.stat().st_mtime_ns
    assert pc.main(argv[:7] + argv[9:]) == 0  # one job this time; the finished runs are reused
    assert summary.stat().st_mtime_ns == written
    assert json.loads((out / "paper_comparison.json").read_text())["runs"] == result["runs"]

    # A comparison of one task updates that task's half, and keeps the other's with its command.
    assert pc.main([*argv, "--tasks", "asr", "--levers"]) == 0
    merged = json.loads((out / "paper_comparison.json").read_text())
    assert [row for row in merged["runs"] if row["task"] == "slu"] == result["runs"][7:]
    assert [row["run"] for row in merged["runs"] if row["task"] == "asr"] == names[:5]
    one_job = pc.COMMAND + " " + " ".join(argv[:7] + argv[9:])  # the last command that measured SLU
    assert merged["commands"] == {"slu": one_job, "asr": f"{command} --tasks asr --levers"}
    page = (out / "paper_comparison.md").read_text()
    assert f"(`{command} --tasks asr --levers`):" in page and f"`{one_job}` and `{command} --tasks" in page

    # A finished run trained with another recipe is not reported as this one's.
    edited = json.loads(summary.read_text())
    edited["recipe"]["max_steps"] += 1
    summary.write_text(json.dumps(edited))
    with pytest.raises(SystemExit) as stopped:
        pc.main(argv[:7] + argv[9:])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert re.search(r"asr_macs_40_seed0 holds a finished run of another recipe \(max_steps", error)


def _cost(cnn, transformer):
    parts = {
        "cnn": cnn,
        "feature_projection": 0.0,
        "positional_conv": 0.0,
        "attention": 0.0,
        "ffn": transformer,
    }
    return {**parts, "total": cnn + transformer}


def test_result_row_checks_each_part_of_a_sep_target():
    # CNN 100 -> 63 (37% fewer), Transformer 200 -> 118 (41% fewer): total 300 -> 181, 39.7% fewer.
    cost = {"before": _cost(100.0, 200.0), "after": _cost(63.0, 118.0)}
    summary = {
        "macs": cost,
        "params": cost,
        "metrics": {"before": {"wer": 0.9}, "after": {"wer": 0.3}},
        "train_seconds": 1.0,
    }
    sep = pc.result_row(pc.Run("asr", "sep", 0.4, 0), summary)
    assert sep["target_error"] == pytest.approx(-0.03)  # the CNN's miss, not the total's -0.3%
    assert sep["cnn_share_of_removed"] == pytest.approx(37 / 119)
    joint = pc.result_row(pc.Run("asr", "macs", 0.4, 0), summary)
    assert joint["target_error"] == pytest.approx(119 / 300 - 0.4)
    assert pc.result_row(pc.Run("asr", "none", None, 0), summary)["target_error"] is None
