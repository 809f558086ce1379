"""Where each conversation's KV lives: in a llama.cpp sequence (a slot), in RAM, or nowhere.

The scheduler decides *when* a request runs; this decides *where* its KV comes from: the
conversation's own slot, its RAM copy (``engine.kv_spill``), or the idle slot sharing the
longest prefix. A conversation trimmed at its context limit keeps the cells after the gap,
moved back (``engine.kv_reuse``). It also frees cells (least recently used idle slots first,
copied to RAM when the spill cache is on) and keeps a unified cache free of idle sequences
while others run. Scheduler-thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from engine.backend import Backend
from engine.kv_reuse import Reuse, plan_reuse
from engine.kv_spill import SpillCache, Spilled
from engine.slots import Slot, SlotTable, common_prefix

log = logging.getLogger(__name__)

MIN_SHARED_GAIN = 16  # tokens: below this, sharing another sequence's prefix is not worth it
# Tokens: the shortest stretch past a gap worth moving (llama-server's --cache-reuse, its docs'
# value). A move costs a pass over the keys of every cell of the cache at the next decode
# (llama.cpp's K-shift is not limited to the moved cells): on 2 busy cores, 0.5-1.5 s for the
# 32,768 cells of 8 x 4,096, about what evaluating 25-75 tokens costs, so shorter stretches
# are cheaper to evaluate again.
CACHE_REUSE = 256


@dataclass(frozen=True)
class Placement:
    slot: Slot
    reuse: int  # prompt tokens whose KV is already in the slot


class KvPlacement:
    def __init__(
        self, backend: Backend, spill: SpillCache, *, cache_reuse: int = CACHE_REUSE
    ) -> None:
        self.backend = backend
        self.table = SlotTable(backend.n_seq)
        self.spill = spill
        self.cache_reuse = cache_reuse if backend.can_shift else 0
        self.shifts = 0  # gaps cut and cells moved back

    def place(
        self,
        key: str | None,
        prompt: Sequence[int],
        *,
        reserved: int,
        crowded: bool,
        wanted: Collection[str] = (),
    ) -> Placement | None:
        """Claim a slot for ``prompt`` with as much of it cached as possible.

        None when every slot is busy, or (in a unified cache shared with running requests,
        ``crowded``) when the cells it needs cannot be freed yet. ``reserved`` is the cells
        running requests are about to fill; ``wanted`` the keys of requests still waiting,
        whose idle slots a restore leaves in place.
        """
        slot = self.table.choose(key, prompt)
        if slot is None:
            return None
        plan = self._plan(slot.tokens, prompt, slot)
        restorable = self._restorable(key, prompt, slot, plan)
        spilled = None
        if restorable is None:
            needed, freed = len(prompt) - plan.tokens + 1, len(slot.tokens) - plan.tokens
        else:  # the whole spilled sequence comes back before it is cut
            spilled, plan = restorable
            needed = max(len(spilled.tokens), len(prompt) + 1)
            freed = len(slot.tokens)
        must_free = self.backend.unified and (crowded or spilled is not None)
        if must_free and not self._free_cells_for(needed, reserved, keep=slot, freed=freed):
            return None
        if spilled is not None and key is not None:
            if not self._restore(slot, key, wanted):
                plan = Reuse(0)
        else:
            if slot.cache_key != key:
                self._save(slot)  # the conversation that held the slot keeps a RAM copy
            if key is not None:
                self.spill.discard(key)  # the KV cache is this conversation's home now
        reuse = self._cut(slot, plan)
        reuse = self._share_prefix(slot, prompt, reuse)
        slot.busy = True
        slot.cache_key = key
        return Placement(slot, reuse)

    def _plan(
        self, cached: Sequence[int], prompt: Sequence[int], slot: Slot | None = None
    ) -> Reuse:
        """What of ``cached`` (``slot``'s own cells, or a spilled copy) the prompt reuses."""
        plan = plan_reuse(cached, prompt, min_run=self.cache_reuse, window=self.backend.n_swa)
        if plan.gap and slot is not None and self._shared_past(slot, plan.prefix + plan.gap):
            return Reuse(plan.prefix)
        return plan

    def _shared_past(self, slot: Slot, position: int) -> bool:
        """Whether another sequence may share ``slot``'s cells at ``position`` or later.

        Shared cells (``_share_prefix``) have one position for all their sequences, so moving
        them would move them for the others too. Cells are only ever shared as a common
        prefix, so a sequence sharing that far also holds the same tokens that far.
        """
        return self.backend.unified and any(
            other is not slot and common_prefix(other.tokens, slot.tokens) > position
            for other in self.table.slots
        )

    def _cut(self, slot: Slot, plan: Reuse) -> int:
        """Make ``slot`` hold only what ``plan`` reuses; the prompt tokens it now holds."""
        if plan.gap:
            moved = plan.prefix + plan.gap
            if self.backend.cut_gap(slot.seq, plan.prefix, moved, plan.end):
                log.debug(
                    "sequence %d: cut %d cells after %d, moved %d back",
                    slot.seq, plan.gap, plan.prefix, plan.run,
                )  # fmt: skip
                slot.tokens[plan.prefix :] = slot.tokens[moved : plan.end]
                self.shifts += 1
                return plan.tokens
        reuse = plan.prefix
        if reuse < len(slot.tokens) and not self.backend.keep_prefix(slot.seq, reuse):
            self.backend.clear(slot.seq)
            reuse = 0
        del slot.tokens[reuse:]
        return reuse

    def _share_prefix(self, slot: Slot, prompt: Sequence[int], reuse: int) -> int:
        """Let ``slot`` share the longest prefix another sequence holds (a system prompt).

        In a unified cache the cells are shared, not copied: llama.cpp adds the sequence id
        to them, so a new conversation skips evaluating what every conversation starts with.
        """
        if not self.backend.unified:
            return reuse  # across split streams llama.cpp can only copy whole sequences
        donor, shared = None, reuse
        for other in self.table.slots:
            if other is not slot and len(other.tokens) > shared + MIN_SHARED_GAIN:
                common = min(common_prefix(other.tokens, prompt), len(prompt) - 1)
                if common >= shared + MIN_SHARED_GAIN:
                    donor, shared = other, common
        if donor is None:
            return reuse
        self.backend.clear(slot.seq)
        self.backend.copy_prefix(donor.seq, slot.seq, shared)
        slot.tokens[:] = donor.tokens[:shared]
        return shared

    def evict(self, slot: Slot, *, spill: bool = True) -> None:
        """Free the slot's cells, keeping a RAM copy of a conversation's KV when enabled."""
        if spill:
            self._save(slot)
        self.backend.clear(slot.seq)
        slot.tokens.clear()
        slot.cache_key = None

    def evict_one_idle(self) -> bool:
        for slot in self.table.eviction_order():
            self.evict(slot)
            return True
        return False

    def spill_idle(self) -> None:
        """In a unified cache every batch attends over idle sequences' cells: move them out."""
        if self.backend.unified and self.spill.enabled:
            for slot in self.table.eviction_order():
                self.evict(slot)

    def _spill_idle_below(self, slot: Slot, wanted: Collection[str]) -> None:
        """Before a restore, spill the idle slots that ``spill_idle`` would spill right after.

        llama.cpp puts restored cells at the first free run from its search head, and every
        batch attends over cells up to the highest one in use. Restored above an idle
        sequence that leaves a moment later, a conversation would sit over a hole of empty
        cells it pays attention over on every turn (with 32 users taking turns on 8 slots,
        cells marched up to three histories high). Freed first, the cells it lands in are
        the lowest ones.
        """
        if self.backend.unified and self.spill.enabled:
            for other in self.table.eviction_order(keep=slot):
                if other.cache_key not in wanted:
                    self.evict(other)

    def free_cells(self, reserved: int) -> int:
        return self.backend.kv_cells - self.table.used_cells() - reserved

    def _free_cells_for(self, needed: int, reserved: int, *, keep: Slot, freed: int) -> bool:
        """Evict idle slots (LRU) until ``needed`` cells are free; False if impossible."""
        if self.free_cells(reserved) + freed >= needed:
            return True
        for slot in self.table.eviction_order(keep=keep):
            self.evict(slot)
            if self.free_cells(reserved) + freed >= needed:
                return True
        return False

    def _restorable(
        self, key: str | None, prompt: Sequence[int], slot: Slot, resident: Reuse
    ) -> tuple[Spilled, Reuse] | None:
        """The conversation's spilled KV and what of it the prompt reuses, if that is more
        than ``resident`` (what ``slot`` holds)."""
        if key is None or slot.cache_key == key:
            return None
        spilled = self.spill.peek(key)
        if spilled is None:
            return None
        plan = self._plan(spilled.tokens, prompt)
        if plan.tokens <= resident.tokens:
            return None
        if self.backend.swa and not plan.gap and plan.prefix < len(spilled.tokens) - 1:
            # A sliding-window model's saved state holds only the last window of cells, so
            # it can be continued but not cut further back without losing attention inputs
            # (a moved stretch is planned to end where the saved cells end).
            log.debug("conversation %r diverged inside its spilled KV; recomputing", key)
            return None
        return spilled, plan

    def _restore(self, slot: Slot, key: str, wanted: Collection[str]) -> bool:
        """Copy ``key``'s spilled KV into ``slot``, spilling what the slot and the idle ones
        held first (taken out before them, so making room for them cannot drop it)."""
        spilled = self.spill.take(key)
        self._spill_idle_below(slot, wanted)
        self.evict(slot)
        if spilled is not None:
            restored = self.backend.restore(slot.seq, spilled.data)
            self.spill.recycle(spilled.data)  # its pages take the next spill
            if restored:
                slot.tokens[:] = spilled.tokens
                slot.cache_key = key
                return True
        log.warning("could not restore the KV of conversation %r; recomputing it", key)
        self.backend.clear(slot.seq)
        return False

    def _save(self, slot: Slot) -> None:
        if self.spill.enabled and slot.cache_key is not None and slot.tokens:
            size = self.backend.state_size(slot.seq)
            if size == 0:
                return
            data = self.spill.buffer(size)
            if self.backend.save(slot.seq, data):
                self.spill.put(slot.cache_key, tuple(slot.tokens), data)
            else:
                self.spill.recycle(data)
