"""What the bot's process and the engine's process both need, written once: the log formats with
request ids (log_context.py) and the masking of secrets (redact.py). Imports nothing from
``bot``, ``engine``, ``adapters`` or ``parley``."""
