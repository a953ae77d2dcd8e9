"""Publish the model zoo on the Hub in one command, and check what is there: `hjprune zoo push/check`.

    hjprune zoo push --org ORG --dry-run      # the plan: per repository, the files added, changed, removed
    hjprune zoo push --org ORG                # publish everything below, or bring it up to date
    hjprune zoo push --org ORG --only NAME    # one entry's repositories, then the shared parts
    hjprune zoo check --org ORG               # what on the Hub differs from model_cards/zoo.json

A push publishes, from `model_cards/zoo.json` and the run folders under `outputs/zoo`:

1. per trained entry, the model repository `ORG/<name>`: the run's `model/` folder and the other files of
   `hjprune push`, the card regenerated from the index (as `hjprune zoo build` does) with a link to
   the leaderboard;
2. per dense model an entry is compared with, trained by `hf_hjprune`, its own model repository, so that
   the Space can load both models of a pair: the entry's dense baseline (the `<name>-dense` run of
   `hjprune zoo train`), else the start model it was pruned from when `hf_hjprune` trained it; when that
   run is itself an entry of the zoo, that entry's repository;
3. the leaderboard: the dataset `ORG/leaderboard` with `README.md`, `LEADERBOARD.md` and `leaderboard.json`;
4. the Space `ORG/hjprune-demo`: `spaces/hjprune-demo` and the `hf_hjprune` package it imports, with a
   `models.json` that pairs each published model with its published dense model;
5. the organisation card (the `ORG/README` Space): a headline table of the published models and links;
6. the collection "hf_hjprune model zoo" of ORG: the models, their dense models (Hub checkpoints too),
   the leaderboard and the Space.

Idempotent and safe: the files of every repository are staged locally and compared with the remote tree
by hash (git blob id, or sha256 for LFS / Xet files) before anything is written. A repository that is
up to date gets no request that writes; one that differs gets exactly one commit (`create_commit` with
the compared head as its parent: a concurrent change makes it fail instead of being overwritten); the
collection gets only the items it lacks. A commit is atomic, so a failure leaves its repository as it
was; the later steps that need it (Space, organisation card, collection) are skipped and the command
exits 1; running it again finishes the job. The token comes from `HF_TOKEN` or `hf auth login` and is
only sent to the Hub: nothing here writes or prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    DatasetCardData,
    HfApi,
    RepoFile,
    SpaceCard,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from .hub import NO_TOKEN, FileDigest, _http_error_message, folder_digests, stage_run, write_card_files
from .zoo import (
    DEFAULT_OUTPUT_ROOT,
    DEFAULT_ZOO_DIR,
    HUB_URL,
    LEADERBOARD_FILE,
    LEADERBOARD_JSON,
    TRAINED,
    collection_note,
    compared_run,
    entry_card,
    leaderboard_markdown,
    leaderboard_records,
    load_index,
    org_card_markdown,
)

logger = logging.getLogger(__name__)

LEADERBOARD_REPO = "leaderboard"
SPACE_REPO = "hjprune-demo"
ORG_CARD_REPO = "README"
"""The organisation card is the README of this Space of the organisation."""
COLLECTION_TITLE = "hf_hjprune model zoo"
COLLECTION_DESCRIPTION = (
    "Speech models pruned with HJ-Pruning (CNN and Transformer jointly): the models, their dense models, "
    "the leaderboard, a demo Space."
)  # the Hub allows 150 characters
DEFAULT_SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / SPACE_REPO
SPACE_MODELS_FILE = "models.json"
SPACE_PACKAGE_FILES = ("**/*.py", "recipes/*.yaml")
"""The files of the `hf_hjprune` package that the Space needs (those pyproject.toml installs)."""
KEPT_REMOTE_FILES = frozenset({".gitattributes"})
"""Remote files a push never removes: the Hub's LFS rules."""
# The HTTP library's base error, from which HfHubHTTPError derives: status errors and connection failures.
_HTTP_ERRORS = (HfHubHTTPError, next(c for c in HfHubHTTPError.__mro__[1:] if c.__name__ == "HTTPError"))


