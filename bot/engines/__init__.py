"""Engines the bot answers with: specs, probing, the HTTP client and its server dialects,
the pool and routing, and the supervised local engine process.
"""
