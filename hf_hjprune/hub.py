"""Push a training run to the Hugging Face Hub as a model repository: `hjprune push`.

    hjprune push outputs/tiny_asr --repo-id my-org/tiny-wav2vec2-hjmac40

One commit uploads everything a user of the model needs: the run's `model/` folder (weights, config,
remote code, processor files), the generated model card (`README.md`) with its structure plot
(`structure.png`), the full recipe (`recipe.yaml`, and `start_recipe.yaml` when `hf_hjprune` trained
the start model too, `baseline_recipe.yaml` when the card compares with a dense baseline), and the
run's `summary.json` and `bench.json`. The dense baseline is the run's `baseline.json` (written by
`hjprune zoo add --baseline`) or `--baseline DENSE_RUN`:

    hjprune push outputs/zoo/tiny-hubert-synthetic-asr-hjmac40 --repo-id my-org/NAME --baseline outputs/zoo/NAME-dense
The files are staged in a temporary folder: the run folder is only read. The repository then holds
exactly these files; pushing a changed run again makes a new commit (and removes files that the run
no longer has), pushing an unchanged run makes none.

The endpoint and token come from the usual `huggingface_hub` settings (`HF_ENDPOINT`, `HF_TOKEN`,
`hf auth login`) unless given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from huggingface_hub import HfApi, ModelCard, RepoFile, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .cards import (
    BASELINE_RECIPE_FILE,
    RECIPE_FILE,
    START_RECIPE_FILE,
    STRUCTURE_PLOT,
    check_baseline,
    make_model_card,
    plot_structure,
    read_baseline,
    read_run,
    read_start_summary,
    recipe_yaml,
)

DEFAULT_REVISION = "main"
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"


class PushError(RuntimeError):
    """A push that could not be done; the message says why and names the repository."""


@dataclass(frozen=True)
class FileDigest:
    """How the Hub identifies a file's content: its git blob id, and its sha256 for LFS / Xet files."""

    git_sha1: str
    sha256: str

    @classmethod
    def of_file(cls, path: str | os.PathLike) -> FileDigest:
        path = Path(path)
        git_sha1, sha256 = hashlib.sha1(b"blob %d\0" % path.stat().st_size), hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                git_sha1.update(chunk)
                sha256.update(chunk)
        return cls(git_sha1.hexdigest(), sha256.hexdigest())

    def matches(self, remote: RepoFile) -> bool:
        """Whether a file listed by `HfApi.list_repo_tree` has this content."""
        if remote.lfs is not None:  # its blob id is that of the LFS pointer, not of the content
            return remote.lfs.sha256 == self.sha256
        return remote.blob_id == self.git_sha1


