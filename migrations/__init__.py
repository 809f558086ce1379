"""SQL migrations, applied in order by bot.migrations (shipped as package data)."""
