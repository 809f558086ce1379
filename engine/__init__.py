"""Parley's inference engine: one GGUF model, many conversations, streamed over HTTP.

The engine imports nothing from ``bot``; the bot talks to it only through the HTTP contract
in DESIGN.md, so any OpenAI-compatible server can stand in for it.
"""
