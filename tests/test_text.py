"""Text quoted back on one line: cut to its limit with an ellipsis, never split inside a character."""

import pytest

from vitviz.models import describe_weights
from vitviz.text import ELLIPSIS, clipped, printable_clipped


def test_a_long_text_keeps_its_first_characters_and_ends_in_an_ellipsis_at_the_limit():
    text = "abcdefghijklmnopqrstuvwxyz"
    assert clipped(text, 10) == "abcdefghi…"
    assert len(clipped(text, 10)) == 10


def test_a_short_text_comes_back_unchanged():
    assert clipped("cat", 10) == "cat"
    assert clipped("", 10) == ""


def test_a_text_of_exactly_the_limit_is_not_cut_and_one_more_character_is():
    assert clipped("a" * 80, 80) == "a" * 80
    assert clipped("a" * 81, 80) == "a" * 79 + ELLIPSIS


def test_unicode_is_counted_and_cut_by_characters_not_bytes():
    # Four-byte emoji and accented letters count as one character each and are never split.
    text = "🐱" * 5 + "é" * 5
    assert clipped(text, 10) == text
    assert clipped(text, 6) == "🐱" * 5 + ELLIPSIS
    assert clipped("日本語のテキスト", 4) == "日本語…"


def test_a_limit_of_one_leaves_only_the_ellipsis_and_below_one_is_refused():
    assert clipped("abc", 1) == ELLIPSIS
    with pytest.raises(ValueError, match="at least one character"):
        clipped("abc", 0)


def test_characters_that_cannot_be_printed_become_question_marks_before_the_cut():
    assert printable_clipped("line one\nline\ttwo\x00", 80) == "line one?line?two?"
    assert printable_clipped("a\nb" * 10, 5) == "a?ba…"
    assert printable_clipped("ünïcödé 🐱", 80) == "ünïcödé 🐱"


def test_a_weights_file_with_a_long_odd_name_is_described_on_one_line_of_80_characters():
    described = describe_weights("/nowhere/" + "a\nb" * 100 + ".pth")
    name = described.removeprefix("file ")
    assert len(name) == 80 and name.endswith(ELLIPSIS) and "\n" not in name
    assert name.startswith("a?ba?b")
