"""The buttons under an answer (⏹ Stop while it is written), defined once; and their callback
data (Telegram's callback_data, Discord's custom_id): "id:owner[:nonce]", so a press names
the button and the person whose answer it is on. Runs on the bot's event loop."""

from __future__ import annotations

from bot.chat.service import ChatService
from bot.commands import texts
from bot.commands.shape import Button, Press, Reply


async def stop(press: Press) -> Reply:
    await press.service.cancel(press.platform, press.chat_id, press.owner_id)
    return Reply(texts.STOPPING, quiet=True)  # the answer itself ends "⏹ stopped"


STOP = Button("stop", "Stop", "⏹", "stop", stop)
BUTTONS: tuple[Button, ...] = (STOP,)


def button_data(button: Button, owner_id: str | int, nonce: str = "") -> str:
    """What a press of ``button`` on ``owner_id``'s answer sends back; ``nonce`` makes it
    unique per answer where the platform routes presses by it (Discord)."""
    return f"{button.id}:{owner_id}" + (f":{nonce}" if nonce else "")


def parse_button_data(data: str) -> tuple[Button, str] | None:
    """The button and the owner's id ``data`` names, or None when it names none."""
    button_id, _, rest = data.partition(":")
    owner = rest.partition(":")[0]
    button = next((b for b in BUTTONS if b.id == button_id), None)
    return (button, owner) if button is not None and owner else None


async def press_button(
    service: ChatService, platform: str, chat_id: str, presser_id: str, data: str
) -> Reply | None:
    """``presser_id`` pressed the button ``data`` names: only the answer's owner may; None
    when ``data`` names no button of Parley's."""
    parsed = parse_button_data(data)
    if parsed is None:
        return None
    button, owner = parsed
    if presser_id != owner:
        return Reply(texts.only_the_asker(button.verb))
    return await button.run(Press(service, platform, chat_id, owner))
