"""`hjprune zoo push` and `hjprune zoo check` against the in-memory Hub server, with the real clients.

The zoo has two trained entries made by the real trainer in seconds: `quick` (pruned beside its dense
baseline, then benchmarked against it, as `hjprune zoo train` does) and `plain` (pruned from a random
initialisation, no dense model to publish).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, constants
from transformers import AutoModelForCTC

import hf_hjprune
from hf_hjprune import zoo
from hf_hjprune.demo import QUICK_MODEL
from hf_hjprune.hub import NO_TOKEN
from hf_hjprune.publish import (
    COLLECTION_TITLE,
    DEFAULT_SPACE_DIR,
    PublishError,
    check_zoo_on_hub,
    collection_items,
    push_zoo,
    zoo_targets,
)
from hf_hjprune.recipes import load_recipe
from hf_hjprune.testing import HubServer, hub_env, run_hub_server
from hf_hjprune.train import train
from hf_hjprune.zoo import load_index, save_index

ORG = "zoo-org"
MODELS = [f"{ORG}/quick-dense", f"{ORG}/quick", f"{ORG}/plain"]
SHARED = [("dataset", f"{ORG}/leaderboard"), ("space", f"{ORG}/hjprune-demo"), ("space", f"{ORG}/README")]
WRITES = ("POST", "PUT", "PATCH", "DELETE")

LOAD = """
import sys
import numpy as np, torch
sys.modules["hf_hjprune"] = None  # the repositories must stand alone (remote code)
from transformers import AutoModelForCTC

audio = torch.from_numpy(np.load(sys.argv[1]))
for repo_id in sys.argv[2:]:
    model = AutoModelForCTC.from_pretrained(repo_id, trust_remote_code=True).eval()
    with torch.no_grad():
        np.save(sys.argv[1] + "." + repo_id.replace("/", "--") + ".npy", model(audio).logits.numpy())
"""


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    # `make test` exports HF_HUB_OFFLINE=1, which the client reads once at import: undo it in-process.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """`(zoo folder, runs root)` of a zoo with the two trained entries `quick` and `plain`."""
    root = tmp_path_factory.mktemp("zoo")
    zoo_dir, runs = root / "zoo", root / "runs"
    sizes = "{num_train: 16, num_validation: 8, num_test: 8, seed: 0, cache_dir: %s}" % (root / "corpus")
    small = ["max_steps=2", "eval_steps=0", f"data_options={sizes}"]
    index = load_index(zoo_dir)
    planned = next(e for e in index["entries"] if e["name"] == "tiny-wav2vec2-synthetic-asr-hjmac40")
    tiny = [*small, *QUICK_MODEL, "model=tiny:wav2vec2"]
    quick = dict(planned, name="quick", repo_id="hf-hjprune/quick", overrides=tiny, baseline_overrides=tiny)
    save_index({"entries": [quick]}, zoo_dir)
    bench = dict(seconds=(1.0,), batch_sizes=(1,), repeats=1, warmup=0, memory=False)
    zoo.train_zoo(["quick"], zoo_dir, runs, bench_settings=bench)
    train(load_recipe("tiny_asr", ["model=tiny:hubert", *small, f"output_dir={runs / 'plain'}"]))
    zoo.add_run(runs / "plain", "plain", zoo_dir=zoo_dir)
    return zoo_dir, runs


@pytest.fixture
def zoo_dir(trained, tmp_path) -> Path:
    """A copy of the trained zoo's folder that a test may change."""
    return Path(shutil.copytree(trained[0], tmp_path / "zoo"))


@pytest.fixture
def runs(trained) -> Path:
    return trained[1]


@pytest.fixture
def server():
    with run_hub_server(token="hf_zoo_push_secret") as hub_server:  # a token in no source file
        yield hub_server


def push(server: HubServer, zoo_dir: Path, runs: Path, lines: list[str] | None = None, **kwargs):
    echo = (lambda line: None) if lines is None else lines.append
    return push_zoo(
        ORG, zoo_dir, runs, token=server.token, endpoint=server.url, echo=echo, **kwargs
    )  # fmt: skip


def check(server: HubServer, zoo_dir: Path, runs: Path) -> tuple[list[str], list[str]]:
    return check_zoo_on_hub(ORG, zoo_dir, runs, token=server.token, endpoint=server.url)


def writes(server: HubServer, since: int = 0) -> list[str]:
    return [request for request in server.requests[since:] if request.startswith(WRITES)]


