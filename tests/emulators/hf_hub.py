"""A loopback stand-in for the Hugging Face Hub's file endpoints (what hf_hub_download uses).

Point ``HF_ENDPOINT`` at it. Serves ``HEAD``/``GET /{owner}/{repo}/resolve/{rev}/{file}`` with
the headers huggingface_hub needs (X-Repo-Commit, ETag, Content-Length), Range requests for
resumed downloads, and the Hub's 404 error codes for a missing repo or file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubStandIn:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Path] = {}
        self.requests: list[str] = []

    def add(self, repo_id: str, filename: str, path: Path) -> None:
        self.files[(repo_id, filename)] = path

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{filename:.+}", self.resolve)
        return app

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
        response = web.FileResponse(path, headers=headers)
        return response
