"""`hjprune push` against the in-memory Hub server, with the real huggingface_hub and transformers clients."""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, constants
from test_cards import make_dense_baseline
from transformers import AutoModelForCTC, Wav2Vec2Processor

from hf_hjprune import hub
from hf_hjprune.bench import benchmark_pair, load_model
from hf_hjprune.hub import NO_TOKEN, PushError, push_run
from hf_hjprune.recipes import load_recipe
from hf_hjprune.testing import HubServer, hub_env, run_hub_server
from hf_hjprune.train import train

REPO = "org/tiny-asr"
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "configuration_hjpruned.py",
    "modeling_hjpruned_common.py",
    "modeling_hjpruned_wav2vec2.py",
    "processor_config.json",
    "tokenizer_config.json",
    "vocab.json",
}
CARD_FILES = {"README.md", "structure.png", "recipe.yaml", "summary.json"}

LOAD = """
import json, sys
import numpy as np, torch

mode, repo_id, audio_path, logits_path = sys.argv[1:]
if mode == "remote-code":
    sys.modules["hf_hjprune"] = None  # the package is installed here: make sure nothing imports it
    kwargs = {"trust_remote_code": True}
else:
    import hf_hjprune  # noqa: F401
    kwargs = {}
from huggingface_hub import ModelCard
from transformers import AutoModelForCTC, AutoProcessor

model = AutoModelForCTC.from_pretrained(repo_id, **kwargs).eval()
processor = AutoProcessor.from_pretrained(repo_id)
inputs = processor(np.load(audio_path), sampling_rate=16000, return_tensors="pt")
with torch.no_grad():
    np.save(logits_path, model(inputs.input_values).logits.numpy())
card = ModelCard.load(repo_id)
results = {r.metric_type: [r.metric_value, r.dataset_split] for r in card.data.eval_results}
with open(logits_path + ".json", "w") as f:
    json.dump({"class": type(model).__module__, "results": results, "text": card.text}, f)
"""


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    # `make test` exports HF_HUB_OFFLINE=1, which the client reads once at import: undo it in-process.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny ASR run of the real trainer (2 steps on a few synthetic utterances)."""
    root = tmp_path_factory.mktemp("tiny_run")
    sizes = "{num_train: 16, num_validation: 8, num_test: 8, seed: 0, cache_dir: %s}" % (root / "corpus")
    overrides = [f"data_options={sizes}", "max_steps=2", "eval_steps=0", f"output_dir={root / 'run'}"]
    train(load_recipe("tiny_asr", overrides))
    return root / "run"