class PublishError(RuntimeError):
    """The zoo cannot be published as asked (bad input, or the Hub cannot be read); nothing was written."""


# -- what the zoo publishes ---------------------------------------------------------------------


@dataclass
class Target:
    """A repository of the zoo: what it should hold and what must exist before it is written."""

    kind: str  # "model", "dense baseline", "start model", "leaderboard", "Space", "organisation card"
    repo_id: str
    stage: Callable[[Path], object]  # writes the files it can make here into a folder
    repo_type: str = "model"
    space_sdk: str | None = None
    known: dict[str, FileDigest] = field(default_factory=dict)  # files known by digest only
    missing: str | None = None  # why some files cannot be staged here (then it cannot be pushed)
    needs: tuple[str, ...] = ()  # model repositories it refers to
    publish: bool = True  # False: outside --only; only its existence is read
    owned: bool = True  # the zoo owns every file: remote files it does not stage are removed

    @property
    def label(self) -> str:
        return f"{self.kind} {self.repo_id}"


@dataclass(frozen=True)
class ItemSpec:
    """An item the zoo's collection should hold."""

    item_id: str
    item_type: str  # "model", "dataset" or "space"
    note: str


@dataclass
class Zoo:
    """Everything `hjprune zoo push` publishes for an organisation, built from the index."""

    org: str
    entries: list[dict[str, Any]]  # trained entries, their repo ids in `org`
    models: list[Target]  # dense models (baselines, start models) first, then the entries
    starts: dict[str, str | None]  # entry name -> repo id of its dense model (or None)
    external: dict[str, list[str]]  # Hub base model -> the entries that start from it
    space_dir: Path

    @property
    def leaderboard_url(self) -> str:
        return f"{HUB_URL}/datasets/{self.org}/{LEADERBOARD_REPO}"

    @property
    def space_id(self) -> str:
        return f"{self.org}/{SPACE_REPO}"


def index_for_org(index: Mapping[str, Any], org: str) -> dict[str, Any]:
    """A copy of the index whose repo ids are in `org` (same repository names)."""
    index = copy.deepcopy(dict(index))
    for entry in index["entries"]:
        entry["repo_id"] = f"{org}/{entry['repo_id'].split('/')[-1]}"
    return index


def _finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() and (run_dir / "model" / "config.json").is_file()


def stage_entry(entry: Mapping[str, Any], run_dir: Path, leaderboard_url: str, folder: Path) -> None:
    """The files of a zoo entry's repository: what `hjprune push` uploads, described by the index.

    The model files come from the run folder, when it exists, after checking that they are the run
    the entry describes (the hashes it records, or its config for an index without them); the card
    and the files next to it come from the entry, so the zoo's card is the one published.
    """
    if _finished(run_dir):
        model_dir = run_dir / "model"
        recorded = entry.get("model_files")
        if recorded is not None:
            found = {path: digest.sha256 for path, digest in folder_digests(model_dir).items()}
            if found != {path: digest["sha256"] for path, digest in recorded.items()}:
                raise PublishError(
                    f"{model_dir} holds other model files than zoo entry {entry['name']!r} records: "
                    f"add the run again with `hjprune zoo add {run_dir} --name {entry['name']}`"
                )
        elif json.loads((model_dir / "config.json").read_text(encoding="utf-8")) != entry["config"]:
            raise PublishError(
                f"{model_dir} is not the model of zoo entry {entry['name']!r}: its config differs"
            )
        shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    card = entry_card(entry, leaderboard=leaderboard_url)
    write_card_files(
        folder,
        card,
        entry["summary"],
        entry["config"],
        entry["bench"],
        entry["start_summary"],
        entry.get("baseline_summary"),
    )


def _start_of(
    entry: Mapping[str, Any], org: str, runs_root: Path, repos: Mapping[str, str]
) -> tuple[str, Path | None] | None:
    """`(repo id, run folder or None)` of the dense model an entry is compared with: its dense baseline,
    else its start model; None for a random initialisation.

    A dense model trained by `hf_hjprune` is the run folder its summary names, found under `runs_root`
    by name: a zoo entry's repository if an entry has that name, else a repository of its own. A
    start model from the Hub is that repository (no folder).
    """
    _, trained = compared_run(entry)
    if trained:
        name = Path(trained["recipe"]["output_dir"]).name
        return (repos[name], None) if name in repos else (f"{org}/{name}", runs_root / name)
    if entry.get("base_model"):
        return entry["base_model"], None
    return None


