"""A loopback Telegram Bot API server, so the real python-telegram-bot client can be tested.

Why an emulator and not mocks: streaming edits, the plain-text fallback and error handling only
show against a server that answers like Telegram -- real long polling, per-chat message ids,
"message is not modified", the length limit (4096 UTF-16 units of visible text), entity parsing
errors, 429s, a 502 from the proxy in front, a connection that drops. Point PTB at it with
``ApplicationBuilder().token(emu.token).base_url(f"{emu.base_url}/bot")
.base_file_url(f"{emu.base_url}/file/bot")``.

Tests script users with the ``user_*`` / ``press_button`` drivers and assert on the records
(``messages``, ``chat_actions``, ``callback_answers``, ``commands``, ``requests``); benchmarks time
the bot with ``requests[i].at`` and ``handed_out``. Everything runs on the event loop that called
``start()``; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

from aiohttp import web

from tests.emulators.telegram_models import (
    CHAT_ACTIONS,
    JSON,
    NGINX_502,
    NOT_MODIFIED,
    ApiCall,
    ApiError,
    BotMessage,
    CallbackAnswer,
    auto_entities,
    bad_request,
    chat_json,
    content,
    decode_params,
    inline_markup,
    parse_text,
    photo_sizes,
    scope_key,
    set_content,
    sticker,
    to_entities,
    user_json,
)

T = TypeVar("T")
FaultKind = Literal["429", "502", "drop", "late"]
Handler = Callable[[JSON], Awaitable[Any]]


class TelegramEmulator:
    """The Bot API for one bot; ``async with TelegramEmulator() as emu:`` binds a free port."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        bot_id: int = 123456,
        username: str = "parley_bot",
        first_name: str = "Parley",
    ) -> None:
        self.token = token
        self.bot_user: JSON = {
            "id": bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        self.base_url = ""
        self.requests: list[ApiCall] = []
        self.messages: dict[tuple[int, int], BotMessage] = {}
        self.chat_actions: list[tuple[int, str]] = []
        self.callback_answers: list[CallbackAnswer] = []
        # (chat_id, message_id) of a user message -> when getUpdates first handed it out.
        self.handed_out: dict[tuple[int, int], float] = {}
        self.command_sets: dict[str, list[JSON]] = {}
        self._chats: dict[int, JSON] = {}
        self._users: dict[int, JSON] = {}
        self._live: dict[tuple[int, int], JSON] = {}  # every undeleted message, as Telegram sends
        self._last_id: dict[int, int] = {}
        self._updates: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._open_queries: set[str] = set()
        self._arrived = asyncio.Event()
        self._closing = False
        self._faults: dict[str, list[tuple[FaultKind, int]]] = {}
        self._raw_answers: dict[str, list[Any]] = {}
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Handler] = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_reply_markup,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # A bot that exits mid long poll drops its connection: its poll ends there, as on
        # Telegram, instead of lingering to hand the next update to a closed socket.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Wake every long poll first, so shutdown does not wait out their timeouts."""
        self._closing = True
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- test controls and records -------------------------------------------------------------

    def fail_next(self, method: str, kind: FaultKind, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` get a 429, an nginx 502, a dropped socket, or
        ("late") are carried out but answered only ``retry_after`` seconds later."""
        self._faults.setdefault(method.lower(), []).extend([(kind, retry_after)] * times)

    def answer_raw(self, method: str, body: Any, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get ``body`` as JSON with status 200, whatever
        it is (a JSON array instead of the ``{"ok", "result"}`` envelope, say); ``times=0``
        ends what is left of an earlier ``answer_raw``."""
        self._raw_answers[method.lower()] = [body] * times

    def push_raw_update(self, payload: JSON) -> int:
        """An update with an id of its own and ``payload`` as is, however wrong (a message
        without ``chat`` or ``date``, say); returns its update id."""
        self._push(copy.deepcopy(payload))
        return int(self._updates[-1]["update_id"])

    @property
    def commands(self) -> list[JSON]:
        """Commands set for the default scope and no language."""
        return self.command_sets.get("default", [])

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates ``offset``."""
        return len(self._updates)

    def bot_messages(self, chat_id: int | None = None) -> list[BotMessage]:
        """The bot's messages (deleted ones too), oldest first."""
        found = [m for m in self.messages.values() if chat_id in (None, m.chat_id)]
        return sorted(found, key=lambda m: (m.chat_id, m.message_id))

    def calls(self, method: str) -> list[ApiCall]:
        return [c for c in self.requests if c.method.lower() == method.lower()]

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Poll ``predicate`` until it is truthy and return its value (AssertionError if not)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                recent = ", ".join(c.method for c in self.requests[-10:])
                raise AssertionError(f"not true within {timeout}s; last requests: {recent}")
            await asyncio.sleep(0.01)

    # -- drivers: what users do ----------------------------------------------------------------

    async def user_says(
        self,
        text: str,
        *,
        chat_id: int,
        user_id: int,
        first_name: str = "Alice",
        chat_type: str = "private",
        group_title: str | None = None,
        reply_to_message_id: int | None = None,
        entities: list[JSON] | None = None,
    ) -> int:
        """A text message; ``/commands`` and ``@mentions`` get entities unless given."""
        message = self._user_message(
            chat_id, user_id, first_name, chat_type, group_title, reply_to_message_id
        )
        message["text"] = text
        found = auto_entities(text) if entities is None else entities
        if found:
            message["entities"] = found
        return self._deliver("message", message)

    async def user_sends_photo(
        self,
        *,
        chat_id: int,
        user_id: int,
        caption: str | None = None,
        first_name: str = "Alice",
        chat_type: str = "private",
        group_title: str | None = None,
    ) -> int:
        message = self._user_message(chat_id, user_id, first_name, chat_type, group_title, None)
        message["photo"] = photo_sizes(f"photo{message['message_id']}")
        if caption:
            message["caption"] = caption
            if entities := auto_entities(caption):
                message["caption_entities"] = entities
        return self._deliver("message", message)

    async def user_sends_sticker(
        self,
        *,
        chat_id: int,
        user_id: int,
        emoji: str = "👍",
        first_name: str = "Alice",
        chat_type: str = "private",
        group_title: str | None = None,
    ) -> int:
        message = self._user_message(chat_id, user_id, first_name, chat_type, group_title, None)
        message["sticker"] = sticker(f"sticker{message['message_id']}", emoji)
        return self._deliver("message", message)

    async def user_edits(
        self, message_id: int, new_text: str, *, chat_id: int | None = None
    ) -> None:
        """An ``edited_message`` update; ``chat_id`` is needed only when ids repeat across chats."""
        keys = [
            k
            for k, m in self._live.items()
            if k[1] == message_id and chat_id in (None, k[0]) and not m["from"]["is_bot"]
        ]
        if len(keys) != 1:
            raise LookupError(f"no single user message {message_id} (chat {chat_id}) to edit")
        message = self._live[keys[0]]
        message["text"] = new_text
        message["edit_date"] = int(time.time())
        message.pop("entities", None)
        if entities := auto_entities(new_text):
            message["entities"] = entities
        self._deliver("edited_message", message)

    def user_deletes(self, chat_id: int, message_id: int) -> None:
        """A person deletes a message (the bot's too, in a private chat); bots get no update."""
        key = (chat_id, message_id)
        if self._live.pop(key, None) is None:
            raise LookupError(f"no message {chat_id}/{message_id} to delete")
        if key in self.messages:
            self.messages[key].deleted = True

    async def press_button(
        self, message_id: int, callback_data: str, user_id: int, chat_id: int
    ) -> str:
        """A callback_query for an inline button that the message shows now; returns its id."""
        message = self._live.get((chat_id, message_id))
        markup = (message or {}).get("reply_markup") or {}
        buttons = [b for row in markup.get("inline_keyboard", []) for b in row]
        if message is None or not any(b.get("callback_data") == callback_data for b in buttons):
            raise LookupError(f"message {chat_id}/{message_id} shows no button {callback_data!r}")
        query_id = str(next(self._query_ids))
        self._open_queries.add(query_id)
        user = self._users.get(user_id) or user_json(user_id, "Alice")
        query = {
            "id": query_id,
            "from": user,
            "message": copy.deepcopy(message),
            "chat_instance": str(chat_id),
            "data": callback_data,
        }
        self._push({"callback_query": query})
        return query_id

    def _user_message(
        self,
        chat_id: int,
        user_id: int,
        first_name: str,
        chat_type: str,
        group_title: str | None,
        reply_to: int | None,
    ) -> JSON:
        if reply_to is not None and (chat_id, reply_to) not in self._live:
            raise LookupError(f"no message {chat_id}/{reply_to} to reply to")
        user = self._users[user_id] = user_json(user_id, first_name)
        chat = self._chats[chat_id] = chat_json(chat_id, chat_type, group_title, user)
        message: JSON = {"message_id": self._new_id(chat_id), "date": int(time.time())}
        message.update(chat=chat, **{"from": user})
        if reply_to is not None:
            message["reply_to_message"] = self._reply_target(chat_id, reply_to)
        return message

    def _deliver(self, kind: str, message: JSON) -> int:
        self._live[(message["chat"]["id"], message["message_id"])] = message
        self._push({kind: copy.deepcopy(message)})
        return int(message["message_id"])

    def _push(self, payload: JSON) -> None:
        self._updates.append({"update_id": next(self._update_ids), **payload})
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _new_id(self, chat_id: int) -> int:
        self._last_id[chat_id] = self._last_id.get(chat_id, 0) + 1
        return self._last_id[chat_id]

    def _reply_target(self, chat_id: int, message_id: int) -> JSON:
        target = self._live.get((chat_id, message_id))
        if target is None:
            raise bad_request("message to be replied not found")
        return {k: v for k, v in copy.deepcopy(target).items() if k != "reply_to_message"}

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        method = request.match_info["method"]
        params = decode_params(dict(request.query))
        if request.content_type == "application/json" and request.body_exists:
            params.update(await request.json())
        elif request.body_exists:
            form = await request.post()
            params.update(decode_params({k: v for k, v in form.items() if isinstance(v, str)}))
        call = ApiCall(method, params, at=arrived)
        self.requests.append(call)
        late = 0
        if request.match_info["token"] != self.token:
            return _error(ApiError(401, "Unauthorized"))
        if faults := self._faults.get(method.lower()):
            kind, retry_after = faults.pop(0)
            call.fault = kind
            if kind != "late":
                return _fault(request, kind, retry_after)
            late = retry_after
        if raw := self._raw_answers.get(method.lower()):
            call.fault = "raw"
            return web.json_response(raw.pop(0))
        handler = self._methods.get(method.lower())
        if handler is None:
            return _error(ApiError(404, "Not Found"))
        try:
            result = await handler(params)
        except ApiError as exc:
            return _error(exc)
        if late:  # done, as Telegram does it, but the answer comes late
            await asyncio.sleep(late)
        return web.json_response({"ok": True, "result": result})

    # -- methods -------------------------------------------------------------------------------

    async def _get_me(self, p: JSON) -> JSON:
        flags = {"can_read_all_group_messages": False, "supports_inline_queries": False}
        return {**self.bot_user, "can_join_groups": True, **flags}

    async def _delete_webhook(self, p: JSON) -> bool:
        if p.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, p: JSON) -> JSON:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}

    async def _get_updates(self, p: JSON) -> list[JSON]:
        """Long polling: confirm below ``offset``, then wait up to ``timeout`` for anything new."""
        offset = int(p.get("offset") or 0)
        limit = min(max(int(p.get("limit") or 100), 1), 100)
        allowed = p.get("allowed_updates") or []
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(p.get("timeout") or 0)
        while True:
            batch = [u for u in self._updates if not allowed or any(k in u for k in allowed)]
            remaining = deadline - loop.time()
            if batch or self._closing or remaining <= 0:
                self._note_handed_out(batch[:limit])
                return batch[:limit]
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), remaining)

    def _note_handed_out(self, batch: list[JSON]) -> None:
        now = time.perf_counter()
        for update in batch:
            message = update.get("message")
            if isinstance(message, dict) and "chat" in message:  # raw updates may lack it
                self.handed_out.setdefault((message["chat"]["id"], message["message_id"]), now)

    def _chat_id(self, p: JSON) -> int:
        raw = p.get("chat_id")
        chat_id = int(raw) if isinstance(raw, int | str) and str(raw).lstrip("-").isdigit() else 0
        if chat_id not in self._chats:
            raise bad_request("chat not found")
        return chat_id

    async def _send_message(self, p: JSON) -> JSON:
        chat_id = self._chat_id(p)
        text, parse_mode = str(p.get("text", "")), p.get("parse_mode")
        plain, spans = parse_text(text, parse_mode)
        reply_to = (p.get("reply_parameters") or {}).get("message_id") or p.get(
            "reply_to_message_id"
        )
        message: JSON = {"message_id": 0, "date": int(time.time()), "chat": self._chats[chat_id]}
        message["from"] = self.bot_user
        if reply_to:
            message["reply_to_message"] = self._reply_target(chat_id, int(reply_to))
        set_content(message, plain, to_entities(plain, spans), inline_markup(p.get("reply_markup")))
        message["message_id"] = message_id = self._new_id(chat_id)
        self._live[(chat_id, message_id)] = message
        self.messages[(chat_id, message_id)] = BotMessage(
            chat_id,
            message_id,
            [text],
            [parse_mode],
            message.get("reply_markup"),
            int(reply_to) if reply_to else None,
        )
        return message

    def _own_message(self, p: JSON, verb: str) -> tuple[JSON, BotMessage]:
        chat_id = self._chat_id(p)
        key = (chat_id, int(p.get("message_id") or 0))
        if key not in self._live:
            raise bad_request(f"message to {verb} not found")
        if key not in self.messages:
            raise bad_request(f"message can't be {verb}ed")
        return self._live[key], self.messages[key]

    async def _edit_message_text(self, p: JSON) -> JSON:
        text, parse_mode = str(p.get("text", "")), p.get("parse_mode")
        plain, spans = parse_text(text, parse_mode)
        message, record = self._own_message(p, "edit")
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = inline_markup(p.get("reply_markup"))
        entities = to_entities(plain, spans)
        if (plain, entities, markup) == content(message):
            raise bad_request(NOT_MODIFIED)
        set_content(message, plain, entities, markup)
        message["edit_date"] = int(time.time())
        record.texts.append(text)
        record.parse_modes.append(parse_mode)
        record.reply_markup = markup
        return message

    async def _edit_reply_markup(self, p: JSON) -> JSON:
        message, record = self._own_message(p, "edit")
        markup = inline_markup(p.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise bad_request(NOT_MODIFIED)
        text, entities, _ = content(message)
        set_content(message, text, entities, markup)
        message["edit_date"] = int(time.time())
        record.reply_markup = markup
        return message

    async def _delete_message(self, p: JSON) -> bool:
        chat_id = self._chat_id(p)
        key = (chat_id, int(p.get("message_id") or 0))
        if key not in self._live:
            raise bad_request("message to delete not found")
        if key not in self.messages and self._chats[chat_id]["type"] != "private":
            raise bad_request("message can't be deleted")
        del self._live[key]
        if key in self.messages:
            self.messages[key].deleted = True
        return True

    async def _send_chat_action(self, p: JSON) -> bool:
        chat_id = self._chat_id(p)
        action = str(p.get("action", ""))
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self.chat_actions.append((chat_id, action))
        return True

    async def _answer_callback_query(self, p: JSON) -> bool:
        query_id = str(p.get("callback_query_id", ""))
        if query_id not in self._open_queries:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        self._open_queries.discard(query_id)
        self.callback_answers.append(
            CallbackAnswer(query_id, p.get("text"), bool(p.get("show_alert", False)))
        )
        return True

    async def _set_my_commands(self, p: JSON) -> bool:
        commands = [
            {"command": c["command"], "description": c["description"]}
            for c in p.get("commands") or []
        ]
        for command in commands:
            name = command["command"]
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise bad_request("BOT_COMMAND_INVALID")
        self.command_sets[scope_key(p)] = commands
        return True

    async def _get_my_commands(self, p: JSON) -> list[JSON]:
        return self.command_sets.get(scope_key(p), [])

    async def _delete_my_commands(self, p: JSON) -> bool:
        self.command_sets.pop(scope_key(p), None)
        return True


def _error(exc: ApiError) -> web.Response:
    body: JSON = {"ok": False, "error_code": exc.code, "description": exc.description}
    if exc.parameters:
        body["parameters"] = exc.parameters
    return web.json_response(body, status=exc.code)


def _fault(request: web.Request, kind: FaultKind, retry_after: int) -> web.Response:
    if kind == "429":
        detail = f"Too Many Requests: retry after {retry_after}"
        return _error(ApiError(429, detail, {"retry_after": retry_after}))
    if kind == "502":
        return web.Response(status=502, text=NGINX_502, content_type="text/html")
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)
