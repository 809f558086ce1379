"""A loopback stand-in for the Hugging Face Hub's file endpoints (what hf_hub_download uses).

Point ``HF_ENDPOINT`` at it. Serves ``HEAD``/``GET /{owner}/{repo}/resolve/{rev}/{file}`` with
the headers huggingface_hub needs (X-Repo-Commit, ETag, Content-Length), Range requests for
resumed downloads, and the Hub's 404 error codes for a missing repo or file.

For listing a repo (``HfApi.model_info``, ``list_repo_files``, ``list_repo_tree``) it also
serves ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``siblings``, with
``size`` when ``?blobs=true`` as on the Hub) and ``GET /api/models/{repo}/tree/{rev}[/{path}]``
(``?recursive=true`` for the whole tree). Every revision serves the same files.

Faults: ``cut_once[(repo, file)] = n`` makes the next full GET of that file send ``n`` bytes
and drop the connection (huggingface_hub then resumes with a Range request, kept in ``ranges``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStandIn:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Path] = {}
        self.requests: list[str] = []
        self.ranges: list[str] = []  # Range headers of file GETs, in order
        self.cut_once: dict[tuple[str, str], int] = {}

    def add(self, repo_id: str, filename: str, path: Path) -> None:
        self.files[(repo_id, filename)] = path

    def app(self) -> web.Application:
        app = web.Application()
        api = "/api/models/{owner}/{name}"
        app.router.add_get(api, self.model_info)
        app.router.add_get(api + "/revision/{revision}", self.model_info)
        app.router.add_get(api + "/tree/{revision}", self.tree)
        app.router.add_get(api + "/tree/{revision}/{path:.+}", self.tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{filename:.+}", self.resolve)
        return app

    def _repo_files(self, repo: str) -> dict[str, Path] | None:
        """The repo's files by name, or None when no such repo was added."""
        files = {name: path for (r, name), path in self.files.items() if r == repo}
        return files or None

    async def model_info(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        self.requests.append(f"GET api/models/{repo}")
        files = self._repo_files(repo)
        if files is None:
            return _repo_not_found()
        blobs = request.query.get("blobs", "").lower() == "true"
        siblings: list[dict[str, Any]] = []
        for name in sorted(files):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling |= {"size": files[name].stat().st_size, "blobId": _oid(files[name])}
            siblings.append(sibling)
        body = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings}
        return web.json_response(body)

    async def tree(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        under = request.match_info.get("path", "").strip("/")
        self.requests.append(f"GET api/models/{repo}/tree/{under}")
        files = self._repo_files(repo)
        if files is None:
            return _repo_not_found()
        recursive = request.query.get("recursive", "").lower() == "true"
        prefix = PurePosixPath(under) if under else None
        entries: dict[str, dict[str, Any]] = {}
        for name in sorted(files):
            parts = PurePosixPath(name).parts
            if prefix is not None:
                if parts[: len(prefix.parts)] != prefix.parts or name == under:
                    continue
                parts = parts[len(prefix.parts) :]
            base = f"{under}/" if under else ""
            # Folders on the way down to the file; with recursive=false only the first one.
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = base + "/".join(parts[:depth])
                entries.setdefault(
                    folder, {"type": "directory", "path": folder, "oid": _oid(Path(folder))}
                )
            if recursive or len(parts) == 1:
                size = files[name].stat().st_size
                entries[name] = {
                    "type": "file",
                    "path": name,
                    "size": size,
                    "oid": _oid(files[name]),
                }
        if prefix is not None and not entries:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        return web.json_response(list(entries.values()))

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        filename = request.match_info["filename"]
        self.requests.append(f"{request.method} {repo}/{filename}")
        if not any(r == repo for r, _ in self.files):
            return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound"})
        path = self.files.get((repo, filename))
        if path is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        size = path.stat().st_size
        etag = hashlib.sha256(f"{path}:{size}".encode()).hexdigest()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(size)
            return web.Response(status=200, headers=headers)
        if "Range" in request.headers:
            self.ranges.append(request.headers["Range"])
        elif (repo, filename) in self.cut_once:
            return await self._cut(request, path, self.cut_once.pop((repo, filename)), headers)
        response = web.FileResponse(path, headers=headers)
        return response

    async def _cut(
        self, request: web.Request, path: Path, sent: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Announce the whole file, send ``sent`` bytes of it, then drop the connection."""
        response = web.StreamResponse(headers=headers)
        response.content_length = path.stat().st_size
        await response.prepare(request)
        with path.open("rb") as file:
            await response.write(file.read(sent))
        assert request.transport is not None
        request.transport.close()
        return response


def _repo_not_found() -> web.Response:
    return web.json_response(
        {"error": "Repository not found"}, status=404, headers={"X-Error-Code": "RepoNotFound"}
    )


def _oid(path: Path) -> str:
    """A stable git-like object id (40 hex digits) for a served file or folder."""
    return hashlib.sha1(str(path).encode()).hexdigest()
