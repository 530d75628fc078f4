"""The FIM split: whole lines, separate budgets, item-boundary snapping, cached counts."""

from __future__ import annotations

from indexer.fim import SNAP_MAX_LINES, LineCounter, split_fim, split_lines
from tests.indexer.ctx_fixtures import count_words

TEXT = "".join(f"fn item_{i}() {{\n    body_{i}();\n}}\n" for i in range(40))


def split(text: str, line: int, col: int, p: int, s: int, boundaries=()):
    lines = split_lines(text)
    return split_fim(lines, line, col, prefix_budget=p, suffix_budget=s,
                     counter=LineCounter(count_words), boundaries=boundaries)


def test_everything_fits() -> None:
    f = split(TEXT, 10, 4, 10_000, 10_000)
    assert f.prefix + f.suffix == TEXT
    assert not f.truncated_prefix and not f.truncated_suffix
    assert f.prefix.endswith("    ") and f.suffix.startswith("body_3")


def test_cuts_fall_on_line_boundaries_within_budget() -> None:
    f = split(TEXT, 60, 4, 50, 30)
    assert f.truncated_prefix and f.truncated_suffix
    assert f.prefix_tokens <= 50 and f.suffix_tokens <= 30
    assert sum(count_words(s) for s in split_lines(f.prefix)) <= 50
    start = TEXT.index(f.prefix)
    assert start == 0 or TEXT[start - 1] == "\n"
    end = TEXT.index(f.suffix) + len(f.suffix)
    assert TEXT[end - 1] == "\n"
    assert TEXT[start:end] == f.prefix + f.suffix


def test_cuts_snap_to_item_boundaries() -> None:
    boundaries = list(range(0, 121, 3))  # every item starts on a multiple of 3
    f = split(TEXT, 60, 4, 50, 30, boundaries)
    assert f.prefix.startswith("fn item_")
    assert f.prefix_start_line % 3 == 0 and f.suffix_end_line % 3 == 0
    assert f.suffix.endswith("}\n")
    far = split(TEXT, 60, 4, 50, 30, [0])  # no boundary near the cut: stays a line cut
    assert far.prefix_start_line > SNAP_MAX_LINES


def test_a_huge_cursor_line_is_cut_at_whitespace() -> None:
    line = " ".join(f"word{i}" for i in range(500))
    f = split(line + "\n" + line + "\n", 0, len(line) // 2, 40, 40)
    assert f.prefix_tokens <= 40 and f.suffix_tokens <= 40
    assert line[: len(line) // 2].endswith(f.prefix)
    assert f.prefix == "" or line[len(line) // 2 - len(f.prefix) - 1] == " "
    assert line[len(line) // 2:].startswith(f.suffix)


def test_cursor_at_and_past_the_end() -> None:
    f = split("fn a() {}\n", 1, 0, 100, 100)
    assert f.prefix == "fn a() {}\n" and f.suffix == ""
    f = split("fn a() {}", 7, 3, 100, 100)
    assert f.prefix == "fn a() {}" and f.suffix == ""
    f = split("", 0, 0, 100, 100)
    assert f.prefix == f.suffix == ""


def test_zero_budgets() -> None:
    f = split(TEXT, 10, 4, 0, 0)
    assert f.prefix == "" and f.suffix == ""


def test_line_counter_counts_each_distinct_line_once() -> None:
    calls = []
    counter = LineCounter(lambda s: calls.append(s) or len(s))
    lines = split_lines(TEXT)
    counter.lines(lines)
    n = len(calls)
    counter.lines(lines)
    assert len(calls) == n == len(set(lines))
