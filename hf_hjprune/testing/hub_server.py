"""A small in-memory Hugging Face Hub server, so tests can drive the real `huggingface_hub` client.

It speaks the part of the Hub HTTP protocol used by `HfApi` (whoami, create_repo, upload_folder,
create_commit, model_info/space_info/dataset_info/repo_info, list_repo_tree, and the collections API:
list/get/create/update/delete_collection, add/update/delete_collection_item) and by `hf_hub_download`.
Every file is stored as a regular git blob: the server never asks for LFS or Xet uploads. An
organisation's card is its `ORG/README` Space, stored like any other Space. It listens on 127.0.0.1
only and never makes outgoing requests.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPO_TYPES = ("model", "dataset", "space")
_YAML_BLOCK = re.compile(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The client maps this exact message to a plain HTTP error instead of "repository not found".
_BAD_TOKEN = "Invalid credentials in Authorization header"


def git_blob_sha1(data: bytes) -> str:
    """Git blob id of `data`: the client compares it with the local file to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def front_matter(text: str) -> dict[str, Any] | None:
    """YAML front matter of a README, None without one; raises ValueError if it is not a mapping."""
    match = _YAML_BLOCK.match(text)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in front matter: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ValueError("The front matter of README.md must be a YAML mapping")
    return data or None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Commit:
    """One commit; `files` is the full snapshot of the repo after it."""

    oid: str
    title: str
    description: str
    date: str
    parent: str | None
    files: dict[str, bytes] = field(repr=False)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    log: list[Commit] = field(default_factory=list)  # every commit of every ref, oldest first
    refs: dict[str, str] = field(default_factory=dict)  # "main" or "refs/pr/N" -> commit oid

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return next((c for c in self.log if c.oid == oid or (len(oid) >= 7 and c.oid.startswith(oid))), None)


@dataclass
class CollectionRecord:
    """A collection; each item is `{"_id", "id", "type", "note"}` (note: text or None), in order."""

    slug: str
    title: str
    namespace: str
    description: str | None
    private: bool
    items: list[dict[str, Any]] = field(default_factory=list)
    last_updated: str = ""