def folder_digests(folder: str | os.PathLike) -> dict[str, FileDigest]:
    """`FileDigest` of every file under `folder`, by its path relative to it (with `/`)."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): FileDigest.of_file(path) for path in files}


def write_card_files(
    folder: str | os.PathLike,
    card: ModelCard,
    summary: Mapping[str, Any],
    config: Mapping[str, Any],
    bench: Mapping[str, Any] | None = None,
    start: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> None:
    """Write the files of a model repository that describe its model, all but the `model/` folder.

    `README.md` (the card), `structure.png`, `recipe.yaml`, `summary.json`, and `bench.json`,
    `start_recipe.yaml` and `baseline_recipe.yaml` when there is a bench result, a start run (`start`:
    its summary) or a dense baseline (`baseline`: its summary).
    """
    folder = Path(folder)
    card.save(folder / "README.md")
    plot_structure(config, folder / STRUCTURE_PLOT)
    (folder / RECIPE_FILE).write_text(recipe_yaml(summary["recipe"]), encoding="utf-8")
    if start is not None:  # the card's command that trains the start model reads this file
        (folder / START_RECIPE_FILE).write_text(recipe_yaml(start["recipe"]), encoding="utf-8")
    if baseline is not None:  # the card's command that trains the baseline reads this file
        (folder / BASELINE_RECIPE_FILE).write_text(recipe_yaml(baseline["recipe"]), encoding="utf-8")
    for name, content in (("summary.json", summary), ("bench.json", bench)):
        if content is not None:
            (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def stage_run(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    leaderboard: str | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write the files of a run's Hub repository into `folder`; returns their paths in the repo.

    `model/` is copied to the top level, next to the files of `write_card_files`; `leaderboard` is
    the URL of the zoo's table that the card links to, if any; `baseline`: the dense baseline's
    summary (default: the run's `baseline.json`, if any).
    """
    run_dir, folder = Path(run_dir), Path(folder)
    summary, config, bench = read_run(run_dir)
    baseline = baseline or read_baseline(run_dir)
    shutil.copytree(run_dir / "model", folder, dirs_exist_ok=True)
    card = make_model_card(run_dir, repo_id=repo_id, bench=bench, leaderboard=leaderboard, baseline=baseline)
    write_card_files(folder, card, summary, config, bench, read_start_summary(summary), baseline)
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    revision: str = DEFAULT_REVISION,
    commit_message: str | None = None,
    baseline_dir: str | os.PathLike | None = None,
) -> str:
    """Create `repo_id` if needed and upload a run folder to it in one commit; returns the commit URL.

    Args:
        run_dir: A folder written by `hf_hjprune.train` (`summary.json`, `model/`, optional `bench.json`).
        repo_id: `org/name` of the model repository.
        token: A token with write access; default: `HF_TOKEN` or the one saved by `hf auth login`.
        endpoint: The Hub URL; default: `HF_ENDPOINT` or https://huggingface.co.
        private: Create the repository private (an existing repository keeps its visibility).
        revision: The branch to commit to (created from `main` when missing).
        commit_message: Default: "Upload <name> (hf_hjprune)".
        baseline_dir: A dense run the card compares with (`check_baseline`); default: the run's
            `baseline.json`, if any.

    Raises:
        PushError: Not a run folder, invalid repo id or no token (before any request), or the Hub
            refused or failed the push (with the HTTP status). The run folder is never modified.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(f"invalid repo id {repo_id!r}: {err}") from err
    if "/" not in repo_id:
        raise PushError(f"repo id {repo_id!r} needs a namespace: ORG/NAME or USER/NAME")
    try:
        read_run(run_dir)
        baseline = check_baseline(run_dir, baseline_dir) if baseline_dir is not None else None
    except ValueError as err:
        raise PushError(str(err)) from err
    token = token or get_token()
    if not token:
        raise PushError(NO_TOKEN)

    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload {repo_id.split('/')[-1]} (hf_hjprune)"
    with tempfile.TemporaryDirectory(prefix="hjprune-push-") as staging:
        stage_run(run_dir, staging, repo_id, baseline=baseline)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision != DEFAULT_REVISION:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                commit_message=message,
                delete_patterns="*",
            )
        except HfHubHTTPError as err:
            raise PushError(_http_error_message(err, repo_id)) from err
        except httpx.TransportError as err:
            raise PushError(f"could not reach the Hub at {api.endpoint} to push {repo_id}: {err}") from err
    return info.commit_url


def _http_error_message(err: HfHubHTTPError, repo_id: str) -> str:
    status = err.response.status_code if err.response is not None else None
    detail = f": {err.server_message}" if err.server_message else ""
    if status in (401, 403):
        return (
            f"the Hub refused the push to {repo_id} (HTTP {status}){detail}; check that your token is valid "
            "and has write access to that namespace"
        )
    if status is not None and status >= 500:
        return f"the Hub failed while pushing to {repo_id} (HTTP {status}){detail}; try again later"
    return f"pushing to {repo_id} failed (HTTP {status}){detail}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune push`."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder (summary.json, model/)")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the model repository")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=DEFAULT_REVISION, help="branch to commit to (default: main)")
    parser.add_argument("--commit-message", help="default: 'Upload NAME (hf_hjprune)'")
    parser.add_argument(
        "--baseline",
        metavar="DENSE_RUN",
        help="a dense run from the same start model that the card compares with (default: RUN_DIR/baseline.json)",
    )


def run(args: argparse.Namespace) -> int:
    """Push the run named on the command line; prints the commit URL."""
    try:
        url = push_run(
            args.run_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            baseline_dir=args.baseline,
        )
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(url)
    return 0