def zoo_targets(
    index: Mapping[str, Any],
    org: str,
    runs_root: str | os.PathLike = DEFAULT_OUTPUT_ROOT,
    space_dir: str | os.PathLike = DEFAULT_SPACE_DIR,
    only: Sequence[str] | None = None,
) -> Zoo:
    """The model repositories of the zoo's trained entries and of their dense models, for `org`.

    Raises:
        PublishError: An unknown or untrained name in `only`.
    """
    index = index_for_org(index, org)
    runs_root, space_dir = Path(runs_root), Path(space_dir)
    entries = [e for e in index["entries"] if e["status"] == TRAINED]
    repos = {e["name"]: e["repo_id"] for e in entries}
    if only is not None:
        unknown = [name for name in only if name not in repos]
        if unknown:
            raise PublishError(f"not trained zoo entries: {unknown}; trained: {', '.join(repos) or 'none'}")
    zoo = Zoo(org, entries, [], {}, {}, space_dir)
    starts: dict[str, Target] = {}
    for entry in entries:
        selected = only is None or entry["name"] in only
        run_dir = runs_root / entry["name"]
        target = Target("model", entry["repo_id"], partial(stage_entry, entry, run_dir, zoo.leaderboard_url))
        target.publish = selected
        if not _finished(run_dir):
            target.missing = f"no finished run folder at {run_dir}"
            target.known = {path: FileDigest(**d) for path, d in (entry.get("model_files") or {}).items()}
        zoo.models.append(target)
        start = _start_of(entry, org, runs_root, repos)
        zoo.starts[entry["name"]] = start and start[0]
        if start is None or start[0] in repos.values():
            continue
        repo_id, start_dir = start
        if start_dir is None:  # a checkpoint on the Hub
            zoo.external.setdefault(repo_id, []).append(entry["name"])
            continue
        if repo_id not in starts:
            kind, _ = compared_run(entry)
            if _finished(start_dir):
                starts[repo_id] = Target(kind, repo_id, partial(stage_run, start_dir, repo_id=repo_id))
            else:  # nothing of it can be made here
                starts[repo_id] = Target(kind, repo_id, lambda folder: None)
                starts[repo_id].missing = f"no finished run folder at {start_dir}"
            starts[repo_id].publish = False
        starts[repo_id].publish |= selected
    zoo.models[:0] = starts.values()
    return zoo


def _space_pairs(zoo: Zoo, available: set[str]) -> list[dict[str, str]]:
    """The Space's `models.json`: each published model with its published dense model of the same task."""
    tasks = {e["repo_id"]: e["task"] for e in zoo.entries}
    pairs = []
    for entry in zoo.entries:
        start = zoo.starts[entry["name"]]
        kind, dense = compared_run(entry)
        start_task = tasks.get(start) or (dense or {}).get("recipe", {}).get("task")
        if entry["repo_id"] in available and start in available and start_task == entry["task"]:
            pairs.append(
                {
                    "name": f"{entry['name']}: {kind} vs pruned",
                    "task": entry["task"],
                    "original": start,
                    "pruned": entry["repo_id"],
                }
            )
    return pairs


def stage_space(space_dir: Path, pairs: Sequence[Mapping[str, str]], folder: Path) -> None:
    """The Space's files: `space_dir` with its `models.json` and README's `models` set to `pairs`,
    and the `hf_hjprune` package next to `app.py`."""
    if not (space_dir / "app.py").is_file():
        raise PublishError(f"no Space at {space_dir}: pass the spaces/hjprune-demo folder of a checkout")
    for path in sorted(space_dir.rglob("*")):
        relative = path.relative_to(space_dir)
        if (
            path.is_file()
            and "__pycache__" not in relative.parts
            and relative.as_posix() != SPACE_MODELS_FILE
        ):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / relative)
    (folder / SPACE_MODELS_FILE).write_text(json.dumps(list(pairs), indent=2) + "\n", encoding="utf-8")
    card = SpaceCard.load(space_dir / "README.md")
    card.data.models = sorted({p[role] for p in pairs for role in ("original", "pruned")}) or None
    card.save(folder / "README.md")
    package = Path(__file__).resolve().parent
    for pattern in SPACE_PACKAGE_FILES:
        for path in sorted(package.glob(pattern)):
            if "__pycache__" not in path.parts:
                destination = folder / package.name / path.relative_to(package)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)