class HubError(Exception):
    """An error answered the way the Hub does: JSON body plus `X-Error-Code`/`X-Error-Message`."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit

    def response(self) -> JSONResponse:
        headers = {"X-Error-Message": self.message}
        if self.code:
            headers["X-Error-Code"] = self.code
        if self.commit:
            headers["X-Repo-Commit"] = self.commit
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def _split_revision(rest: str) -> tuple[str, str]:
    """Split "<rev>/<path>"; only "refs/pr/N" revisions may contain slashes here."""
    parts = rest.split("/")
    n = 3 if rest.startswith("refs/pr/") else 1
    return "/".join(parts[:n]), "/".join(parts[n:])


class HubServer:
    """In-memory Hub on 127.0.0.1 with an OS-chosen port (see `run_hub_server`).

    `token` may read and write, `read_token` (optional) may only read; requests without a token
    may read public repos. Repos live in memory and vanish with the server.
    """

    def __init__(
        self,
        token: str = "hf_test_token",
        *,
        user: str = "test-user",
        read_token: str | None = None,
        fail_with: int | None = None,
    ) -> None:
        self.token, self.user, self.read_token = token, user, read_token
        self.port = 0
        self.requests: list[str] = []  # "METHOD /path" of every request, for assertions
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._collections: dict[str, CollectionRecord] = {}  # slug -> collection, in creation order
        self._failure: tuple[int, bool, str | None, str | None] | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.set_failure(fail_with)
        api, resolve = "/api/{rtype}/{ns}/{name}", "/{ns}/{name}/resolve/{rest:path}"
        collection, item = "/api/collections/{ns}/{slug}", "/api/collections/{ns}/{slug}/items/{item_id}"
        self.app = Starlette(
            routes=[
                self._route("/api/whoami-v2", self._whoami, ["GET"]),
                self._route("/api/collections", self._list_collections, ["GET"]),
                self._route("/api/collections", self._create_collection, ["POST"]),
                self._route(collection + "/items", self._add_collection_item, ["POST"]),
                self._route(item, self._update_collection_item, ["PATCH"]),
                self._route(item, self._delete_collection_item, ["DELETE"]),
                self._route(collection, self._get_collection, ["GET"]),
                self._route(collection, self._update_collection, ["PATCH"]),
                self._route(collection, self._delete_collection, ["DELETE"]),
                self._route("/api/repos/create", self._create_repo, ["POST"]),
                self._route("/api/validate-yaml", self._validate_yaml, ["POST"]),
                self._route(api + "/preupload/{rev:path}", self._preupload, ["POST"]),
                self._route(api + "/commit/{rev:path}", self._commit, ["POST"]),
                self._route(api + "/tree/{rest:path}", self._tree, ["GET"]),
                self._route(api + "/revision/{rev:path}", self._info, ["GET"]),
                self._route(api, self._info, ["GET"]),
                self._route("/{rtype}" + resolve, self._resolve, ["GET", "HEAD"]),
                self._route(resolve, self._resolve, ["GET", "HEAD"]),
            ]
        )

    # -- lifecycle and test helpers ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="hub-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The test Hub server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_failure(
        self,
        status: int | None,
        *,
        all_requests: bool = False,
        match: str | None = None,
        repo: str | None = None,
    ) -> None:
        """Answer `status` to every write request (every request with `all_requests`) from now on.

        `match` limits this to paths containing it, e.g. "/commit/"; `repo` to the requests about one
        repository (its id in the path, e.g. "org/name"). None switches failures off. Note the client
        retries preupload (and pipelined commits) on 429/5xx for ~25 s before raising: to fail one
        repo's commit quickly, use `set_failure(500, repo="org/name", match="/commit/")`.
        """
        self._failure = None if status is None else (status, all_requests, match, repo)

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Path -> content of a repo at `revision`; KeyError if the repo or revision is unknown."""
        with self._lock:
            commit = self._repos[(repo_type, repo_id)].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """Every commit of a repo, oldest first (the first is the empty commit made by create_repo)."""
        with self._lock:
            return list(self._repos[(repo_type, repo_id)].log)

    def repos(self) -> list[tuple[str, str]]:
        """`(repo_type, repo_id)` of every repo, in creation order."""
        with self._lock:
            return list(self._repos)

    def collections(self) -> list[CollectionRecord]:
        """Every collection (copies), in creation order."""
        with self._lock:
            return [
                dataclasses.replace(c, items=[dict(i) for i in c.items]) for c in self._collections.values()
            ]

    # -- plumbing ----------------------------------------------------------------------------

    def _route(
        self, path: str, handler: Callable[[Request], Awaitable[Response]], methods: list[str]
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                self.requests.append(f"{request.method} {request.url.path}")
            failure = self._failure
            if failure is not None:
                status, all_requests, match, repo = failure
                path = request.url.path
                if (
                    (all_requests or request.method in _WRITE_METHODS)
                    and (match is None or match in path)
                    and (repo is None or f"/{repo}/" in path or path.endswith(f"/{repo}"))
                ):
                    return HubError(status, f"Injected failure ({status})").response()
            try:
                return await handler(request)
            except HubError as err:
                return err.response()

        return Route(path, endpoint, methods=methods)

    def _auth(self, request: Request, *, write: bool) -> str | None:
        """Role of the request's token ("write" or "read"), None for anonymous reads; raises 401/403."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if token is None and not write:
            return None
        if token is None or token not in (self.token, self.read_token):
            raise HubError(401, _BAD_TOKEN)
        if write and token != self.token:
            raise HubError(403, "You don't have the rights to write with a read-only token")
        return "write" if token == self.token else "read"

    def _repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"

    def _lookup(self, request: Request, revision: str, *, write: bool = False) -> tuple[Repo, Commit]:
        """Repo and commit named by the URL; raises the Hub's 401/403/404 errors."""
        rtype = request.path_params.get("rtype", "models")
        role = self._auth(request, write=write)
        repo_id = f"{request.path_params['ns']}/{request.path_params['name']}"
        repo = self._repos.get((rtype[:-1], repo_id)) if rtype[:-1] in REPO_TYPES else None
        if repo is None or (repo.private and role is None):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit

    def _new_commit(
        self, parent: Commit | None, title: str, description: str, files: dict[str, bytes]
    ) -> Commit:
        # The counter makes every commit's sha unique, even for identical content.
        seed = json.dumps(
            [next(self._counter), parent and parent.oid, title, sorted(map(git_blob_sha1, files.values()))]
        )
        oid = hashlib.sha1(seed.encode()).hexdigest()
        return Commit(oid, title, description, _now(), parent and parent.oid, files)

    # -- endpoints ---------------------------------------------------------------------------

    async def _whoami(self, request: Request) -> Response:
        role = self._auth(request, write=False)
        if role is None:
            raise HubError(401, _BAD_TOKEN)
        auth = {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}
        return JSONResponse({"type": "user", "id": "0" * 24, "name": self.user, "orgs": [], "auth": auth})

    async def _create_repo(self, request: Request) -> Response:
        self._auth(request, write=True)
        body = await request.json()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if repo_type == "space" and not body.get("sdk"):
            raise HubError(400, "A Space needs an sdk")
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        private = body.get("visibility") == "private" or body.get("private") is True
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                url = self._repo_url(self._repos[(repo_type, repo_id)])
                return JSONResponse({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            repo = Repo(repo_type, repo_id, private, sdk=body.get("sdk"))
            repo.log.append(self._new_commit(None, "initial commit", "", {}))
            repo.refs["main"] = repo.log[-1].oid
            self._repos[(repo_type, repo_id)] = repo
        return JSONResponse({"url": self._repo_url(repo), "name": repo_id, "id": repo.log[0].oid[:24]})

    async def _validate_yaml(self, request: Request) -> Response:
        self._auth(request, write=False)
        body = await request.json()
        try:
            front_matter(body.get("content", ""))
        except ValueError as err:
            return JSONResponse({"errors": [{"message": str(err)}], "warnings": []}, 400)
        return JSONResponse({"errors": [], "warnings": []})

    async def _preupload(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            _, commit = self._lookup(request, request.path_params["rev"], write=True)
        files = []
        for entry in body.get("files", []):
            old = commit.files.get(entry["path"])
            oid = None if old is None else git_blob_sha1(old)
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": files, "commitOid": commit.oid})

    async def _commit(self, request: Request) -> Response:
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        revision = request.path_params["rev"]
        create_pr = request.query_params.get("create_pr") == "1"
        with self._lock:
            repo, base = self._lookup(request, revision, write=True)
            if revision not in repo.refs and not create_pr:
                raise HubError(400, f"Cannot commit to {revision}: not a branch", "RevisionNotFound")
            header = next((line["value"] for line in lines if line["key"] == "header"), {})
            parent = header.get("parentCommit")
            if parent and not base.oid.startswith(parent):
                raise HubError(412, f"A commit has happened since {parent}: {base.oid} is the head")
            files = dict(base.files)
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = value["content"]
                    files[value["path"]] = (
                        base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    )
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound", base.oid)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    doomed = [path for path in files if path.startswith(prefix)]
                    if not doomed:
                        raise HubError(
                            404, "A folder with this name doesn't exist", "EntryNotFound", base.oid
                        )
                    for path in doomed:
                        del files[path]
                elif key != "header":
                    raise HubError(400, f"This test Hub only takes regular files, got {key!r}")
            commit = self._new_commit(base, header.get("summary", ""), header.get("description", ""), files)
            repo.log.append(commit)
            pr_url = None
            if create_pr:
                number = 1 + sum(ref.startswith("refs/pr/") for ref in repo.refs)
                repo.refs[f"refs/pr/{number}"] = commit.oid
                pr_url = f"{self._repo_url(repo)}/discussions/{number}"
            else:
                repo.refs[revision] = commit.oid
        return JSONResponse(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "commitMessage": commit.title,
                "pullRequestUrl": pr_url,
            }
        )

    async def _info(self, request: Request) -> Response:
        with self._lock:
            repo, commit = self._lookup(request, request.path_params.get("rev", "main"))
        blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
        try:
            card = front_matter(commit.files.get("README.md", b"").decode()) or {}
        except (ValueError, UnicodeDecodeError):
            card = {}
        tags = card.get("tags") or []
        siblings = [
            {"rfilename": path, **({"size": len(data), "blobId": git_blob_sha1(data)} if blobs else {})}
            for path, data in sorted(commit.files.items())
        ]
        info: dict[str, Any] = {
            "_id": repo.log[0].oid[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.log[0].date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [tags] if isinstance(tags, str) else list(tags),
            "siblings": siblings,
            "usedStorage": sum(len(data) for data in commit.files.values()),
        }
        if card:
            info["cardData"] = card
        if repo.repo_type == "model":
            info.update(library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
            if "model-index" in card:
                info["model-index"] = card["model-index"]
        elif repo.repo_type == "space":
            info["sdk"] = card.get("sdk", repo.sdk)
        return JSONResponse(info)

    async def _tree(self, request: Request) -> Response:
        revision, folder = _split_revision(request.path_params["rest"])
        with self._lock:
            _, commit = self._lookup(request, revision)
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder_path = prefix + "/".join(parts[:depth])
                folder_oid = hashlib.sha1(f"{commit.oid}:{folder_path}".encode()).hexdigest()
                entries.setdefault(
                    folder_path, {"type": "directory", "oid": folder_oid, "size": 0, "path": folder_path}
                )
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if prefix and not entries:
            raise HubError(404, f"Folder not found: {folder}", "EntryNotFound", commit.oid)
        return JSONResponse(list(entries.values()))

    async def _resolve(self, request: Request) -> Response:
        revision, path = _split_revision(request.path_params["rest"])
        with self._lock:
            _, commit = self._lookup(request, revision)
        data = commit.files.get(path)
        if data is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_sha1(data)}"',
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
        }
        return Response(b"" if request.method == "HEAD" else data, headers=headers)

    # -- collections -------------------------------------------------------------------------

    def _collection_json(self, collection: CollectionRecord, max_items: int | None = None) -> dict[str, Any]:
        items = [
            {
                "_id": item["_id"],
                "id": item["id"],
                "type": item["type"],
                "position": position,
                **({"note": {"text": item["note"], "html": item["note"]}} if item["note"] else {}),
            }
            for position, item in enumerate(collection.items[:max_items])
        ]
        namespace = collection.namespace
        return {
            "slug": collection.slug,
            "title": collection.title,
            "description": collection.description,
            "owner": {"name": namespace, "type": "user" if namespace == self.user else "org"},
            "items": items,
            "lastUpdated": collection.last_updated,
            "position": list(self._collections).index(collection.slug),
            "private": collection.private,
            "theme": "indigo",
            "upvotes": 0,
        }

    def _find_collection(self, request: Request, *, write: bool) -> CollectionRecord:
        """The collection named by the URL (raises 401/403/404)."""
        role = self._auth(request, write=write)
        slug = f"{request.path_params['ns']}/{request.path_params['slug']}"
        collection = self._collections.get(slug)
        if collection is None or (collection.private and role is None):
            raise HubError(404, f"Collection not found: {slug}")
        return collection

    async def _list_collections(self, request: Request) -> Response:
        role = self._auth(request, write=False)
        owners = request.query_params.getlist("owner")
        items = request.query_params.getlist("item")
        with self._lock:
            found = [
                # Listings truncate the items and leave out the position (the client numbers them).
                {k: v for k, v in self._collection_json(c, max_items=4).items() if k != "position"}
                for c in self._collections.values()
                if (not c.private or role is not None)
                and (not owners or c.namespace in owners)
                and all(any(f"{i['type']}s/{i['id']}" == item for i in c.items) for item in items)
            ]
        return JSONResponse(found)

    async def _create_collection(self, request: Request) -> Response:
        self._auth(request, write=True)
        body = await request.json()
        title, namespace = body.get("title"), body.get("namespace") or self.user
        if not title:
            raise HubError(400, "A collection needs a title")
        with self._lock:
            for collection in self._collections.values():
                if collection.namespace == namespace and collection.title == title:
                    return JSONResponse(
                        {"error": "A collection with this title already exists", "slug": collection.slug}, 409
                    )
            oid = hashlib.sha1(f"collection {next(self._counter)}".encode()).hexdigest()[:24]
            slug = f"{namespace}/{_slugify(title)}-{oid}"
            collection = CollectionRecord(
                slug, title, namespace, body.get("description"), bool(body.get("private")), [], _now()
            )
            self._collections[slug] = collection
            return JSONResponse(self._collection_json(collection))

    async def _get_collection(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse(self._collection_json(self._find_collection(request, write=False)))

    async def _update_collection(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            collection = self._find_collection(request, write=True)
            for key in ("title", "description", "private"):
                if key in body:
                    setattr(collection, key, body[key])
            collection.last_updated = _now()
            return JSONResponse({"success": True, "data": self._collection_json(collection)})

    async def _delete_collection(self, request: Request) -> Response:
        with self._lock:
            collection = self._find_collection(request, write=True)
            del self._collections[collection.slug]
        return JSONResponse({"success": True})

    async def _add_collection_item(self, request: Request) -> Response:
        body = await request.json()
        item = body.get("item") or {}
        item_id, item_type = item.get("id"), item.get("type")
        with self._lock:
            collection = self._find_collection(request, write=True)
            if item_type in REPO_TYPES and (item_type, item_id) not in self._repos:
                raise HubError(404, f"Item not found: {item_type} {item_id}")
            if any(i["id"] == item_id and i["type"] == item_type for i in collection.items):
                raise HubError(409, f"{item_type} {item_id} is already in the collection")
            oid = hashlib.sha1(f"item {next(self._counter)}".encode()).hexdigest()[:24]
            collection.items.append({"_id": oid, "id": item_id, "type": item_type, "note": body.get("note")})
            collection.last_updated = _now()
            return JSONResponse(self._collection_json(collection))

    def _find_item(self, request: Request, collection: CollectionRecord) -> dict[str, Any]:
        item_id = request.path_params["item_id"]
        item = next((i for i in collection.items if i["_id"] == item_id), None)
        if item is None:
            raise HubError(404, f"Item not found in {collection.slug}: {item_id}")
        return item

    async def _update_collection_item(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            collection = self._find_collection(request, write=True)
            item = self._find_item(request, collection)
            if "note" in body:
                item["note"] = body["note"] or None
            if "position" in body:
                collection.items.remove(item)
                collection.items.insert(int(body["position"]), item)
            collection.last_updated = _now()
        return JSONResponse({"success": True})

    async def _delete_collection_item(self, request: Request) -> Response:
        with self._lock:
            collection = self._find_collection(request, write=True)
            collection.items.remove(self._find_item(request, collection))
            collection.last_updated = _now()
        return JSONResponse({"success": True})


def _slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "collection"


@contextlib.contextmanager
def run_hub_server(
    token: str = "hf_test_token", fail_with: int | None = None, **kwargs: Any
) -> Iterator[HubServer]:
    """Run a `HubServer` for the duration of a `with` block (kwargs: `user`, `read_token`)."""
    server = HubServer(token, fail_with=fail_with, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def hub_env(server: HubServer, hf_home: str | Path) -> dict[str, str]:
    """Environment variables that point a fresh `huggingface_hub`/`transformers` process at `server`.

    Merge them into `os.environ` for a subprocess: the client reads them at import time. They also
    override an exported HF_HUB_OFFLINE=1 (as `make test` sets) and disable Xet and telemetry.
    """
    hf_home = str(hf_home)
    return {
        "HF_ENDPOINT": server.url,
        "HF_TOKEN": server.token,
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
