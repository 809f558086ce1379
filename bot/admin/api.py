"""The running bot's admin endpoint, for `parley admin`: a Unix socket (mode 600) on this
machine, and every call must carry the admin token (``Authorization: Bearer …``).

Without ADMIN_TOKEN set, the bot makes one per run and writes it beside the socket (mode
600), so the operator's own shell can use `parley admin` with no setup; nobody else can.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.chat.access import split_user_key, user_key
from bot.chat.service import ChatService
from bot.errors import ConfigError, ParleyError
from bot.models.catalog import local_models
from bot.settings import Settings
from bot.store import admin_queries as store_admin
from bot.store.backup import backup_database
from bot.store.faults import storage_fault
from bot.store.private_files import make_private_folder
from common.redact import redact

SERVICE = web.AppKey("service", ChatService)
TOKEN = web.AppKey("token", str)
INFO = web.AppKey("info", dict)


def admin_socket_path(settings: Settings) -> Path:
    """ADMIN_SOCKET, or admin.sock beside the database."""
    if settings.admin_socket is not None:
        return settings.admin_socket.expanduser()
    return settings.database_path.expanduser().parent / "admin.sock"


def token_path(socket: Path) -> Path:
    return socket.with_suffix(".token")


def split_person(who: str) -> tuple[str, str]:
    person = split_user_key(who)
    if person is None:
        raise web.HTTPBadRequest(reason=f"expected PLATFORM:ID (e.g. telegram:12345), got {who!r}")
    return person


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    expected = request.app[TOKEN]
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return web.json_response({"error": "wrong or missing admin token"}, status=401)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ParleyError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)


def create_admin_app(service: ChatService, token: str, info: dict[str, Any]) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[SERVICE], app[TOKEN], app[INFO] = service, token, info
    app.router.add_get("/status", status)
    app.router.add_get("/models", models)
    app.router.add_post("/models/use", use_model)
    app.router.add_get("/queue", queue)
    app.router.add_post("/queue/cancel", cancel)
    app.router.add_get("/users", users)
    app.router.add_post("/users/{action:allow|ban|unban}", change_user)
    app.router.add_get("/history", history)
    app.router.add_post("/history/wipe", wipe)
    app.router.add_get("/stats", stats)
    app.router.add_post("/backup", backup)
    return app


async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    jobs = service.jobs()
    engines = [{**row, "url": redact(str(row["url"]))} for row in service.engines.describe()]
    return web.json_response({
        "up_since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(service.started_at)),
        "adapters": request.app[INFO].get("adapters", []),
        "model": service.model,
        "engines": engines,
        "queued": sum(1 for j in jobs if j["state"] == "queued"),
        "running": sum(1 for j in jobs if j["state"] == "running"),
        "tokens_per_second_1m": round(service.tokens_per_second(), 2),
    })  # fmt: skip


async def models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    found = local_models(service.models_dir, request.app[INFO].get("model_spec", service.model))
    rows = [{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(m).items()}
            for m in found]  # fmt: skip
    return web.json_response(rows)


async def use_model(request: web.Request) -> web.Response:
    body = await request.json()
    started = time.monotonic()
    name = await request.app[SERVICE].switch_model(str(body["model"]), now=bool(body.get("now")))
    request.app[INFO]["model_spec"] = str(body["model"])
    return web.json_response({"model": name, "seconds": round(time.monotonic() - started, 2)})


async def queue(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].jobs())


async def cancel(request: web.Request) -> web.Response:
    body = await request.json()
    service = request.app[SERVICE]
    if body.get("job") is not None:
        count = int(await service.cancel_job(int(body["job"])))
    else:
        count = await service.cancel_person(*split_person(str(body.get("user", ""))))
    return web.json_response({"cancelled": count})


async def users(request: web.Request) -> web.Response:
    rows = await store_admin.people(request.app[SERVICE].store)
    return web.json_response([dataclasses.asdict(p) for p in rows])


async def change_user(request: web.Request) -> web.Response:
    body = await request.json()
    platform, user_id = split_person(str(body.get("user", "")))
    service, action = request.app[SERVICE], request.match_info["action"]
    if action == "ban":
        await service.store.ban(platform, user_id, str(body.get("reason", "")))
        await service.cancel_person(platform, user_id)
    elif action == "unban":
        await service.store.unban(platform, user_id)
    else:
        await store_admin.allow(service.store, platform, user_id)
        service.allowed_at_runtime.add((platform, user_id))
    return web.json_response({"user": user_key(platform, user_id), "done": action})


async def history(request: web.Request) -> web.Response:
    platform, user_id = split_person(request.query.get("user", ""))
    rows = await store_admin.history(request.app[SERVICE].store, platform, user_id)
    return web.json_response(rows)


async def wipe(request: web.Request) -> web.Response:
    body = await request.json()
    platform, user_id = split_person(str(body.get("user", "")))
    return web.json_response({"deleted": await store_admin.wipe(
        request.app[SERVICE].store, platform, user_id)})  # fmt: skip


async def backup(request: web.Request) -> web.Response:
    body = await request.json()
    store = request.app[SERVICE].store
    if store.path is None or not isinstance(body, dict) or not body.get("path"):
        return web.json_response({"error": "give a PATH (and a database on disk)"}, status=400)
    try:
        made = await backup_database(store.path, Path(str(body["path"])).expanduser())
    except ParleyError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(
        {"path": str(made.path), "bytes": made.bytes, "seconds": round(made.seconds, 3)}
    )


async def stats(request: web.Request) -> web.Response:
    store = request.app[SERVICE].store
    by_user, by_model = (
        await store_admin.usage(store, "user"),
        await store_admin.usage(store, "model"),
    )
    return web.json_response({
        "users": [dataclasses.asdict(r) for r in by_user],
        "models": [dataclasses.asdict(r) for r in by_model],
    })  # fmt: skip


async def serve_admin(
    service: ChatService, socket: Path, token: str, info: dict[str, Any], write_token: bool
) -> web.AppRunner:
    """Listen on ``socket`` (mode 600); ``write_token`` leaves the token beside it (mode 600).
    ConfigError, one line, when the socket's folder cannot take them (read-only, full)."""
    runner = web.AppRunner(create_admin_app(service, token, info), access_log=None)
    await runner.setup()
    old_mask = os.umask(0o177)
    try:
        make_private_folder(socket.parent)
        socket.unlink(missing_ok=True)
        await web.UnixSite(runner, str(socket)).start()
        if write_token:
            _write_private(token_path(socket), token)
        os.chmod(socket, 0o600)
    except OSError as exc:
        await runner.cleanup()
        fault = storage_fault(exc) or exc.strerror or str(exc)
        raise ConfigError(
            f"cannot open the admin socket {socket} (ADMIN_SOCKET, else beside DATABASE_PATH): "
            f"{fault}"
        ) from exc
    finally:
        os.umask(old_mask)
    return runner


def _write_private(path: Path, text: str) -> None:
    """Write a fresh mode-600 file: a stale one (another mode, a link) is replaced, not reused."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as sink:
        sink.write(text)
