"""The pretraining benchmark: fine-tuning from start models against from scratch, and what it writes."""

import json

import numpy as np
import pytest

from hf_hjprune.benchmarks import pretraining as pb
from hf_hjprune.cards import DOWNSTREAM_MARKERS
from hf_hjprune.demo import QUICK_MODEL, QUICK_OVERRIDES


def test_quick_benchmark_writes_results_reuses_runs_and_fills_start_model_cards(
    tmp_path, monkeypatch, capsys
):
    runs_dir, out = tmp_path / "runs", tmp_path / "results"
    quick = [f"--set={override}" for override in (*QUICK_OVERRIDES, *QUICK_MODEL, "model=tiny:hubert")]
    argv = ["--start-models", "tiny:hubert", "--jobs", "2", "--runs-dir", str(runs_dir)]
    argv += ["--output-dir", str(out), "--no-readme", *quick]
    assert pb.main(argv) == 0

    result = json.loads((out / "pretraining.json").read_text())
    assert [(row["task"], row["start"]) for row in result["runs"]] == [
        ("asr", "tiny:hubert"), ("asr", "random"), ("slu", "tiny:hubert"), ("slu", "random"),
    ]  # fmt: skip
    scratch = json.loads((runs_dir / "asr_random_seed0" / "summary.json").read_text())
    assert scratch["recipe"]["init"] == "random" and scratch["recipe"]["model"] == "tiny:hubert"
    markdown = (out / "pretraining.md").read_text()
    assert "| random init (same shape) |" in markdown and "than random init on the test split" in markdown
    assert (out / "pretraining.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = runs_dir / "slu_tiny-hubert_seed0" / "summary.json"
    written = summary.stat().st_mtime_ns
    assert pb.main(argv) == 0  # the finished runs are reused
    assert summary.stat().st_mtime_ns == written
    changed = argv + ["--set=learning_rate=0.5"]  # not what the finished runs were trained with
    with pytest.raises(SystemExit) as stopped:
        pb.main(changed)
    assert (
        stopped.value.code == 2
        and "holds a finished run of another recipe (learning_rate" in capsys.readouterr().err
    )
    assert summary.stat().st_mtime_ns == written

    # A shipped start model's card gets its own rows and random init's, between its markers.
    monkeypatch.setattr(pb, "PRETRAINED_DIR", tmp_path / "pretrained")
    card = tmp_path / "pretrained" / "tiny-x" / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text(
        f"# x\n\n## Downstream\n\n{DOWNSTREAM_MARKERS[0]}\nNot measured yet.\n{DOWNSTREAM_MARKERS[1]}\n"
    )
    renamed = [dict(entry, start="pretrained:tiny-x") if entry["start"] != "random" else entry
               for entry in result["aggregated"]]  # fmt: skip
    shipped = dict(result, start_models=["pretrained:tiny-x"], aggregated=renamed)
    assert pb.update_start_model_cards(shipped) == [card]
    text = card.read_text()
    assert "Not measured yet" not in text and "| `pretrained:tiny-x` |" in text
    assert result["command"] in text and text.endswith(f"{DOWNSTREAM_MARKERS[1]}\n")


def test_cluster_scores_follow_how_well_clusters_match_characters():
    from hf_hjprune.benchmarks.ssl_diagnostics import cluster_scores

    rng = np.random.default_rng(0)
    labels = [rng.integers(-1, 4, size=200) for _ in range(3)]  # -1: an unlabelled frame
    separated = [np.eye(5)[lab + 1] * 10 + rng.normal(size=(200, 5)) * 0.01 for lab in labels]
    noise = [rng.normal(size=(200, 5)) for _ in labels]
    exact, random = cluster_scores(separated, labels, 5), cluster_scores(noise, labels, 5)
    assert exact["purity"] == 1.0 and exact["nmi"] > 0.99
    assert exact["labelled_frames"] == sum(int((lab >= 0).sum()) for lab in labels)
    assert random["purity"] < 0.5 and random["nmi"] < 0.1
