"""The engine's side of common/progress.py: progress lines on stdout while a model downloads,
when the bot that started this engine asked for them (``PARLEY_PROGRESS=lines``)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from common.progress import Progress, wanted

if TYPE_CHECKING:
    from huggingface_hub.utils.tqdm import tqdm as HfTqdm

EVERY = 0.5  # seconds between lines while bytes arrive


def report(stage: str, what: str, done: int, total: int | None) -> None:
    """One progress line for the bot, if it asked for them."""
    if wanted():
        print(Progress(stage, what, done, total).line(), flush=True)


def download_bar(filename: str) -> type[HfTqdm] | None:
    """The ``tqdm_class`` for ``hf_hub_download`` of ``filename``: progress lines when the bot
    asked for them, else None (huggingface_hub's own bar on a terminal)."""
    if not wanted():
        return None
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class Lines(hf_tqdm):
        """Counts bytes as tqdm does, draws nothing, says where it is every ``EVERY`` s."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._sink = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            self._said = 0.0
            self._ended = False
            kwargs["disable"] = False  # a disabled bar counts nothing
            kwargs["file"] = self._sink
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if time.monotonic() - self._said >= EVERY:
                self._say()
            return shown

        def close(self) -> None:
            if not self._ended:
                self._ended = True
                self._say()
            super().close()
            self._sink.close()

        def _say(self) -> None:
            self._said = time.monotonic()
            total = int(self.total) if self.total else None
            report("download", filename, int(self.n), total)

    return Lines