def commit_counts(server: HubServer) -> dict[tuple[str, str], int]:
    return {repo: len(server.commits(repo[1], repo[0])) for repo in server.repos()}


def test_push_publishes_the_zoo_and_the_models_load(server, zoo_dir, runs, tmp_path):
    # A repo that exists already, with the Hub's LFS rules and a file the zoo does not have.
    api = HfApi(endpoint=server.url, token=server.token)
    api.create_repo(f"{ORG}/plain")
    stale = [CommitOperationAdd(".gitattributes", b"*.bin filter=lfs\n"), CommitOperationAdd("old.bin", b"x")]
    api.create_commit(f"{ORG}/plain", stale, commit_message="by hand")

    report = push(server, zoo_dir, runs)

    assert report.ok and report.failed == report.skipped == {}
    assert server.repos() == [("model", f"{ORG}/plain")] + [("model", m) for m in MODELS[:2]] + SHARED
    assert commit_counts(server) == {**dict.fromkeys(server.repos(), 2), ("model", f"{ORG}/plain"): 3}
    # The model repos: what `hjprune push` uploads, the card from the index linking to the leaderboard.
    for name, repo in (("quick", MODELS[1]), ("plain", MODELS[2]), ("quick-dense", MODELS[0])):
        files = server.files(repo)
        for path in (runs / name / "model").iterdir():
            assert files[path.name] == path.read_bytes(), (repo, path.name)
        assert {"README.md", "structure.png", "recipe.yaml", "summary.json"} <= files.keys()
        assert f'AutoModelForCTC.from_pretrained("{repo}")' in files["README.md"].decode()
    quick, plain = server.files(MODELS[1]), server.files(MODELS[2])
    assert "baseline_recipe.yaml" in quick and "bench.json" in quick and "bench.json" not in plain
    leaderboard_link = f"(https://huggingface.co/datasets/{ORG}/leaderboard)"
    assert leaderboard_link in quick["README.md"].decode() and leaderboard_link in plain["README.md"].decode()
    assert plain[".gitattributes"] == b"*.bin filter=lfs\n" and "old.bin" not in plain
    # The card is the zoo's own (`hjprune zoo build`), for ORG and with the link.
    link_line = f"- **Model zoo:** compare it with the other models in the [leaderboard]{leaderboard_link}\n"
    pushed_card = quick["README.md"].decode().replace(link_line, "").replace(f"{ORG}/", "hf-hjprune/")
    assert pushed_card == (zoo_dir / "quick" / "README.md").read_text()
    index = load_index(zoo_dir)

    # The leaderboard dataset: the zoo's table with Hub links, and the same as JSON.
    board = server.files(f"{ORG}/leaderboard", "dataset")
    assert sorted(board) == ["LEADERBOARD.md", "README.md", "leaderboard.json"]
    records = json.loads(board["leaderboard.json"])
    assert [r["name"] for r in records[:2]] == ["quick", "plain"] and len(records) == len(index["entries"])
    assert records[0]["repo_id"] == MODELS[1] and records[0]["metrics"] == index["entries"][0]["metrics"]
    table = board["LEADERBOARD.md"].decode()
    assert f"[quick](https://huggingface.co/{MODELS[1]})" in table and "## Not trained yet" in table
    assert (
        board["README.md"].decode().endswith(table)
        and "data_files: leaderboard.json" in board["README.md"].decode()
    )

    # The Space: the app, the package it imports, models.json pairing each model with its dense baseline.
    space = server.files(f"{ORG}/hjprune-demo", "space")
    assert json.loads(space["models.json"]) == [
        {"name": "quick: dense baseline vs pruned", "task": "asr", "original": MODELS[0], "pruned": MODELS[1]}
    ]
    assert space["app.py"] == (DEFAULT_SPACE_DIR / "app.py").read_bytes()
    package = Path(hf_hjprune.__file__).parent
    assert space["hf_hjprune/zoo.py"] == (package / "zoo.py").read_bytes()
    assert space["hf_hjprune/reporting.py"] == (package / "reporting.py").read_bytes()  # app.py imports it
    assert "hf_hjprune/recipes/tiny_asr.yaml" in space and not any("__pycache__" in p for p in space)
    assert f"models:\n- {MODELS[1]}\n- {MODELS[0]}\n" in space["README.md"].decode()
    assert HfApi(endpoint=server.url).space_info(f"{ORG}/hjprune-demo").sdk == "gradio"

    # The organisation card and the collection.
    org_card = server.files(f"{ORG}/README", "space")["README.md"].decode()
    assert "sdk: static" in org_card and f"[quick](https://huggingface.co/{MODELS[1]})" in org_card
    [collection] = server.collections()
    assert (collection.title, collection.namespace) == (COLLECTION_TITLE, ORG)
    assert [(i["type"], i["id"]) for i in collection.items] == [
        ("model", MODELS[1]),
        ("model", MODELS[2]),
        ("model", MODELS[0]),
        ("dataset", f"{ORG}/leaderboard"),
        ("space", f"{ORG}/hjprune-demo"),
    ]
    assert collection.items[0]["note"].startswith("wav2vec 2.0, hj-mac 40%: WER ")
    assert collection.items[2]["note"] == "Dense baseline of quick"
    assert api.get_collection(collection.slug).items[1].item_id == MODELS[2]  # the client reads it back

    # The token is only ever sent: it is in no file on the Hub.
    for repo_type, repo_id in server.repos():
        assert not any(server.token.encode() in data for data in server.files(repo_id, repo_type).values())

    # Loading the pushed models gives the logits of the local runs.
    audio = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
    np.save(tmp_path / "audio.npy", audio)
    env = {**os.environ, **hub_env(server, tmp_path / "hf_home")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "audio.npy"), *MODELS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name, repo in zip(("quick-dense", "quick", "plain"), MODELS):
        local = AutoModelForCTC.from_pretrained(runs / name / "model").eval()
        with torch.no_grad():
            expected = local(torch.from_numpy(audio)).logits.numpy()
        pushed = np.load(tmp_path / f"audio.npy.{repo.replace('/', '--')}.npy")
        np.testing.assert_allclose(pushed, expected, rtol=1e-5, atol=1e-5)


