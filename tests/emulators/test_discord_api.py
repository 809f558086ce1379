"""The Discord emulator against the real discord.py client: what an adapter will rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.emulators.discord_api import DiscordEmulator

USER = 424242
OTHER = 515151


class StopView(discord.ui.View):
    def __init__(self, pressed: list[int]) -> None:
        super().__init__(timeout=None)
        self.pressed = pressed

    @discord.ui.button(label="Stop", custom_id="stop", style=discord.ButtonStyle.danger)
    async def stop_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[StopView]
    ) -> None:
        self.pressed.append(interaction.user.id)
        await interaction.response.edit_message(content="stopped", view=None)


class Feedback(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Text", custom_id="text")

    def __init__(self, got: list[str]) -> None:
        super().__init__(custom_id="feedback")
        self.got = got

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.got.append(self.text.value)
        await interaction.response.send_message("thanks", ephemeral=True)


class Bot(discord.Client):
    """A small bot shaped like Parley's adapter: slash command, DMs/mentions, a Stop button."""

    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[discord.Message] = []
        self.prompts: list[str] = []
        self.pressed: list[int] = []
        self.feedback: list[str] = []
        self.errors: list[Exception] = []
        self.resumed = asyncio.Event()
        self._register()

        @self.tree.error
        async def on_error(interaction: discord.Interaction, error: Exception) -> None:
            self.errors.append(error)

    def _register(self) -> None:
        @self.tree.command(name="chat", description="Talk to the model")
        async def chat(interaction: discord.Interaction, prompt: str) -> None:
            self.prompts.append(prompt)
            await interaction.response.defer()
            await interaction.edit_original_response(content="Thinking about")
            await interaction.edit_original_response(
                content=f"Answer to {prompt}", view=StopView(self.pressed)
            )
            await interaction.followup.send("done")

        async def topics(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            names = ["alpha", "beta", "alps"]
            return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

        @self.tree.command(name="pick", description="Autocomplete")
        @app_commands.autocomplete(topic=topics)
        async def pick(interaction: discord.Interaction, topic: str, count: int = 1) -> None:
            await interaction.response.send_message(f"{topic} x{count}")

        @self.tree.command(name="feedback", description="Opens a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Feedback(self.feedback))

        @self.tree.command(name="slow", description="Answers too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.2)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                self.errors.append(exc)

    async def on_message(self, message: discord.Message) -> None:
        assert self.user is not None
        if message.author.id != self.user.id:
            self.seen.append(message)

    async def on_resumed(self) -> None:
        self.resumed.set()


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator()
    await emulator.start()
    with emulator.patch_discord():
        yield emulator
    await emulator.stop()


async def run(client: Bot, emu: DiscordEmulator) -> asyncio.Task[None]:
    await client.login(emu.token)
    task = asyncio.create_task(client.connect())
    await asyncio.wait_for(client.wait_until_ready(), 5)
    return task


@pytest.fixture
async def bot(emu: DiscordEmulator) -> AsyncIterator[Bot]:
    client = Bot()
    task = await run(client, emu)
    yield client
    await client.close()
    await asyncio.wait_for(task, 5)


def channel(bot: Bot, emu: DiscordEmulator) -> discord.TextChannel:
    found = bot.get_channel(emu.channel_id)
    assert isinstance(found, discord.TextChannel)
    return found


async def test_login_and_ready(bot: Bot, emu: DiscordEmulator) -> None:
    assert bot.user is not None and bot.user.id == emu.bot_id
    assert bot.application_id == emu.application_id
    assert [g.id for g in bot.guilds] == [emu.guild_id]
    assert emu.requests_to("GET", "/users/@me") and emu.requests_to(
        "GET", "/oauth2/applications/@me"
    )
    conn = emu.gateway.connections[0]
    assert conn.query["compress"] == "zlib-stream"  # asked for, but text frames are accepted
    assert conn.received[0]["op"] == 1  # a heartbeat straight after HELLO, then IDENTIFY
    assert conn.received[1]["op"] == 2
    assert conn.received[1]["d"]["intents"] & (1 << 15)


async def test_sync_records_commands(bot: Bot, emu: DiscordEmulator) -> None:
    synced = await bot.tree.sync()
    assert sorted(c.name for c in synced) == ["chat", "feedback", "pick", "slow"]
    chat = next(c for c in emu.synced_commands[None] if c["name"] == "chat")
    assert chat["options"][0]["name"] == "prompt" and chat["options"][0]["type"] == 3
    guild = discord.Object(emu.guild_id)
    bot.tree.copy_global_to(guild=guild)
    await bot.tree.sync(guild=guild)
    assert len(emu.synced_commands[emu.guild_id]) == 4
    assert (await bot.tree.fetch_commands())[0].id == int(emu.synced_commands[None][0]["id"])


async def test_slash_command_defer_edits_followup(bot: Bot, emu: DiscordEmulator) -> None:
    await bot.tree.sync()
    record = await emu.run_slash_command("chat", {"prompt": "hello"}, user_id=USER)
    await emu.wait_for(lambda: record.followup_ids)
    assert bot.prompts == ["hello"]
    assert record.callback_types == [5]
    original = emu.messages[record.original_id or 0]
    assert original.history == ["Thinking about", "Answer to hello"]
    assert not original.loading and original.type == 20
    assert original.custom_ids() == {"stop": 2}
    followup = emu.messages[record.followup_ids[0]]
    assert followup.content == "done" and followup.channel_id == emu.channel_id
    assert emu.requests_to("POST", f"/interactions/{record.id}/*/callback")[0].query == {
        "with_response": "1"
    }
    assert len(emu.requests_to("PATCH", "/webhooks/*/messages/@original")) == 2

    # The Stop button on the answer reaches the view callback, which edits the message.
    press = await emu.press_button(original.id, "stop", OTHER)
    await emu.wait_for(lambda: press.callback_types)
    assert bot.pressed == [OTHER]
    assert press.callback_types == [7]
    assert original.history[-1] == "stopped" and original.components == []


async def test_followup_right_after_defer_replaces_thinking(emu: DiscordEmulator) -> None:
    client = Bot()

    @client.tree.command(name="quick", description="defer then follow up")
    async def quick(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True)
        await interaction.followup.send("here")

    task = await run(client, emu)
    try:
        record = await emu.run_slash_command("quick", user_id=USER, guild=False)
        await emu.wait_for(lambda: emu.messages.get(record.original_id or 0, None))
        original = emu.messages[record.original_id or 0]
        await emu.wait_for(lambda: original.history)
        assert original.history == ["here"] and original.ephemeral and not record.followup_ids
        assert original.channel_id == emu.dm_channel(USER) and original.guild_id is None
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def test_autocomplete_and_typed_options(bot: Bot, emu: DiscordEmulator) -> None:
    await bot.tree.sync()
    record = await emu.autocomplete("pick", "topic", "al", user_id=USER)
    assert record.callback_types == [8]
    assert [c["value"] for c in record.choices or []] == ["alpha", "alps"]
    run_ = await emu.run_slash_command("pick", {"topic": "beta", "count": 3}, user_id=USER)
    await emu.wait_for(lambda: run_.original_id)
    assert emu.messages[run_.original_id or 0].content == "beta x3"
    assert run_.data["options"][1] == {"name": "count", "type": 4, "value": 3}


async def test_modal_round_trip(bot: Bot, emu: DiscordEmulator) -> None:
    opened = await emu.run_slash_command("feedback", user_id=USER)
    await emu.wait_for(lambda: opened.modal)
    assert opened.callback_types == [9] and opened.modal and opened.modal["title"] == "Feedback"
    submitted = await emu.submit_modal(opened, {"text": "great"})
    await emu.wait_for(lambda: submitted.callback_types)
    assert bot.feedback == ["great"]
    assert emu.messages[submitted.original_id or 0].ephemeral


async def test_dm_and_mention_reach_on_message(bot: Bot, emu: DiscordEmulator) -> None:
    dm_id = await emu.send_dm(USER, "hi in private")
    mention_id = await emu.mention_bot(USER, None, "hi in public")
    plain_id = await emu.send_message(OTHER, None, "just chatting")
    await emu.wait_for(lambda: len(bot.seen) == 3)
    dm, mention, plain = bot.seen
    assert bot.user is not None
    assert (dm.id, dm.content, dm.guild) == (dm_id, "hi in private", None)
    assert isinstance(dm.channel, discord.DMChannel) and dm.author.id == USER
    assert mention.id == mention_id and bot.user.mentioned_in(mention)
    assert mention.content == f"<@{emu.bot_id}> hi in public" and mention.guild is not None
    assert plain.id == plain_id and not bot.user.mentioned_in(plain)

    # The bot answers in the DM (a reply) and types first; both are recorded.
    async with dm.channel.typing():
        reply = await dm.reply("hello back")
    record = emu.messages[reply.id]
    assert record.reference_id == dm_id and record.channel_id == emu.dm_channel(USER)
    assert emu.typing[0][0] == emu.dm_channel(USER)
    # A user reply to the bot's message counts as a mention of the bot, as on Discord.
    await emu.send_dm(USER, "and more", reply_to=reply.id)
    await emu.wait_for(lambda: len(bot.seen) == 4)
    assert bot.user.mentioned_in(bot.seen[3])

    # A DM the bot starts itself: GET users/{id}, POST users/@me/channels, then the message.
    other = await bot.fetch_user(OTHER)
    sent = await other.send("proactive")
    assert emu.messages[sent.id].channel_id == emu.dm_channel(OTHER)
    assert emu.requests_to("POST", "/users/@me/channels")[0].body == {"recipient_id": OTHER}


async def test_content_is_blanked_without_the_intent(emu: DiscordEmulator) -> None:
    client = Bot(message_content=False)
    task = await run(client, emu)
    try:
        await emu.send_message(USER, None, "hidden")
        await emu.mention_bot(USER, None, "visible")
        await emu.send_dm(USER, "private")
        await emu.wait_for(lambda: len(client.seen) == 3)
        assert [m.content for m in client.seen] == ["", f"<@{emu.bot_id}> visible", "private"]
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def test_429_with_via_is_retried(bot: Bot, emu: DiscordEmulator) -> None:
    emu.fail_next("POST", "/channels/*/messages", "429", retry_after=0.05)
    message = await channel(bot, emu).send("after a rate limit")
    statuses = [r.status for r in emu.requests_to("POST", "/channels/*/messages")]
    assert statuses == [429, 200]
    assert [m.content for m in emu.bot_messages()] == ["after a rate limit"]
    assert emu.messages[message.id].content == "after a rate limit"


async def test_429_without_via_raises(bot: Bot, emu: DiscordEmulator) -> None:
    emu.fail_next("POST", "/channels/*/messages", "429", via=False)
    with pytest.raises(discord.HTTPException) as info:
        await channel(bot, emu).send("never")
    assert info.value.status == 429
    assert emu.bot_messages() == []


async def test_interaction_429_without_via_raises(bot: Bot, emu: DiscordEmulator) -> None:
    emu.fail_next("PATCH", "/webhooks/*/@original", "429", via=False)
    record = await emu.run_slash_command("chat", {"prompt": "x"}, user_id=USER)
    await emu.wait_for(lambda: bot.errors)
    error = bot.errors[0]
    assert isinstance(error, app_commands.CommandInvokeError)
    assert isinstance(error.original, discord.HTTPException) and error.original.status == 429
    assert record.callback_types == [5]
    assert emu.messages[record.original_id or 0].loading  # the edit never landed


async def test_server_error_and_dropped_connection(bot: Bot, emu: DiscordEmulator) -> None:
    emu.fail_next("POST", "/channels/*/typing", "drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):  # not retried, not an HTTPException
        await channel(bot, emu).typing()
    assert emu.requests[-1].status == 0 and emu.typing == []
    emu.fail_next("*", "/channels/*/messages", "500")
    started = time.monotonic()
    await channel(bot, emu).send("after a 500")  # discord.py sleeps 1 s and retries
    assert time.monotonic() - started >= 0.9
    assert [r.status for r in emu.requests_to("POST", "/channels/*/messages")] == [500, 200]


async def test_rate_limit_headers_are_honoured(bot: Bot, emu: DiscordEmulator) -> None:
    emu.bucket_limit, emu.bucket_window = 2, 0.3
    target = channel(bot, emu)
    started = time.monotonic()
    for i in range(3):
        await target.send(f"n{i}")
    assert time.monotonic() - started >= 0.2  # waited on X-RateLimit-Remaining: 0
    assert [r.status for r in emu.requests_to("POST", "/channels/*/messages")] == [200] * 3


async def test_raw_http_shapes(emu: DiscordEmulator) -> None:
    """What discord.py depends on byte for byte: exact Content-Type, error bodies, Via on 429."""
    emu.bucket_limit = 1
    url = f"{emu.base_url}/api/v10/channels/{emu.channel_id}/messages"
    auth = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.base_url}/api/v10/users/@me") as denied:
            assert denied.status == 401
            assert denied.headers["Content-Type"] == "application/json"
            assert await denied.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.post(url, json={"content": "one"}, headers=auth) as ok:
            assert ok.status == 200 and ok.headers["X-RateLimit-Remaining"] == "0"
            assert {"X-RateLimit-Reset-After", "X-RateLimit-Bucket"} <= set(ok.headers)
        async with http.post(url, json={"content": "two"}, headers=auth) as limited:
            assert limited.status == 429 and "Via" in limited.headers
            body = await limited.json()
            assert body["message"] == "You are being rate limited." and body["global"] is False
        emu.bucket_limit = 50
        bad_reply = {"content": "x", "message_reference": {"message_id": "1"}}
        async with http.post(url, json=bad_reply, headers=auth) as unknown:
            body = await unknown.json()
            assert body["code"] == 50035 and "message_reference" in body["errors"]
        async with http.get(f"{emu.base_url}/api/v10/nowhere", headers=auth) as missing:
            assert missing.status == 404
    assert [m.content for m in emu.bot_messages()] == ["one"]


async def test_content_limit_is_enforced(bot: Bot, emu: DiscordEmulator) -> None:
    target = channel(bot, emu)
    with pytest.raises(discord.HTTPException) as info:
        await target.send("x" * 2001)
    assert (info.value.status, info.value.code) == (400, 50035)
    assert "2000" in str(info.value)
    message = await target.send("x" * 2000)
    with pytest.raises(discord.HTTPException):
        await message.edit(content="y" * 2001)
    with pytest.raises(discord.HTTPException) as empty:
        await target.send("")
    assert empty.value.code == 50006


async def test_late_interaction_answer_is_unknown(bot: Bot, emu: DiscordEmulator) -> None:
    emu.interaction_deadline = 0.1
    record = await emu.run_slash_command("slow", user_id=USER)
    await emu.wait_for(lambda: bot.errors)
    assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
    assert record.callbacks == []


async def test_reconnect_resumes_and_keeps_events(bot: Bot, emu: DiscordEmulator) -> None:
    await emu.force_reconnect()
    await asyncio.wait_for(bot.resumed.wait(), 5)
    last = emu.gateway.connections[-1]
    assert last.path == "/resume" and last.received[-1]["op"] == 6
    await emu.send_dm(USER, "still there?")
    await emu.wait_for(lambda: bot.seen)
    assert bot.seen[0].content == "still there?"

    # Events sent while the socket is down are replayed on RESUME.
    await emu.close_gateway(4000)
    await emu.send_dm(USER, "sent while away")
    await emu.wait_for(lambda: len(bot.seen) == 2)
    assert bot.seen[1].content == "sent while away"


async def test_zlib_stream_frames(emu: DiscordEmulator) -> None:
    emu.gateway.compress = True
    client = Bot()
    task = await run(client, emu)
    try:
        await emu.send_dm(USER, "compressed")
        await emu.wait_for(lambda: client.seen)
        assert client.seen[0].content == "compressed"
        assert emu.gateway.connections[0].compressor is not None
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def test_wrong_token_fails_login(emu: DiscordEmulator) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert emu.requests[-1].status == 401


async def test_wrong_gateway_token_closes_4004(emu: DiscordEmulator) -> None:
    client = Bot()
    await client.login(emu.token)
    emu.gateway.token = "rotated"
    with pytest.raises(discord.ConnectionClosed) as info:
        await asyncio.wait_for(client.connect(), 5)
    assert info.value.code == 4004
    await client.close()