def stage_leaderboard(index: Mapping[str, Any], folder: Path) -> None:
    """The leaderboard dataset: `README.md` (card and table), `LEADERBOARD.md` and `leaderboard.json`."""
    table = leaderboard_markdown(index, hub=True)
    data = DatasetCardData(
        license="apache-2.0",
        pretty_name=COLLECTION_TITLE,
        tags=["hf_hjprune", "hj-pruning", "leaderboard", "speech"],
        configs=[{"config_name": "default", "data_files": LEADERBOARD_JSON}],
    )
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{table}").save(folder / "README.md")
    (folder / LEADERBOARD_FILE).write_text(table, encoding="utf-8")
    records = json.dumps(leaderboard_records(index), indent=2, ensure_ascii=False)
    (folder / LEADERBOARD_JSON).write_text(records + "\n", encoding="utf-8")


def shared_targets(zoo: Zoo, index: Mapping[str, Any], available: set[str], org_card: bool) -> list[Target]:
    """The leaderboard, the Space and the organisation card, given the model repos that will be on the Hub."""
    index = index_for_org(index, zoo.org)
    pairs = _space_pairs(zoo, available)
    published = [e for e in zoo.entries if e["repo_id"] in available]
    leaderboard = f"{zoo.org}/{LEADERBOARD_REPO}"
    targets = [
        Target("leaderboard", leaderboard, partial(stage_leaderboard, index), repo_type="dataset"),
        Target(
            "Space",
            zoo.space_id,
            partial(stage_space, zoo.space_dir, pairs),
            repo_type="space",
            space_sdk="gradio",
            needs=tuple(sorted({p[role] for p in pairs for role in ("original", "pruned")})),
        ),
    ]
    if org_card:
        card = org_card_markdown(
            published, zoo.leaderboard_url, f"{HUB_URL}/spaces/{zoo.space_id}", COLLECTION_TITLE
        )
        targets.append(
            Target(
                "organisation card",
                f"{zoo.org}/{ORG_CARD_REPO}",
                lambda folder: (folder / "README.md").write_text(card, encoding="utf-8"),
                repo_type="space",
                space_sdk="static",
                owned=False,  # the organisation may keep other files there; the zoo writes README.md
                needs=(*(e["repo_id"] for e in published), leaderboard, zoo.space_id),
            )
        )
    return targets


def collection_items(zoo: Zoo, available: set[str]) -> list[ItemSpec]:
    """The collection: published models (leaderboard order), their dense models, the leaderboard, the Space."""
    items = [
        ItemSpec(e["repo_id"], "model", collection_note(e)) for e in zoo.entries if e["repo_id"] in available
    ]
    starts: dict[str, list[str]] = {}
    for name, start in zoo.starts.items():
        if start is not None and start in available | set(zoo.external):
            starts.setdefault(start, []).append(name)
    kinds = {e["name"]: compared_run(e)[0] for e in zoo.entries}
    items += [
        ItemSpec(
            repo,
            "model",
            f"{'Dense baseline' if 'dense baseline' in {kinds[n] for n in names} else 'Start model'} of "
            f"{', '.join(names)}",
        )
        for repo, names in starts.items()
        if repo not in {item.item_id for item in items}
    ]
    items.append(
        ItemSpec(f"{zoo.org}/{LEADERBOARD_REPO}", "dataset", "Every model's numbers, as a table and JSON")
    )
    items.append(ItemSpec(zoo.space_id, "space", "Each pruned model next to its dense model, on your audio"))
    return items


# -- comparing with the Hub ----------------------------------------------------------------------


