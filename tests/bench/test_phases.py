"""``make bench`` says what it is doing as it goes (bench/phases.py), on stderr, so the table
on stdout stays one piece."""

from __future__ import annotations

import re

import pytest

from bench.phases import phase


def test_a_phase_is_announced_and_timed_even_when_it_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with phase("engine, Parley: 8 turns, one user"):
        print("table row")
    with pytest.raises(RuntimeError), phase("bot: a burst from 200 users"):
        raise RuntimeError("the bot died")
    out, err = capsys.readouterr()
    assert out == "table row\n"
    assert re.fullmatch(
        r"bench: engine, Parley: 8 turns, one user …\n"
        r"bench: engine, Parley: 8 turns, one user: \d+ s\n"
        r"bench: bot: a burst from 200 users …\n"
        r"bench: bot: a burst from 200 users: \d+ s\n",
        err,
    )
