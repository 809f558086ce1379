"""How much of a cached sequence a new prompt can reuse: its common prefix, and past a gap.

A conversation at its context limit is trimmed from the start: the bot drops a block of old
turns, so the new prompt is the cached one with a stretch cut out after the system prompt.
Plain prefix reuse keeps only the system prompt and evaluates the whole history again (the
soak saw ``4016 prompt tokens (16 cached)``, 61 s of prompt). llama.cpp can instead remove the
gap and move the cells after it back (``llama_memory_seq_rm`` + ``llama_memory_seq_add``, what
llama-server's ``--cache-reuse`` and context shift do), so only the new turn is evaluated.

The moved cells keep the keys and values computed when the dropped turns were still in front
of them (RoPE positions are corrected exactly; what those turns contributed stays): the
approximation every context-shifting server makes. The bot trims in large steps, so it
happens once per step, not every turn. Pure functions; the scheduler thread calls them.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from engine.slots import common_prefix

PROBE = 16  # tokens of the prompt searched for past the gap: longer, fewer false starts
MAX_CANDIDATES = 64  # places the probe matches that are measured; repetitive text has many


@dataclass(frozen=True)
class Reuse:
    """Keep cached positions ``[0, prefix)`` and ``[prefix + gap, prefix + gap + run)``, the
    latter moved back by ``gap``: ``prefix + run`` prompt tokens need no evaluation."""

    prefix: int
    gap: int = 0
    run: int = 0

    @property
    def tokens(self) -> int:
        return self.prefix + self.run

    @property
    def end(self) -> int:
        """Where the kept cells end in the cached sequence, before the move."""
        return self.prefix + self.gap + self.run


def plan_reuse(
    cached: Sequence[int], prompt: Sequence[int], *, min_run: int, window: int = 0
) -> Reuse:
    """The most of ``cached`` that ``prompt`` can reuse, leaving at least its last token to
    evaluate (its logits are needed).

    Past the common prefix, a stretch of ``cached`` that continues the prompt is reused when
    it is at least ``min_run`` tokens long (0 turns it off). With a sliding window of
    ``window`` tokens the cells older than the window may be gone (llama.cpp recycles them
    and saves only the window when spilling), so the stretch must end where the cached
    sequence ends (one cell short at most, as a spilled one may be continued) and be a whole
    window long: then the new tokens attend only to cells that are still there.
    """
    limit = len(prompt) - 1
    prefix = min(common_prefix(cached, prompt), max(limit, 0))
    if min_run <= 0 or min(limit, len(cached) - 1) - prefix < min_run:
        return Reuse(prefix)  # no room for a stretch worth moving
    start, run = _longest_continuation(cached, prompt, prefix)
    run = min(run, limit - prefix)
    if run < max(min_run, window):
        return Reuse(prefix)
    if window and start + run < len(cached) - 1:
        return Reuse(prefix)
    return Reuse(prefix, start - prefix, run)


def _longest_continuation(
    cached: Sequence[int], prompt: Sequence[int], prefix: int
) -> tuple[int, int]:
    """(where in ``cached``, how long) the longest stretch after ``prefix`` that matches
    ``prompt[prefix:]`` from its start; (prefix, 0) when there is none.

    The probe is looked up with ``bytes.find`` over the token ids' bytes (C speed; a 4,096-token
    history is scanned in microseconds), each hit then measured token by token.
    """
    probe = prompt[prefix : prefix + PROBE]
    if not probe:
        return prefix, 0
    haystack = array("i", cached).tobytes()
    needle = array("i", probe).tobytes()
    size = array("i").itemsize
    best_start, best_run = prefix, 0
    at = (prefix + 1) * size
    for _ in range(MAX_CANDIDATES):
        found = haystack.find(needle, at)
        if found < 0:
            break
        at = found + 1
        if found % size:
            continue  # matched across two token ids
        start = found // size
        run = common_prefix(cached[start:], prompt[prefix:])
        if run > best_run:
            best_start, best_run = start, run
    return best_start, best_run