@dataclass
class RepoPlan:
    """What a push does to one repository: the result of comparing its staged files with the Hub."""

    target: Target
    folder: Path  # the staged files
    head: str | None  # the compared commit; None when the repository does not exist
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.head is not None

    @property
    def up_to_date(self) -> bool:
        return self.exists and not (self.added or self.changed or self.removed)

    def describe(self) -> list[str]:
        """The plan as lines: a summary, then `  + path` (add), `  ~ path` (change), `  - path` (remove)."""
        target = self.target
        if not target.publish:
            return [f"{target.label}: not selected ({'on the Hub' if self.exists else 'not on the Hub'})"]
        if target.missing:
            return [f"{target.label}: cannot be pushed: {target.missing}"]
        if self.up_to_date:
            return [f"{target.label}: up to date"]
        counts = f"{len(self.added)} to add, {len(self.changed)} to change, {len(self.removed)} to remove"
        lines = [f"{target.label}: {'' if self.exists else 'create the repository, '}{counts}"]
        for mark, paths in (("+", self.added), ("~", self.changed), ("-", self.removed)):
            lines += [f"  {mark} {path}" for path in paths]
        return lines


def _remote_files(api: HfApi, target: Target) -> tuple[str | None, dict[str, RepoFile]]:
    """`(head commit, path -> file)` of a repository, `(None, {})` when it does not exist."""
    try:
        info = api.repo_info(target.repo_id, repo_type=target.repo_type)
        tree = api.list_repo_tree(
            target.repo_id, repo_type=target.repo_type, revision=info.sha, recursive=True
        )
        return info.sha, {f.path: f for f in tree if isinstance(f, RepoFile)}
    except RepositoryNotFoundError:
        return None, {}
    except _HTTP_ERRORS as err:
        raise PublishError(f"could not read {target.label} from the Hub at {api.endpoint}: {err}") from err


def plan_repo(api: HfApi, target: Target, folder: Path) -> RepoPlan:
    """Stage `target` into `folder` and compare it with the Hub (reads only)."""
    head, remote = _remote_files(api, target)
    plan = RepoPlan(target, folder, head)
    if not target.publish:
        return plan
    target.stage(folder)
    local = {**target.known, **folder_digests(folder)}
    for path, digest in sorted(local.items()):
        if path not in remote:
            plan.added.append(path)
        elif not digest.matches(remote[path]):
            plan.changed.append(path)
    if target.owned and (target.missing is None or target.known):  # else extra files are unknown
        plan.removed = sorted(set(remote) - set(local) - KEPT_REMOTE_FILES)
    return plan


@dataclass
class CollectionPlan:
    """What a push does to the zoo's collection: items to add, notes to update; others are left alone."""

    slug: str | None  # None: the collection does not exist yet
    add: list[ItemSpec] = field(default_factory=list)
    notes: list[tuple[str, ItemSpec]] = field(default_factory=list)  # (item object id, wanted item)
    extra: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.slug is not None and not (self.add or self.notes)

    def describe(self) -> list[str]:
        name = f"collection {COLLECTION_TITLE!r}" + (f" ({self.slug})" if self.slug else "")
        if self.up_to_date:
            lines = [f"{name}: up to date"]
        else:
            create = "" if self.slug else "create it, "
            lines = [f"{name}: {create}{len(self.add)} items to add, {len(self.notes)} notes to update"]
        lines += [f"  + {item.item_type} {item.item_id}" for item in self.add]
        lines += [f"  ~ {item.item_type} {item.item_id} (note)" for _, item in self.notes]
        lines += [f"  = {item} (not in the zoo, left alone)" for item in self.extra]
        return lines


def plan_collection(api: HfApi, org: str, items: Sequence[ItemSpec]) -> CollectionPlan:
    """Compare the wanted items with the organisation's collection titled `COLLECTION_TITLE` (reads only)."""
    try:
        slug = next((c.slug for c in api.list_collections(owner=org) if c.title == COLLECTION_TITLE), None)
        found = api.get_collection(slug).items if slug else []
    except _HTTP_ERRORS as err:
        raise PublishError(f"could not read the collections of {org} at {api.endpoint}: {err}") from err
    present = {(item.item_type, item.item_id): item for item in found}
    plan = CollectionPlan(slug)
    for item in items:
        current = present.pop((item.item_type, item.item_id), None)
        if current is None:
            plan.add.append(item)
        elif (current.note or "") != item.note:
            plan.notes.append((current.item_object_id, item))
    plan.extra = [f"{kind} {item_id}" for kind, item_id in present]
    return plan