def test_second_push_makes_no_commit_and_a_changed_card_one(server, zoo_dir, runs):
    push(server, zoo_dir, runs)
    counts, since = commit_counts(server), len(server.requests)
    lines = []
    assert push(server, zoo_dir, runs, lines).ok
    assert writes(server, since) == [] and commit_counts(server) == counts
    assert all(line.endswith(": up to date") for line in lines), lines

    # A change that shows in one card only (the training time): one commit, to that repository.
    index = json.loads((zoo_dir / "zoo.json").read_text())
    plain = next(e for e in index["entries"] if e["name"] == "plain")
    plain["summary"]["train_seconds"] = 4321.0
    (zoo_dir / "zoo.json").write_text(json.dumps(index))
    lines = []
    push(server, zoo_dir, runs, lines, dry_run=True)
    assert f"model {ORG}/plain: 0 to add, 2 to change, 0 to remove" in lines
    assert "  ~ README.md" in lines and "  ~ summary.json" in lines
    report = push(server, zoo_dir, runs)
    assert list(report.commits) == [f"model {ORG}/plain"] and report.ok
    assert commit_counts(server) == {
        **counts,
        ("model", f"{ORG}/plain"): counts[("model", f"{ORG}/plain")] + 1,
    }
    assert "72 min" in server.files(f"{ORG}/plain")["README.md"].decode()
    last = server.commits(f"{ORG}/plain")[-1]
    assert last.title == "Update model (hjprune zoo push)" and "~ README.md" in last.description


def test_dry_run_writes_nothing(server, zoo_dir, runs):
    lines = []
    report = push(server, zoo_dir, runs, lines, dry_run=True)
    assert report.commits == {} and writes(server) == [] and server.repos() == []
    assert f"model {ORG}/quick: create the repository, " in "\n".join(lines)
    assert "  + model.safetensors" in lines and "  + hf_hjprune/publish.py" in lines
    assert f"collection {COLLECTION_TITLE!r}: create it, 5 items to add, 0 notes to update" in lines


