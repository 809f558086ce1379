"""`parley admin ...`: manage the running bot from a shell on its machine.

Talks to the bot's admin socket with the admin token (ADMIN_TOKEN, or the token the bot wrote
beside its socket). `model pull` works without a running bot. Lists take `--json` for scripts.
Every failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bot.errors import ParleyError
from common import redact

EXAMPLES = {
    "status": "parley admin status --json",
    "model": "parley admin model use ~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf --now",
    "queue": "parley admin queue cancel --user telegram:12345",
    "users": "parley admin users ban discord:4242 --reason spam",
    "history": "parley admin history export telegram:12345 -o alice.jsonl",
    "stats": "parley admin stats --json",
    "backup": "parley admin backup ~/parley-backup.db",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parley admin", description=__doc__.splitlines()[0],
                                epilog="example: parley admin status")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example: {example}")  # fmt: skip

    status = command("status", "uptime, adapters, engine, queue, tokens/s", EXAMPLES["status"])
    status.add_argument("--json", action="store_true")
    model = command("model", "list, pull or switch models", EXAMPLES["model"])
    msub = model.add_subparsers(dest="action", required=True)
    listing = msub.add_parser("list", help="models usable without a download",
                              epilog="example: parley admin model list --json")  # fmt: skip
    listing.add_argument("--json", action="store_true")
    pull = msub.add_parser("pull", help="download a GGUF from the Hugging Face Hub",
                           epilog="example: parley admin model pull "
                                  "Qwen/Qwen2.5-1.5B-Instruct-GGUF --quant Q4_K_M")  # fmt: skip
    pull.add_argument("repo")
    pull.add_argument("filename", nargs="?")
    pull.add_argument("--quant", help="pick the file whose name has this quantization")
    use = msub.add_parser("use", help="switch the running bot to another model",
                          epilog="example: parley admin model use demo --now")  # fmt: skip
    use.add_argument("model", help="NAME, PATH or REPO:FILE")
    use.add_argument("--now", action="store_true", help="stop answers being written first")
    queue = command("queue", "queued and running answers", EXAMPLES["queue"])
    queue.add_argument("--json", action="store_true")
    qsub = queue.add_subparsers(dest="action")
    qcancel = qsub.add_parser("cancel", help="cancel a job, or all of one person's",
                              epilog="example: parley admin queue cancel 42")  # fmt: skip
    qcancel.add_argument("job", nargs="?", type=int)
    qcancel.add_argument("--user", help="PLATFORM:ID")
    users = command("users", "list, allow, ban or unban people", EXAMPLES["users"])
    users.add_argument("action", choices=["list", "allow", "ban", "unban"])
    users.add_argument("user", nargs="?", help="PLATFORM:ID, e.g. telegram:12345")
    users.add_argument("--reason", default="")
    users.add_argument("--json", action="store_true")
    history = command("history", "show, export or wipe one person's messages", EXAMPLES["history"])
    history.add_argument("action", choices=["show", "export", "wipe"])
    history.add_argument("user", help="PLATFORM:ID")
    history.add_argument("-o", "--output", type=Path, help="export to this file (default stdout)")
    history.add_argument("--yes", action="store_true", help="wipe without asking")
    history.add_argument("--json", action="store_true")
    stats = command(
        "stats", "messages, tokens and TTFT per person and per model", EXAMPLES["stats"]
    )
    stats.add_argument("--json", action="store_true")
    backup = command(
        "backup", "copy the live database to PATH (safe while the bot runs)", EXAMPLES["backup"]
    )
    backup.add_argument("path", type=Path)
    return p


class AdminClient:
    def __init__(self, socket: Path, token: str) -> None:
        self.socket, self.token = socket, token

    async def call(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        if not self.socket.exists():
            raise ParleyError(
                f"the bot is not running (no admin socket at {self.socket}); start it with "
                "`parley run`"
            )
        connector = aiohttp.UnixConnector(path=str(self.socket))
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=3600)
        url = f"http://parley{path}"
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, url, json=body, params=query, headers=headers) as response,
            ):
                data = await response.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:
            raise ParleyError(f"the bot is not running (cannot connect to {self.socket})") from exc
        if response.status == 401:
            raise ParleyError("refused: wrong admin token (check ADMIN_TOKEN)")
        if response.status != 200:
            raise ParleyError(str(data.get("error", f"HTTP {response.status}")))
        return data


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def show(data: Any, as_json: bool, columns: Sequence[str]) -> None:
    print(json.dumps(data, indent=2) if as_json else table(data, columns))


async def run(args: argparse.Namespace, client: AdminClient) -> int:
    command, action = args.command, getattr(args, "action", None)
    if command == "status":
        data = await client.call("GET", "/status")
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"up since     {data['up_since']}\nadapters     {', '.join(data['adapters'])}")
            for engine in data["engines"]:
                print(f"engine       {engine['url']} ({engine['kind']}, {engine['status']})")
                print(f"  model      {engine['model']}, n_ctx {engine['n_ctx']}")
                print(f"  slots      {engine['slots_busy']}/{engine['slots_total']} busy, "
                      f"{engine['jobs']} answers, {engine['failures']} failures")  # fmt: skip
                print(f"  tokens     {engine['tokens']}")
            print(f"queue        {data['queued']} queued, {data['running']} running")
            print(f"tokens/s     {data['tokens_per_second_1m']} (last minute)")
    elif command == "model" and action == "list":
        rows = await client.call("GET", "/models")
        for row in rows:
            row["active"] = "*" if row["active"] else ""
            size = row.get("size_bytes")
            row["size"] = f"{size / 2**20:.0f} MiB" if size else "-"
        show(rows, args.json, ["active", "spec", "size", "architecture", "quantization"])
    elif command == "model" and action == "use":
        print(f"loading {args.model} (answers being written finish first)…", file=sys.stderr)
        data = await client.call("POST", "/models/use", {"model": args.model, "now": args.now})
        print(f"now answering with {data['model']} (switched in {data['seconds']} s)")
    elif command == "queue" and action == "cancel":
        if args.job is None and not args.user:
            raise ParleyError("give a JOB id or --user PLATFORM:ID")
        body = {"job": args.job} if args.job is not None else {"user": args.user}
        data = await client.call("POST", "/queue/cancel", body)
        print(f"cancelled {data['cancelled']}")
    elif command == "queue":
        show(await client.call("GET", "/queue"), args.json,
             ["job", "state", "user", "chat", "position", "waiting_s"])  # fmt: skip
    elif command == "users" and args.action == "list":
        show(await client.call("GET", "/users"), args.json,
             ["platform", "platform_user_id", "name", "messages", "banned", "allowed",
              "last_seen"])  # fmt: skip
    elif command == "users":
        if not args.user:
            raise ParleyError(f"users {args.action} needs PLATFORM:ID")
        await client.call("POST", f"/users/{args.action}", {"user": args.user,
                                                             "reason": args.reason})  # fmt: skip
        print(f"{args.action}: {args.user}")
    elif command == "history":
        return await _history(args, client)
    elif command == "backup":
        target = str(args.path.expanduser().resolve())  # the bot may run in another folder
        data = await client.call("POST", "/backup", {"path": target})
        print(f"backed up {data['bytes']:,} bytes to {data['path']} in {data['seconds']} s")
    elif command == "stats":
        data = await client.call("GET", "/stats")
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            columns = ["key", "messages", "prompt_tokens", "completion_tokens", "mean_ttft_ms"]
            print("per person\n" + table(data["users"], columns))
            print("\nper model\n" + table(data["models"], columns))
    return 0


async def _history(args: argparse.Namespace, client: AdminClient) -> int:
    if args.action == "wipe":
        if not args.yes:
            answer = input(f"Delete every message of {args.user}? Type yes: ").strip().lower()
            if answer != "yes":
                print("nothing deleted")
                return 1
        data = await client.call("POST", "/history/wipe", {"user": args.user})
        print(f"deleted {data['deleted']} messages of {args.user}")
        return 0
    rows = await client.call("GET", "/history", user=args.user)
    if args.action == "export":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if args.output:
            args.output.write_text(text, encoding="utf-8")
            print(f"exported {len(rows)} messages to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    elif args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for row in rows:
            print(f"[{row['at']}] #{row['conversation']} {row['role']}: {row['content']}")
    return 0


def pull(args: argparse.Namespace) -> int:
    from bot.models.pull import choose_file, list_repo_ggufs
    from bot.models.pull import pull as download

    filename = args.filename
    if filename is None:
        files = list_repo_ggufs(args.repo)
        if args.quant is None and len(files) != 1:
            print("\n".join(f"{f.name}  {(f.size or 0) / 2**20:.0f} MiB" for f in files))
            print("pick one: parley admin model pull REPO FILENAME (or --quant Q4_K_M)",
                  file=sys.stderr)  # fmt: skip
            return 1
        filename = choose_file(files, args.quant)
    path = download(args.repo, filename, progress=True)
    print(f"{args.repo}:{filename} -> {path}")
    print(f"use it: parley admin model use {args.repo}:{filename}")
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    redact.install()  # a failed pull prints huggingface_hub's error; HF_TOKEN stays out of it
    try:
        if args.command == "model" and args.action == "pull":
            return pull(args)
        from bot.admin.api import admin_socket_path
        from bot.settings import load_settings

        settings = load_settings()
        redact.install(redact.settings_secrets(settings))
        socket = admin_socket_path(settings)
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        token_file = socket.with_suffix(".token")
        if not token and token_file.exists():
            token = token_file.read_text().strip()
        redact.REDACTOR.add(token)
        return asyncio.run(run(args, AdminClient(socket, token)))
    except ParleyError as exc:
        print(f"parley admin: {redact.redact(str(exc))}", file=sys.stderr)
        return 1