@pytest.fixture
def server():
    with run_hub_server() as hub_server:
        yield hub_server


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def load_in_subprocess(
    server: HubServer, mode: str, tmp_path: Path, audio: np.ndarray
) -> tuple[dict, np.ndarray]:
    np.save(tmp_path / "audio.npy", audio)
    logits_path = tmp_path / f"{mode}.npy"  # and {mode}.npy.json for the rest
    env = {**os.environ, **hub_env(server, tmp_path / f"hf_home_{mode}")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD, mode, REPO, str(tmp_path / "audio.npy"), str(logits_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(Path(f"{logits_path}.json").read_text()), np.load(logits_path)


def test_push_then_load_through_the_hub(run_dir, server, tmp_path):
    before = folder_digest(run_dir)
    url = push_run(run_dir, REPO, token=server.token, endpoint=server.url)

    commits = server.commits(REPO)
    assert len(commits) == 2 and url == f"{server.url}/{REPO}/commit/{commits[-1].oid}"  # create + one upload
    files = server.files(REPO)
    assert set(files) == MODEL_FILES | CARD_FILES
    for name in MODEL_FILES:
        assert files[name] == (run_dir / "model" / name).read_bytes()
    assert files["summary.json"] == (run_dir / "summary.json").read_bytes()
    assert files["structure.png"].startswith(b"\x89PNG")
    assert folder_digest(run_dir) == before

    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    model = AutoModelForCTC.from_pretrained(run_dir / "model").eval()
    inputs = Wav2Vec2Processor.from_pretrained(run_dir / "model")(
        audio, sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(inputs.input_values).logits.numpy()

    summary = json.loads((run_dir / "summary.json").read_text())
    after = summary["metrics"]["after"]
    for mode, module_prefix in (("package", "hf_hjprune.models."), ("remote-code", "transformers_modules.")):
        loaded, logits = load_in_subprocess(server, mode, tmp_path, audio)
        assert loaded["class"].startswith(module_prefix)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        assert loaded["results"] == {
            "wer": [round(100 * after["wer"], 2), "test"],
            "cer": [round(100 * after["cer"], 2), "test"],
        }
        assert f'AutoModelForCTC.from_pretrained("{REPO}")' in loaded["text"]


def test_push_again_updates_the_repo(run_dir, server, tmp_path):
    first = push_run(run_dir, REPO, token=server.token, endpoint=server.url)
    assert push_run(run_dir, REPO, token=server.token, endpoint=server.url) == first  # unchanged: no commit
    assert len(server.commits(REPO)) == 2

    # The same run with a benchmark result: a new commit adds bench.json and the latency to the card.
    benched = tmp_path / "benched"
    shutil.copytree(run_dir, benched)
    model = load_model(str(run_dir / "model"))  # timed against itself: only the result's shape matters here
    bench = benchmark_pair(model, model, seconds=[0.5], batch_sizes=[1], repeats=1, warmup=0, memory=False)
    (benched / "bench.json").write_text(json.dumps(bench))
    second = push_run(benched, REPO, token=server.token, endpoint=server.url, commit_message="Add benchmark")
    commits = server.commits(REPO)
    assert second != first and len(commits) == 3 and commits[-1].title == "Add benchmark"
    files = server.files(REPO)
    assert (
        json.loads(files["bench.json"]) == bench
        and b"| Latency (cpu, batch 1, 0.5 s audio)" in files["README.md"]
    )
    assert server.files(REPO, revision=commits[1].oid).keys() == files.keys() - {"bench.json"}

    # Pushing the run without it again: the repo mirrors the run, bench.json goes.
    push_run(run_dir, REPO, token=server.token, endpoint=server.url)
    assert len(server.commits(REPO)) == 4 and "bench.json" not in server.files(REPO)

    # With a dense baseline: the card compares with it and its recipe is uploaded; the run folder is only read.
    before = folder_digest(run_dir)
    dense = make_dense_baseline(run_dir, tmp_path / "dense")
    push_run(run_dir, REPO, token=server.token, endpoint=server.url, baseline_dir=dense)
    files = server.files(REPO)
    assert b"| | Dense baseline | This model | Change |" in files["README.md"]
    assert (
        yaml.safe_load(files["baseline_recipe.yaml"])
        == json.loads((dense / "summary.json").read_text())["recipe"]
    )
    assert folder_digest(run_dir) == before
    with pytest.raises(PushError, match="cannot be the dense baseline .*it is a pruning run"):
        push_run(run_dir, REPO, token=server.token, endpoint=server.url, baseline_dir=run_dir)


def test_server_error_is_clear_and_leaves_the_run_intact(run_dir, server):
    before = folder_digest(run_dir)
    server.set_failure(500, match="/commit/")
    start = time.monotonic()
    with pytest.raises(PushError, match=rf"failed while pushing to {REPO} \(HTTP 500\)"):
        push_run(run_dir, REPO, token=server.token, endpoint=server.url)
    assert time.monotonic() - start < 10
    assert folder_digest(run_dir) == before
    assert len(server.commits(REPO)) == 1  # the repo was created, nothing was committed


def test_refused_token(run_dir, server):
    with pytest.raises(PushError, match=rf"refused the push to {REPO} \(HTTP 401\)"):
        push_run(run_dir, REPO, token="hf_wrong", endpoint=server.url)
    with run_hub_server(read_token="hf_read") as read_only:
        with pytest.raises(PushError, match=rf"refused the push to {REPO} \(HTTP 403\)"):
            push_run(run_dir, REPO, token="hf_read", endpoint=read_only.url)


def test_missing_token_fails_before_any_request(run_dir, server, monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, endpoint=server.url)
    assert str(err.value) == NO_TOKEN
    assert server.requests == []


def test_bad_input_fails_before_any_request(run_dir, server, tmp_path):
    with pytest.raises(PushError, match="summary.json is missing"):
        push_run(tmp_path, REPO, token=server.token, endpoint=server.url)
    with pytest.raises(PushError, match="needs a namespace"):
        push_run(run_dir, "tiny-asr", token=server.token, endpoint=server.url)
    with pytest.raises(PushError, match="invalid repo id"):
        push_run(run_dir, "org/bad name", token=server.token, endpoint=server.url)
    assert server.requests == []


def test_cli(run_dir, server, monkeypatch, capsys):
    # The CLI takes the endpoint and token from the standard settings.
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", server.token)
    parser = argparse.ArgumentParser()
    hub.add_arguments(parser)
    args = parser.parse_args([str(run_dir), "--repo-id", REPO, "--private", "--commit-message", "First"])
    assert hub.run(args) == 0
    assert capsys.readouterr().out.strip() == f"{server.url}/{REPO}/commit/{server.commits(REPO)[-1].oid}"
    assert server.commits(REPO)[-1].title == "First"
    assert HfApi(endpoint=server.url, token=server.token).model_info(REPO).private

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert hub.run(args) == 1
    assert capsys.readouterr().err.startswith(f"error: the Hub refused the push to {REPO} (HTTP 401)")