def test_failure_on_one_repo_leaves_a_state_that_a_rerun_finishes(server, zoo_dir, runs):
    server.set_failure(500, repo=f"{ORG}/quick", match="/commit/")
    lines = []
    report = push(server, zoo_dir, runs, lines)
    assert not report.ok and list(report.failed) == [f"model {ORG}/quick"]
    assert "HTTP 500" in report.failed[f"model {ORG}/quick"]
    # The repo was created but holds nothing; what needs it waits; the rest is published.
    assert server.files(f"{ORG}/quick") == {} and len(server.commits(f"{ORG}/quick")) == 1
    assert set(report.skipped) == {
        f"Space {ORG}/hjprune-demo",
        f"organisation card {ORG}/README",
        "collection",
    }
    assert set(report.commits) == {
        f"dense baseline {ORG}/quick-dense",
        f"model {ORG}/plain",
        f"leaderboard {ORG}/leaderboard",
    }
    assert ("space", f"{ORG}/hjprune-demo") not in server.repos() and server.collections() == []

    server.set_failure(None)
    report = push(server, zoo_dir, runs)
    assert report.ok and set(report.commits) == {
        f"model {ORG}/quick",
        f"Space {ORG}/hjprune-demo",
        f"organisation card {ORG}/README",
    }
    assert len(server.collections()[0].items) == 5 and check(server, zoo_dir, runs)[0] == []
    since = len(server.requests)
    assert push(server, zoo_dir, runs).ok and writes(server, since) == []


def test_check_reports_drift(server, zoo_dir, runs, tmp_path):
    assert check(server, zoo_dir, runs)[0] == [
        *(f"missing repo: {kind} {repo}" for kind, repo in zip(("dense baseline", "model", "model"), MODELS)),
        f"missing repo: leaderboard {ORG}/leaderboard",
        f"missing repo: Space {ORG}/hjprune-demo",
        f"missing repo: organisation card {ORG}/README",
        f"missing collection: {COLLECTION_TITLE!r} of {ORG}",
    ]
    push(server, zoo_dir, runs)
    assert check(server, zoo_dir, runs) == ([], [])

    api = HfApi(endpoint=server.url, token=server.token)
    api.delete_file("structure.png", f"{ORG}/quick")
    api.upload_file(path_or_fileobj=b"# edited by hand\n", path_in_repo="README.md", repo_id=f"{ORG}/plain")
    api.upload_file(
        path_or_fileobj=b"{}", path_in_repo="notes.json", repo_id=f"{ORG}/leaderboard", repo_type="dataset"
    )
    collection = server.collections()[0]
    api.update_collection_item(collection.slug, collection.items[0]["_id"], note="edited")
    assert check(server, zoo_dir, runs)[0] == [
        f"missing file: model {ORG}/quick: structure.png",
        f"stale card: model {ORG}/plain: README.md",
        f"extra file: leaderboard {ORG}/leaderboard: notes.json",
        f"stale collection note: model {ORG}/quick",
    ]

    # Without the run folders, the model files are compared with the hashes zoo.json records.
    api.upload_file(
        path_or_fileobj=b"not the weights", path_in_repo="model.safetensors", repo_id=f"{ORG}/plain"
    )
    drift, notes = check(server, zoo_dir, tmp_path / "no-runs")
    assert f"weights differ: model {ORG}/plain: model.safetensors" in drift
    assert (
        f"model {ORG}/plain: model files compared with hashes from zoo.json (no finished run folder at {tmp_path / 'no-runs' / 'plain'})"
        in notes
    )
    assert not any("quick-dense" in line for line in drift)  # it cannot be made here: not compared

    report = push(server, zoo_dir, runs)
    assert report.ok and set(report.commits) == {
        f"model {ORG}/quick",
        f"model {ORG}/plain",
        f"leaderboard {ORG}/leaderboard",
    }
    assert check(server, zoo_dir, runs) == ([], [])


def test_only_pushes_the_named_entries(server, zoo_dir, runs, tmp_path):
    report = push(server, zoo_dir, runs, only=["plain"])
    assert report.ok
    assert [repo for kind, repo in server.repos() if kind == "model"] == [f"{ORG}/plain"]
    # The shared parts list what is on the Hub: no pair for the Space, no `quick` in the collection.
    assert json.loads(server.files(f"{ORG}/hjprune-demo", "space")["models.json"]) == []
    assert [i["id"] for i in server.collections()[0].items] == [
        MODELS[2],
        f"{ORG}/leaderboard",
        f"{ORG}/hjprune-demo",
    ]
    # Entries outside --only need no run folder.
    shutil.copytree(runs / "plain", tmp_path / "runs" / "plain")
    assert push(server, zoo_dir, tmp_path / "runs", only=["plain"]).commits == {}


