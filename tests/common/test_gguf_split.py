"""Split GGUF names (common/gguf_split.py): pure logic."""

from __future__ import annotations

from common.gguf_split import is_later_part, one_per_model, split_parts


def test_any_part_names_the_whole_set_first_to_last() -> None:
    whole = ["q/m-00001-of-00003.gguf", "q/m-00002-of-00003.gguf", "q/m-00003-of-00003.gguf"]
    assert split_parts("q/m-00002-of-00003.gguf") == whole
    assert split_parts("q/M-00001-OF-00003.GGUF")[1] == "q/M-00002-of-00003.gguf"


def test_a_file_that_is_not_split_is_its_own_set() -> None:
    for name in ("m.gguf", "m-00001.gguf", "m-00004-of-00003.gguf", "m-1-of-2.gguf"):
        assert split_parts(name) == [name]
        assert not is_later_part(name)


def test_a_listing_shows_each_set_once_by_its_first_part() -> None:
    names = ["a-00001-of-00002.gguf", "a-00002-of-00002.gguf", "b.gguf"]
    assert one_per_model(names) == ["a-00001-of-00002.gguf", "b.gguf"]
