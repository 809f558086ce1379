"""SQL migrations, applied in order by bot.store.migrations (shipped as package data)."""
