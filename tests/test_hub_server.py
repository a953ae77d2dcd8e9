"""The in-memory Hub server, driven by the real `huggingface_hub` client (and transformers in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from safetensors.numpy import save_file

from hf_hjprune.testing import HubServer, hub_env, run_hub_server

README = textwrap.dedent(
    """\
    ---
    license: apache-2.0
    library_name: transformers
    pipeline_tag: automatic-speech-recognition
    tags:
    - hj-pruning
    ---
    # Pruned wav2vec2
    """
)


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    # `make test` exports HF_HUB_OFFLINE=1, which the client reads once at import: undo it in-process.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # With hf_xet installed, upload_folder takes a pipelined path that retries commits on 5xx.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with run_hub_server() as server:
        yield server


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.token)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "hidden_size": 8}))
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(folder / "model.safetensors"))
    (folder / "README.md").write_text(README)
    return folder


def _download(hub: HubServer, repo_id: str, filename: str, cache: Path, **kwargs: object) -> bytes:
    path = hf_hub_download(repo_id, filename, endpoint=hub.url, token=hub.token, cache_dir=cache, **kwargs)
    return Path(path).read_bytes()


def test_whoami_and_bad_tokens(hub: HubServer, api: HfApi) -> None:
    assert api.whoami()["name"] == "test-user"
    bad = HfApi(endpoint=hub.url, token="hf_wrong")
    for call in (bad.whoami, lambda: bad.create_repo("org/name"), lambda: bad.model_info("org/name")):
        with pytest.raises(HfHubHTTPError) as err:
            call()
        assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=False).create_repo("org/name")
    assert err.value.response.status_code == 401


def test_read_only_token_cannot_write(model_dir: Path) -> None:
    with run_hub_server(read_token="hf_read") as hub:
        HfApi(endpoint=hub.url, token=hub.token).create_repo("org/name")
        reader = HfApi(endpoint=hub.url, token="hf_read")
        assert reader.model_info("org/name").id == "org/name"
        with pytest.raises(HfHubHTTPError) as err:
            reader.upload_folder(repo_id="org/name", folder_path=model_dir)
        assert err.value.response.status_code == 403


def test_create_repo_exist_ok(hub: HubServer, api: HfApi) -> None:
    url = api.create_repo("org/name")
    assert (url.repo_id, url.repo_type, str(url)) == ("org/name", "model", f"{hub.url}/org/name")
    assert api.create_repo("org/name", exist_ok=True).repo_id == "org/name"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("org/name")
    assert err.value.response.status_code == 409
    assert api.create_repo("name").repo_id == "test-user/name"  # no namespace -> the user's


def test_upload_folder_info_and_download(hub: HubServer, api: HfApi, model_dir: Path, tmp_path: Path) -> None:
    api.create_repo("org/name")
    info = api.upload_folder(repo_id="org/name", folder_path=model_dir, commit_message="Add model")

    commits = hub.commits("org/name")
    assert [c.title for c in commits] == ["initial commit", "Add model"]
    assert info.oid == commits[-1].oid
    assert info.commit_url == f"{hub.url}/org/name/commit/{info.oid}"
    expected = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    assert hub.files("org/name") == expected
    assert not any("lfs" in r or "xet" in r for r in hub.requests)

    model = api.model_info("org/name", files_metadata=True)
    assert model.sha == info.oid
    assert {s.rfilename: s.size for s in model.siblings} == {k: len(v) for k, v in expected.items()}
    assert model.card_data.license == "apache-2.0"
    assert (model.pipeline_tag, model.library_name, model.tags) == (
        "automatic-speech-recognition",
        "transformers",
        ["hj-pruning"],
    )
    assert sorted(f.path for f in api.list_repo_tree("org/name")) == sorted(expected)
    assert api.file_exists("org/name", "model.safetensors")
    assert not api.file_exists("org/name", "missing.bin")

    cache = tmp_path / "cache"
    assert _download(hub, "org/name", "model.safetensors", cache) == expected["model.safetensors"]
    assert _download(hub, "org/name", "config.json", cache, revision=info.oid) == expected["config.json"]
    with pytest.raises(EntryNotFoundError):
        _download(hub, "org/name", "missing.bin", cache)
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, "org/other", "config.json", cache)


def test_second_upload_and_delete(hub: HubServer, api: HfApi, model_dir: Path, tmp_path: Path) -> None:
    api.create_repo("org/name")
    first = api.upload_folder(repo_id="org/name", folder_path=model_dir)
    # Unchanged files are skipped by the client (the preupload answer carries their git oid).
    assert api.upload_folder(repo_id="org/name", folder_path=model_dir).oid == first.oid

    (model_dir / "config.json").write_text('{"model_type": "wav2vec2", "hidden_size": 16}')
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "extra.txt").write_text("extra")
    second = api.upload_folder(repo_id="org/name", folder_path=model_dir)
    assert second.oid != first.oid
    assert json.loads(hub.files("org/name")["config.json"])["hidden_size"] == 16
    assert hub.files("org/name", revision=first.oid)["config.json"] != hub.files("org/name")["config.json"]
    assert _download(hub, "org/name", "sub/extra.txt", tmp_path / "cache") == b"extra"
    assert sorted(f.path for f in api.list_repo_tree("org/name", path_in_repo="sub")) == ["sub/extra.txt"]

    third = api.create_commit(
        "org/name",
        [CommitOperationDelete("model.safetensors"), CommitOperationDelete("sub/")],
        commit_message="Delete weights",
    )
    assert third.oid not in (first.oid, second.oid)
    assert sorted(hub.files("org/name")) == ["README.md", "config.json"]
    assert hub.commits("org/name")[-1].title == "Delete weights"
    with pytest.raises(EntryNotFoundError):
        _download(hub, "org/name", "model.safetensors", tmp_path / "cache2")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("model.safetensors", "org/name")


def test_injected_failures(hub: HubServer, api: HfApi, model_dir: Path) -> None:
    api.create_repo("org/name")
    for match in (None, "/commit/"):
        hub.set_failure(500, match=match)
        start = time.monotonic()
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_folder(repo_id="org/name", folder_path=model_dir)
        assert err.value.response.status_code == 500
        assert time.monotonic() - start < 5  # neither validate-yaml nor commit are retried here
    assert api.model_info("org/name").id == "org/name"  # reads still work
    hub.set_failure(503, all_requests=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info("org/name")
    assert err.value.response.status_code == 503
    hub.set_failure(None)
    api.upload_folder(repo_id="org/name", folder_path=model_dir)
    assert len(hub.commits("org/name")) == 2


def test_spaces_datasets_and_private_repos(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("org/demo", repo_type="space", space_sdk="gradio")
    readme = b"---\ntitle: Demo\nsdk: gradio\nsdk_version: 5.0.0\napp_file: app.py\n---\n"
    api.create_commit(
        "org/demo",
        [CommitOperationAdd("app.py", b"print('hi')\n"), CommitOperationAdd("README.md", readme)],
        commit_message="Add app",
        repo_type="space",
    )
    space = api.space_info("org/demo")
    assert (space.sdk, space.card_data.app_file) == ("gradio", "app.py")
    assert sorted(s.rfilename for s in space.siblings) == ["README.md", "app.py"]
    assert _download(hub, "org/demo", "app.py", tmp_path / "c", repo_type="space") == b"print('hi')\n"

    api.create_repo("org/data", repo_type="dataset", private=True)
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id="org/data", repo_type="dataset"
    )
    assert hub.files("org/data", repo_type="dataset") == {"data.csv": b"a,b\n1,2\n"}
    assert api.dataset_info("org/data").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).dataset_info("org/data")

    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(
            path_or_fileobj=b"---\n- a list\n---\n",
            path_in_repo="README.md",
            repo_id="org/demo",
            repo_type="space",
        )


SUBPROCESS_CLIENT = """
import sys
from huggingface_hub import ModelCard, constants
from transformers import AutoConfig

