"""Running a command: the access check, the admins-only checks and the command itself, in that
order, for every platform; and parsing "/name[@bot] argument" from a chat line. Runs on the
bot's event loop."""

from __future__ import annotations

from bot.chat.access import Access
from bot.commands.shape import Command, CommandCall, Reply


async def run_command(command: Command, call: CommandCall, access: Access) -> Reply:
    """What ``command`` answers ``call``: a refusal (quiet: see ``Reply``) when the asker may
    not use the bot here, the command's admins-only refusal, or its own answer."""
    if (refusal := await access.refusal(call.asker)) is not None:
        return Reply(refusal, quiet=True)
    if not access.is_admin(call.asker):
        if command.admins_only is not None:
            return Reply(command.admins_only)
        argument = command.argument
        if call.argument and argument is not None and argument.admins_only is not None:
            return Reply(argument.admins_only)
    return await command.run(call)


def split_command(line: str) -> tuple[str, str] | None:
    """("name", "argument") for a line "/name[@bot] argument" (the argument stripped, its
    inner lines kept), or None when the line is not a command."""
    parts = line.split(maxsplit=1)
    if not parts or not parts[0].startswith("/") or len(parts[0]) == 1:
        return None
    name = parts[0][1:].partition("@")[0].lower()
    return name, "".join(parts[1:]).strip()
