"""The model zoo: the committed index and files, add/build/check, the leaderboard, zoo training."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
from test_cards import make_dense_baseline, make_run

from hf_hjprune import zoo
from hf_hjprune.cards import make_model_card
from hf_hjprune.demo import QUICK_MODEL
from hf_hjprune.recipes import available_recipes
from hf_hjprune.zoo import (
    NOT_TRAINED,
    RESULT_KEYS,
    TRAINED,
    add_run,
    build_zoo,
    check_zoo,
    leaderboard_markdown,
    load_index,
    planned_entries,
    save_index,
    train_zoo,
    write_zoo,
)

ZOO_DIR = Path(__file__).resolve().parents[1] / "model_cards"
TINY = "tiny-wav2vec2-synthetic-asr-hjmac40"


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_committed_zoo_is_what_its_index_gives():
    assert check_zoo(ZOO_DIR) == [], "model_cards/ is out of date: run `hjprune zoo build`"


def test_build_is_deterministic(tmp_path):
    index = load_index(ZOO_DIR)
    first, second = write_zoo(index, tmp_path / "a"), write_zoo(index, tmp_path / "b")
    assert first == second
    for path in first:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path


def test_committed_entries():
    entries = load_index(ZOO_DIR)["entries"]
    assert [e["name"] for e in entries] == [e["name"] for e in planned_entries()]
    for entry in entries:
        if entry["status"] == NOT_TRAINED:
            assert all(entry[key] is None for key in RESULT_KEYS), entry["name"]
        else:
            assert entry["status"] == TRAINED and (ZOO_DIR / entry["name"] / "README.md").is_file()
            assert (entry["start_summary"] or entry["summary"])["recipe"]["model"] == entry["start_model"]
            assert (
                entry["bench"] is not None
                and "Latency" in (ZOO_DIR / entry["name"] / "README.md").read_text()
            )
    leaderboard = (ZOO_DIR / "LEADERBOARD.md").read_text()
    not_trained = _section(leaderboard, "Not trained yet")
    for entry in entries:
        if entry["status"] == NOT_TRAINED:
            [row] = [line for line in not_trained.splitlines() if line.startswith(f"| {entry['name']}<br>")]
            assert "→" not in row and "%" in row  # the target, no numbers


def test_planned_entries():
    entries = planned_entries()
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names) == 3 + 3 * 2 * 5
    tiny = [e for e in entries if e["data"] == "synthetic"]
    assert [e["family"] for e in tiny] == ["wav2vec2", "hubert", "wavlm"]
    for entry in tiny:
        # The paper's protocol: the family's pretrained start, pruned while fine-tuned beside a dense baseline.
        start = f"pretrained:tiny-{entry['family']}-asr"
        assert (
            entry["task"],
            entry["variant"],
            entry["target"],
            entry["start_model"],
            entry["base_model"],
        ) == (
            "asr",
            "macs",
            0.4,
            start,
            None,
        )
        assert (entry["recipe"], entry["baseline_recipe"]) == ("demo_asr_hjmac", "demo_asr_dense")
        assert {entry["recipe"], entry["baseline_recipe"]} <= set(available_recipes())
        assert entry["overrides"] == entry["baseline_overrides"] == [f"model={start}"]
        assert entry["command"] == (
            f"python -m hf_hjprune.train demo_asr_dense --set model={start}"
            f" --set output_dir=outputs/zoo/{entry['name']}-dense"
            f" && python -m hf_hjprune.train demo_asr_hjmac --set model={start}"
            f" --set output_dir=outputs/zoo/{entry['name']}"
        )
    paper = [e for e in entries if e["data"] != "synthetic"]
    assert {(e["data"], e["task"]) for e in paper} == {("librispeech", "asr"), ("slurp", "slu")}
    assert sorted({e["target"] for e in paper}) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert {e["base_model"] for e in paper} == {
        "facebook/wav2vec2-base",
        "facebook/hubert-base-ls960",
        "microsoft/wavlm-base",
    }
    assert all(e["status"] == NOT_TRAINED and all(e[k] is None for k in RESULT_KEYS) for e in entries)


def test_add_build_and_leaderboard(tmp_path):
    zoo_dir = tmp_path / "zoo"
    run_dir, _, _ = make_run(tmp_path / "tiny")
    entry = add_run(run_dir, TINY, zoo_dir=zoo_dir)
    assert entry["status"] == TRAINED and entry["repo_id"] == f"hf-hjprune/{TINY}"
    assert entry["metrics"] == {
        "wer": {"before": 1.0, "after": 0.3125, "dense": None},
        "cer": {"before": 0.875, "after": 0.1234, "dense": None},
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (
        entry["summary"] == summary and entry["macs"]["after"]["total"] == summary["macs"]["after"]["total"]
    )
    assert (
        entry["macs"]["after"]["cnn_share"]
        == summary["macs"]["after"]["cnn"] / summary["macs"]["after"]["total"]
    )
    # The zoo's card is the one `hjprune push` uploads.
    assert (zoo_dir / TINY / "README.md").read_text() == str(
        make_model_card(run_dir, repo_id=entry["repo_id"])
    )
    assert (zoo_dir / TINY / "structure.png").read_bytes().startswith(b"\x89PNG")
    assert check_zoo(zoo_dir) == []

    # A better ASR model and an SLU model, not planned: new entries, ranked per task.
    better = tmp_path / "better"
    shutil.copytree(run_dir, better)
    summary["metrics"]["after"]["wer"] = 0.2
    (better / "summary.json").write_text(json.dumps(summary))
    add_run(better, "custom-asr", "someone/custom-asr", zoo_dir)
    slu_dir, _, _ = make_run(
        tmp_path / "slu", "hubert", "slu", model="facebook/hubert-base-ls960", data="slurp"
    )
    add_run(slu_dir, "custom-slu", zoo_dir=zoo_dir)

    leaderboard = (zoo_dir / "LEADERBOARD.md").read_text()
    asr_rows = [
        line for line in _section(leaderboard, "Speech recognition (CTC)").splitlines() if "README.md" in line
    ]
    assert [row.split("]")[0] for row in asr_rows] == ["| [custom-asr", f"| [{TINY}"]
    assert "`someone/custom-asr`" in asr_rows[0] and "100.0 → **20.0**" in asr_rows[0]
    assert (
        "| wav2vec 2.0 | `tiny:wav2vec2` (random init) | synthetic (eSpeak NG) | hj-mac | 40% |"
        in asr_rows[1]
    )
    assert "100.0 → **31.2** | 87.5 → **12.3** |" in asr_rows[1]
    [slu_row] = [
        line for line in _section(leaderboard, "Intent classification (SLU)").splitlines() if "README" in line
    ]
    assert (
        "`facebook/hubert-base-ls960`" in slu_row and "| SLURP |" in slu_row and "6.2 → **81.2**" in slu_row
    )
    assert TINY not in _section(leaderboard, "Not trained yet")
    assert leaderboard == leaderboard_markdown(load_index(zoo_dir))

    # A run that is not what a planned entry describes is refused; the index stays as it was.
    index_bytes = (zoo_dir / "zoo.json").read_bytes()
    with pytest.raises(ValueError, match="family is 'hubert', not 'wav2vec2'"):
        add_run(make_run(tmp_path / "hubert", "hubert")[0], TINY, zoo_dir=zoo_dir)
    assert (zoo_dir / "zoo.json").read_bytes() == index_bytes

    # An entry removed from the index leaves stale files, which check reports and build removes.
    index = load_index(zoo_dir)
    index["entries"] = [e for e in index["entries"] if e["name"] != "custom-slu"]
    save_index(index, zoo_dir)
    assert "stale: custom-slu/README.md" in check_zoo(zoo_dir) and "changed: LEADERBOARD.md" in check_zoo(
        zoo_dir
    )
    build_zoo(zoo_dir)
    assert not (zoo_dir / "custom-slu").exists() and check_zoo(zoo_dir) == []


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    zoo.add_arguments(parser)
    return zoo.run(parser.parse_args(list(argv)))


def test_cli(tmp_path, capsys):
    zoo_dir = tmp_path / "zoo"
    shutil.copytree(ZOO_DIR, zoo_dir)
    assert _cli("--zoo-dir", str(zoo_dir), "build", "--check") == 0
    (zoo_dir / "LEADERBOARD.md").write_text("edited by hand\n")
    capsys.readouterr()
    assert _cli("--zoo-dir", str(zoo_dir), "build", "--check") == 1
    assert "changed: LEADERBOARD.md" in capsys.readouterr().err
    assert _cli("--zoo-dir", str(zoo_dir), "build") == 0
    assert _cli("--zoo-dir", str(zoo_dir), "build", "--check") == 0

    run_dir, _, _ = make_run(tmp_path / "run", "wavlm")
    name = "tiny-wavlm-synthetic-asr-hjmac40"
    dense = make_dense_baseline(run_dir, tmp_path / "dense", wer=0.25)
    assert _cli("--zoo-dir", str(zoo_dir), "add", str(run_dir), "--name", name, "--baseline", str(dense)) == 0
    entry = load_index(zoo_dir)["entries"][2]
    assert entry["status"] == TRAINED and entry["metrics"]["wer"]["dense"] == 0.25
    assert entry["baseline_recipe"] == "demo_asr_dense"  # the planned baseline
    assert "25.0 → **31.2**" in (zoo_dir / "LEADERBOARD.md").read_text()
    # A baseline that is not a fair reference: exit 2, the reason on stderr.
    assert (
        _cli("--zoo-dir", str(zoo_dir), "add", str(run_dir), "--name", name, "--baseline", str(run_dir)) == 2
    )
    assert "it is a pruning run" in capsys.readouterr().err
    assert _cli("--zoo-dir", str(zoo_dir), "add", str(tmp_path), "--name", "x") == 2
    assert "summary.json is missing" in capsys.readouterr().err


def test_zoo_train_with_the_real_trainer(tmp_path):
    zoo_dir = tmp_path / "zoo"
    index = load_index(zoo_dir)
    sizes = "{num_train: 16, num_validation: 8, num_test: 8, seed: 0, cache_dir: %s}" % (tmp_path / "corpus")
    small = ["max_steps=2", "eval_steps=0", f"data_options={sizes}", *QUICK_MODEL, "model=tiny:wav2vec2"]
    quick = dict(
        next(e for e in index["entries"] if e["name"] == TINY),
        name="quick",
        overrides=small,
        baseline_overrides=small,
    )
    index["entries"] += [
        quick,
        dict(quick, name="unshipped", recipe="no_such_recipe"),
        dict(quick, name="no-start", overrides=["model=pretrained:tiny-nothing-asr"]),
    ]
    save_index(index, zoo_dir)

    with pytest.raises(ValueError, match="unknown zoo entries"):
        train_zoo(["nope"], zoo_dir, tmp_path / "runs")
    with pytest.raises(ValueError, match=r"no shipped recipe for \['unshipped'\]"):
        train_zoo(["unshipped"], zoo_dir, tmp_path / "runs")
    # A missing start model stops the command before anything is trained.
    with pytest.raises(ValueError, match="unknown pretrained start model 'pretrained:tiny-nothing-asr'"):
        train_zoo(["quick", "no-start"], zoo_dir, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()

    bench = dict(seconds=(1.0,), batch_sizes=(1,), repeats=1, warmup=0, memory=False)
    [entry] = train_zoo(["quick"], zoo_dir, tmp_path / "runs", bench_settings=bench)
    assert entry["status"] == TRAINED and entry["summary"]["steps"] == 2
    assert entry["summary"]["recipe"]["output_dir"] == str(tmp_path / "runs" / "quick")
    # The dense baseline was fine-tuned beside it from the same start model, for as many steps.
    baseline = entry["baseline_summary"]
    assert (
        baseline["recipe"]["output_dir"] == str(tmp_path / "runs" / "quick-dense")
        and baseline["variant"] == "none"
    )
    assert baseline["recipe"]["model"] == entry["summary"]["recipe"]["model"] == "tiny:wav2vec2"
    assert baseline["steps"] == entry["summary"]["steps"] and entry["start_summary"] is None
    assert entry["metrics"]["wer"]["dense"] == baseline["metrics"]["after"]["wer"]
    assert entry["baseline_recipe"] == "demo_asr_dense"
    [pair] = entry["bench"]["pairs"]
    assert pair["dense"] == "dense baseline" and [result["batch_size"] for result in pair["results"]] == [1]
    card = (zoo_dir / "quick" / "README.md").read_text()
    assert "| | Dense baseline | This model | Change |" in card and "| Latency (cpu, batch 1" in card
    assert "`python -m hf_hjprune.train baseline_recipe.yaml`" in card
    assert check_zoo(zoo_dir) == []
    leaderboard = (zoo_dir / "LEADERBOARD.md").read_text()
    dense_wer = (
        f"{100 * baseline['metrics']['after']['wer']:.1f} → **{100 * entry['metrics']['wer']['after']:.1f}**"
    )
    assert "WER % dense → pruned" in leaderboard and dense_wer in leaderboard

    # Again: both finished runs are reused, nothing is trained.
    stamp = (tmp_path / "runs" / "quick-dense" / "summary.json").stat().st_mtime_ns
    train_zoo(["quick"], zoo_dir, tmp_path / "runs", bench_settings=bench)
    assert (tmp_path / "runs" / "quick-dense" / "summary.json").stat().st_mtime_ns == stamp