assert not constants.HF_HUB_OFFLINE and constants.ENDPOINT.startswith("http://127.0.0.1:")
config = AutoConfig.from_pretrained(sys.argv[1])
card = ModelCard.load(sys.argv[1])
print(config.model_type, config.hidden_size, card.data.license, card.data.pipeline_tag)
"""


def test_transformers_and_model_card_in_subprocess(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config

    folder = tmp_path / "w2v2"
    Wav2Vec2Config(hidden_size=48, num_attention_heads=4).save_pretrained(folder)
    (folder / "README.md").write_text(README)
    api.create_repo("org/w2v2")
    api.upload_folder(repo_id="org/w2v2", folder_path=folder)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **hub_env(hub, tmp_path / "hf_home")}
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_CLIENT, "org/w2v2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wav2vec2", "48", "apache-2.0", "automatic-speech-recognition"]
    assert (tmp_path / "hf_home" / "hub" / "models--org--w2v2").is_dir()
    # transformers resolves "main" to a commit sha with model_info, then downloads at that sha.
    assert any(r.startswith("GET /org/w2v2/resolve/") and r.endswith("/config.json") for r in hub.requests)


def test_collections(hub: HubServer, api: HfApi) -> None:
    api.create_repo("org/model")
    api.create_repo("org/demo", repo_type="space", space_sdk="gradio")
    created = api.create_collection("Model zoo", namespace="org", description="All of it")
    slug = created.slug
    assert slug.startswith("org/model-zoo-") and (created.title, created.items) == ("Model zoo", [])
    api.add_collection_item(slug, "org/model", "model", note="first")
    collection = api.add_collection_item(slug, "org/demo", "space")
    assert [(i.item_id, i.item_type, i.note) for i in collection.items] == [
        ("org/model", "model", "first"),
        ("org/demo", "space", None),
    ]
    for item_id, status in (("org/missing", 404), ("org/model", 409)):  # items must exist, once
        with pytest.raises(HfHubHTTPError) as err:
            api.add_collection_item(slug, item_id, "model")
        assert err.value.response.status_code == status
    assert len(api.add_collection_item(slug, "org/model", "model", exists_ok=True).items) == 2
    assert api.create_collection("Model zoo", namespace="org", exists_ok=True).slug == slug

    [listed] = api.list_collections(owner="org")
    assert listed.slug == slug and list(api.list_collections(owner="someone")) == []
    assert [c.slug for c in api.list_collections(item="spaces/org/demo")] == [slug]
    assert list(api.list_collections(item="models/org/demo")) == []

    api.update_collection_item(slug, collection.items[0].item_object_id, note="second", position=1)
    assert [(i.item_id, i.note) for i in api.get_collection(slug).items] == [
        ("org/demo", None),
        ("org/model", "second"),
    ]
    assert api.update_collection_metadata(slug, description="Renewed").description == "Renewed"
    api.delete_collection_item(slug, collection.items[1].item_object_id)
    assert [i.item_id for i in api.get_collection(slug).items] == ["org/model"]
    assert [c.slug for c in hub.collections()] == [slug]

    private = api.create_collection("Hidden", namespace="org", private=True)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=False).get_collection(private.slug)
    assert err.value.response.status_code == 404
    api.delete_collection(slug)
    api.delete_collection(slug, missing_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.get_collection(slug)
    assert err.value.response.status_code == 404


def test_failure_injected_on_one_repo(hub: HubServer, api: HfApi, model_dir: Path) -> None:
    for repo in ("org/a", "org/ab"):
        api.create_repo(repo)
    hub.set_failure(500, repo="org/a", match="/commit/")
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id="org/a", folder_path=model_dir)
    assert err.value.response.status_code == 500
    api.upload_folder(repo_id="org/ab", folder_path=model_dir)  # another repo, even with a longer name
    assert api.model_info("org/a").sha == hub.commits("org/a")[0].oid  # reads of it still work
    assert len(hub.commits("org/a")) == 1 and len(hub.commits("org/ab")) == 2
