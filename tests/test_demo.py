"""`hjprune demo --quick`: the whole demo pipeline on a tiny corpus."""

import json

from transformers import AutoModelForAudioClassification, AutoModelForCTC

from hf_hjprune import cli
from hf_hjprune.demo import RUNS


def test_quick_demo_writes_the_comparison(tmp_path, capsys):
    cli.main(["demo", "--quick", "--output-dir", str(tmp_path)])

    labels = [label for _, label in RUNS]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [row["run"] for row in rows] == labels
    table = (tmp_path / "results.md").read_text()
    assert all(label in table for label in labels) and "MACs / s audio" in table
    assert "| dense ASR |" in capsys.readouterr().out

    by_run = dict(zip([name for name, _ in RUNS], rows))
    for name in ("asr_dense", "asr_hjmac"):
        assert by_run[name]["wer"] is not None and by_run[name]["intent_accuracy"] is None
    for name in ("slu_dense", "slu_hjmac"):
        assert by_run[name]["intent_accuracy"] is not None and by_run[name]["wer"] is None
    assert by_run["asr_hjmac"]["params"] <= by_run["asr_dense"]["params"]
    assert by_run["slu_hjmac"]["macs_per_second"] <= by_run["slu_dense"]["macs_per_second"]

    for name, _ in RUNS:
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["recipe"]["output_dir"] == str(tmp_path / name)
        auto_class = AutoModelForCTC if name.startswith("asr") else AutoModelForAudioClassification
        auto_class.from_pretrained(tmp_path / name / "model")