def test_bad_input_writes_nothing(server, zoo_dir, runs, tmp_path, monkeypatch):
    with pytest.raises(PublishError, match=r"not trained zoo entries: \['nope'\]"):
        push(server, zoo_dir, runs, only=["nope"])
    with pytest.raises(
        PublishError, match=r"cannot push dense baseline .*quick-dense: no finished run folder"
    ):
        push(server, zoo_dir, tmp_path / "no-runs")
    # A run folder whose weights are not those the index records.
    other = tmp_path / "runs"
    for name in ("quick-dense", "plain"):
        shutil.copytree(runs / name, other / name)
    shutil.copytree(runs / "plain", other / "quick")
    with pytest.raises(PublishError, match="holds other model files than zoo entry 'quick'"):
        push(server, zoo_dir, other)
    with pytest.raises(PublishError, match="no Space at"):
        push(server, zoo_dir, runs, space_dir=tmp_path)
    with pytest.raises(PublishError, match=f"could not read dense baseline {ORG}/quick-dense .*401"):
        push_zoo(ORG, zoo_dir, runs, token="hf_wrong", endpoint=server.url, echo=print)
    assert writes(server) == []

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    requests = len(server.requests)
    with pytest.raises(PublishError, match=NO_TOKEN.replace("`", ".")):
        push_zoo(ORG, zoo_dir, runs, endpoint=server.url)
    assert len(server.requests) == requests


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    zoo.add_arguments(parser)
    return zoo.run(parser.parse_args(list(argv)))


def test_cli(server, zoo_dir, runs, monkeypatch, capsys, caplog):
    # The CLI takes the endpoint and token from the standard settings.
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", server.token)
    common = ["--org", ORG, "--runs-root", str(runs)]
    assert _cli("--zoo-dir", str(zoo_dir), "push", *common, "--dry-run") == 0 and writes(server) == []
    assert "create the repository" in capsys.readouterr().out
    assert _cli("--zoo-dir", str(zoo_dir), "check", *common) == 1
    assert f"missing repo: model {ORG}/quick" in capsys.readouterr().out
    assert _cli("--zoo-dir", str(zoo_dir), "push", *common) == 0
    assert f"collection: {server.url}/collections/{ORG}/" in capsys.readouterr().out
    assert _cli("--zoo-dir", str(zoo_dir), "check", *common) == 0
    assert "0 differences" in capsys.readouterr().err

    api = HfApi(endpoint=server.url, token=server.token)
    api.delete_file("LEADERBOARD.md", f"{ORG}/leaderboard", repo_type="dataset")
    server.set_failure(500, repo=f"{ORG}/leaderboard", match="/commit/")
    assert _cli("--zoo-dir", str(zoo_dir), "push", *common, "--no-org-card") == 1
    output = capsys.readouterr()
    assert "leaderboard zoo-org/leaderboard: failed: the Hub failed while pushing" in output.out
    assert "run the same command again to finish" in output.err
    server.set_failure(None)
    assert _cli("--zoo-dir", str(zoo_dir), "push", *common, "--only", "nope") == 1
    assert "error: not trained zoo entries: ['nope']" in capsys.readouterr().err
    assert server.token not in caplog.text


def test_dense_models_that_are_entries_or_on_the_hub(trained, tmp_path):
    zoo_dir, runs = trained
    entries = {e["name"]: e for e in load_index(zoo_dir)["entries"]}
    # The dense baseline of `quick` as an entry of its own, and `plain` pruned from a Hub checkpoint.
    dense = dict(entries["plain"], name="quick-dense", repo_id="hf-hjprune/quick-dense")
    plain = dict(entries["plain"], base_model="facebook/hubert-base-ls960")
    save_index({"entries": [entries["quick"], dense, plain]}, tmp_path)
    zoo_ = zoo_targets(load_index(tmp_path), ORG, runs)
    assert [(t.kind, t.repo_id) for t in zoo_.models] == [
        ("model", m) for m in (MODELS[1], MODELS[0], MODELS[2])
    ]
    assert zoo_.starts == {"quick": MODELS[0], "quick-dense": None, "plain": "facebook/hubert-base-ls960"}
    assert zoo_.external == {"facebook/hubert-base-ls960": ["plain"]}
    items = collection_items(zoo_, set(MODELS) | {"facebook/hubert-base-ls960"})
    assert [(i.item_id, i.note) for i in items[3:5]] == [
        ("facebook/hubert-base-ls960", "Start model of plain"),
        (f"{ORG}/leaderboard", "Every model's numbers, as a table and JSON"),
    ]
    assert [i.item_id for i in items[:3]] == [MODELS[1], MODELS[0], MODELS[2]]  # quick-dense is an entry