def _external_available(api: HfApi, repos: Iterable[str]) -> set[str]:
    """The Hub base models that exist (a collection item must)."""
    found = set()
    for repo_id in repos:
        try:
            api.model_info(repo_id)
            found.add(repo_id)
        except RepositoryNotFoundError:
            logger.warning("start model %s is not on the Hub: left out of the collection", repo_id)
        except _HTTP_ERRORS as err:
            raise PublishError(f"could not read {repo_id} from the Hub at {api.endpoint}: {err}") from err
    return found


@dataclass
class Plan:
    """The comparison of the whole zoo with the Hub."""

    repos: list[RepoPlan]
    collection: CollectionPlan
    items: list[ItemSpec]

    def describe(self) -> list[str]:
        return [line for plan in self.repos for line in plan.describe()] + self.collection.describe()


@contextmanager
def planned(
    api: HfApi,
    zoo: Zoo,
    index: Mapping[str, Any],
    org_card: bool = True,
) -> Iterator[Plan]:
    """Stage every repository of the zoo in temporary folders and compare it with the Hub (reads only).

    The folders live for the `with` block. The shared parts list the model repos that will be on the
    Hub: those that are now, and those the push publishes.
    """
    with tempfile.TemporaryDirectory(prefix="hjprune-zoo-push-") as staging:
        folders = (Path(staging, str(number)) for number in range(10**9))

        def plan(target: Target) -> RepoPlan:
            folder = next(folders)
            folder.mkdir()
            return plan_repo(api, target, folder)

        repos = [plan(target) for target in zoo.models]
        available = {
            p.target.repo_id for p in repos if p.exists or (p.target.publish and not p.target.missing)
        }
        repos += [plan(target) for target in shared_targets(zoo, index, available, org_card)]
        items = collection_items(zoo, available | _external_available(api, zoo.external))
        yield Plan(repos, plan_collection(api, zoo.org, items), items)


# -- pushing -------------------------------------------------------------------------------------


@dataclass
class PushReport:
    """What a push did: commit URLs by repository, failures and skipped steps with the reason."""

    commits: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    collection: str | None = None  # the collection's URL, when this push changed it

    @property
    def ok(self) -> bool:
        return not (self.failed or self.skipped)


def _commit(api: HfApi, plan: RepoPlan) -> str:
    """Create the repository if needed and commit the planned changes in one commit; returns its URL."""
    target = plan.target
    if not plan.exists:
        api.create_repo(target.repo_id, repo_type=target.repo_type, space_sdk=target.space_sdk, exist_ok=True)
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path, str(plan.folder / path)) for path in [*plan.added, *plan.changed]
    ]
    operations += [CommitOperationDelete(path) for path in plan.removed]
    info = api.create_commit(
        target.repo_id,
        operations,
        commit_message=f"{'Update' if plan.exists else 'Publish'} {target.kind} (hjprune zoo push)",
        commit_description="\n".join(plan.describe()),
        repo_type=target.repo_type,
        parent_commit=plan.head,
    )
    return info.commit_url


def _update_collection(api: HfApi, org: str, plan: CollectionPlan) -> str:
    """Create the collection if needed, add the missing items, update the notes; returns its URL."""
    slug = plan.slug
    if slug is None:
        created = api.create_collection(COLLECTION_TITLE, namespace=org, description=COLLECTION_DESCRIPTION)
        slug = created.slug
    for item in plan.add:
        api.add_collection_item(slug, item.item_id, item.item_type, note=item.note, exists_ok=True)
    for object_id, item in plan.notes:
        api.update_collection_item(slug, object_id, note=item.note)
    return api.get_collection(slug).url


