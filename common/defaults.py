"""Defaults the bot's settings and ``parley engine`` share, so the engine run on its own
serves what the bot would have started (bot/settings.py, engine/cli.py)."""

from common.model_files import DEMO

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q4_k_m.gguf"
DEMO_MODEL = DEMO  # SmolLM2-135M-Instruct (common/model_files.py)
ENGINE_N_CTX = 4096
ENGINE_PARALLEL = 8
KV_CACHE_RAM_MB = 1024  # idle conversations' KV kept in RAM
