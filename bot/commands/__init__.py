"""Every chat command and button, defined once: name, help, who may use it, its argument, and
what it does through the chat service. The Telegram, Discord and terminal adapters translate
their platform's events into ``run_command`` / ``press_button`` and render the ``Reply``; their
command menus are generated from ``COMMANDS``. A new command is one ``Command`` in
bot/commands/chat_commands.py; a new button one ``Button`` in bot/commands/buttons.py.
"""

from bot.commands.buttons import BUTTONS, STOP, button_data, press_button
from bot.commands.chat_commands import COMMANDS, find_command
from bot.commands.run import run_command, split_command
from bot.commands.shape import Argument, Button, Command, CommandCall, Place, Press, Reply

__all__ = [
    "BUTTONS",
    "COMMANDS",
    "STOP",
    "Argument",
    "Button",
    "Command",
    "CommandCall",
    "Place",
    "Press",
    "Reply",
    "button_data",
    "find_command",
    "press_button",
    "run_command",
    "split_command",
]