def push_zoo(
    org: str,
    zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR,
    runs_root: str | os.PathLike = DEFAULT_OUTPUT_ROOT,
    space_dir: str | os.PathLike = DEFAULT_SPACE_DIR,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    org_card: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    echo: Callable[[str], object] = print,
) -> PushReport:
    """Publish the zoo of `zoo_dir` under `org`, or bring it up to date; see the module docstring.

    Args:
        org: The Hub organisation (or user) that holds the zoo.
        zoo_dir: The zoo folder (`zoo.json`).
        runs_root: The run folders: `<runs_root>/<name>` and the dense baselines' `<runs_root>/<name>-dense`.
        space_dir: The Space's folder (`app.py`, `README.md`, ...).
        only: Push only these entries (and their dense models); the shared parts are updated too and
            list the models that are on the Hub.
        dry_run: Only print the plan (every repository with the files to add, change and remove).
        org_card: Publish the organisation card (the `ORG/README` Space).
        token: Default: `HF_TOKEN` or the token of `hf auth login`.
        endpoint: Default: `HF_ENDPOINT` or https://huggingface.co.
        echo: Where the plan and the progress go, line by line.

    Raises:
        PublishError: Bad input (unknown entries, missing run folders, a run that is not the entry's,
            no token for a push) or the Hub could not be read; raised before anything is written.
    """
    if not dry_run and not (token or get_token()):
        raise PublishError(NO_TOKEN)
    index = load_index(zoo_dir)
    zoo = zoo_targets(index, org, runs_root, space_dir, only)
    api = HfApi(endpoint=endpoint, token=token)
    with planned(api, zoo, index, org_card) as plan:
        for line in plan.describe():
            echo(line)
        unpublishable = [p.target for p in plan.repos if p.target.publish and p.target.missing]
        if unpublishable:
            details = "; ".join(f"{t.label}: {t.missing}" for t in unpublishable)
            raise PublishError(f"cannot push {details} (train it, or leave it out with --only)")
        return PushReport() if dry_run else _publish(api, org, plan, echo)


def _publish(api: HfApi, org: str, plan: Plan, echo: Callable[[str], object]) -> PushReport:
    """Carry out a plan: one commit per repository that differs, in order, then the collection.

    A step is skipped when a repository it refers to is not on the Hub because its own step failed.
    """
    report = PushReport()
    pending = {p.target.repo_id for p in plan.repos if not p.exists}  # not on the Hub until committed
    for repo in plan.repos:
        target = repo.target
        if not target.publish or repo.up_to_date:
            continue
        blocked = [need for need in target.needs if need in pending]
        if blocked:
            report.skipped[target.label] = f"needs {', '.join(blocked)}, which failed or was skipped"
            echo(f"{target.label}: skipped ({report.skipped[target.label]})")
            continue
        try:
            report.commits[target.label] = _commit(api, repo)
        except _HTTP_ERRORS as err:
            report.failed[target.label] = _describe(err, target.repo_id)
            echo(f"{target.label}: failed: {report.failed[target.label]}")
            continue
        pending.discard(target.repo_id)
        echo(f"{target.label}: {report.commits[target.label]}")
    blocked = sorted(pending & {item.item_id for item in plan.items})
    if blocked:
        report.skipped["collection"] = f"needs {', '.join(blocked)}, which failed or was skipped"
        echo(f"collection: skipped ({report.skipped['collection']})")
    elif not plan.collection.up_to_date:
        try:
            report.collection = _update_collection(api, org, plan.collection)
            echo(f"collection: {report.collection}")
        except _HTTP_ERRORS as err:
            report.failed["collection"] = _describe(err, f"the collection of {org}")
            echo(f"collection: failed: {report.failed['collection']}")
    return report


def _describe(err: Exception, what: str) -> str:
    if isinstance(err, HfHubHTTPError):
        return _http_error_message(err, what)
    return f"could not reach the Hub to push to {what}: {err}"


# -- checking ------------------------------------------------------------------------------------


def _drift(plan: RepoPlan) -> list[str]:
    label = plan.target.label
    if not plan.exists:
        return [f"missing repo: {label}"]
    problems = [f"missing file: {label}: {path}" for path in plan.added]
    for path in plan.changed:
        weights = path.endswith((".safetensors", ".bin"))
        kind = "stale card" if path == "README.md" else "weights differ" if weights else "changed file"
        problems.append(f"{kind}: {label}: {path}")
    problems += [f"extra file: {label}: {path}" for path in plan.removed]
    return problems


def check_zoo_on_hub(
    org: str,
    zoo_dir: str | os.PathLike = DEFAULT_ZOO_DIR,
    runs_root: str | os.PathLike = DEFAULT_OUTPUT_ROOT,
    space_dir: str | os.PathLike = DEFAULT_SPACE_DIR,
    org_card: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
) -> tuple[list[str], list[str]]:
    """Compare what is on the Hub under `org` with the zoo; returns `(drift, notes)`.

    Drift: `missing repo`, `missing file`, `stale card` (a README.md that is not the one the index
    gives), `weights differ` (a model file whose hash is not the one the index records), `changed
    file`, `extra file`, and missing collection items. Without a run folder, an entry's model files are
    compared with the hashes `zoo.json` records; notes say what could not be compared.
    """
    index = load_index(zoo_dir)
    zoo = zoo_targets(index, org, runs_root, space_dir)
    api = HfApi(endpoint=endpoint, token=token)
    drift, notes = [], []
    with planned(api, zoo, index, org_card) as plan:
        for repo in plan.repos:
            drift += _drift(repo)
            if repo.target.missing:
                compared = "hashes from zoo.json" if repo.target.known else "nothing"
                notes.append(
                    f"{repo.target.label}: model files compared with {compared} ({repo.target.missing})"
                )
        if plan.collection.slug is None:
            drift.append(f"missing collection: {COLLECTION_TITLE!r} of {org}")
        else:
            drift += [f"missing collection item: {i.item_type} {i.item_id}" for i in plan.collection.add]
            drift += [f"stale collection note: {i.item_type} {i.item_id}" for _, i in plan.collection.notes]
    return drift, notes


# -- command line (`hjprune zoo push` and `hjprune zoo check`) -----------------------------------


def add_arguments(actions: argparse._SubParsersAction) -> None:
    """Add the `push` and `check` actions to `hjprune zoo`."""
    push = actions.add_parser(
        "push", help="publish the zoo on the Hub: models, leaderboard, Space, collection"
    )
    check = actions.add_parser("check", help="report what on the Hub differs from zoo.json")
    for parser in (push, check):
        parser.add_argument("--org", required=True, help="the Hub organisation (or user) of the zoo")
        parser.add_argument(
            "--runs-root",
            default=str(DEFAULT_OUTPUT_ROOT),
            help="the run folders: RUNS_ROOT/NAME and its dense baseline RUNS_ROOT/NAME-dense (default: outputs/zoo)",
        )
        parser.add_argument(
            "--space-dir",
            default=str(DEFAULT_SPACE_DIR),
            help="the Space folder (default: spaces/hjprune-demo)",
        )
        parser.add_argument(
            "--no-org-card", action="store_true", help="leave the organisation card (ORG/README) alone"
        )
    push.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    push.add_argument("--only", nargs="+", metavar="NAME", help="push these entries (and their dense models)")


def run(args: argparse.Namespace) -> int:
    """Run `hjprune zoo push` (1 if a step failed) or `hjprune zoo check` (1 if there is drift)."""
    common = dict(
        org=args.org,
        zoo_dir=args.zoo_dir,
        runs_root=args.runs_root,
        space_dir=args.space_dir,
        org_card=not args.no_org_card,
    )
    try:
        if args.zoo_action == "check":
            drift, notes = check_zoo_on_hub(**common)
            for line in notes:
                print(f"note: {line}", file=sys.stderr)
            for line in drift:
                print(line)
            print(f"{len(drift)} differences between the Hub and the zoo", file=sys.stderr)
            return 1 if drift else 0
        report = push_zoo(**common, only=args.only, dry_run=args.dry_run)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not report.ok:
        print("the zoo is partly published: run the same command again to finish", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "PublishError",
    "PushReport",
    "check_zoo_on_hub",
    "collection_items",
    "push_zoo",
    "zoo_targets",
]
