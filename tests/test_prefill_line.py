"""`PrefillLine` alone (no model): who reads their prompt next on the llama.cpp backend."""
from __future__ import annotations

import threading

from roleplay.backends.prefill import PrefillLine


def test_a_short_read_goes_before_the_rest_of_a_long_one():
    line = PrefillLine(piece=100)
    order: list[str] = []
    first_piece_sent, short_waiting = threading.Event(), threading.Event()

    def long_request() -> None:
        with line.reading(list(range(350))) as reader:
            for prefix in reader.pieces():
                order.append(f"long:{len(prefix)}")
                if len(prefix) == 100:  # llama.cpp reads the first piece while the short one arrives
                    first_piece_sent.set()
                    short_waiting.wait(5)
            reader.wait_turn()
            order.append("long:request")
            reader.first_token()

    def short_request() -> None:
        first_piece_sent.wait(5)
        with line.reading([7] * 40) as reader:
            assert list(reader.pieces()) == []  # under one piece: sent whole
            short_waiting.set()
            reader.wait_turn()  # waits for the long one's piece, not for all of it
            order.append("short:request")
            reader.first_token()

    threads = [threading.Thread(target=long_request, daemon=True), threading.Thread(target=short_request, daemon=True)]  # a hang fails, not blocks, the run
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["long:100", "short:request", "long:200", "long:300", "long:request"]


def test_a_long_read_is_not_starved_by_a_stream_of_short_ones():
    # Each short read arrives while the one before it holds the turn (eight chats taking
    # turns); shortest-first alone would keep the cold 350-token read waiting for ever.
    line = PrefillLine(piece=100)
    order: list[str] = []
    long_in_line = threading.Event()

    def long_request() -> None:
        with line.reading(list(range(350))) as reader:
            long_in_line.set()
            for prefix in reader.pieces():
                order.append(f"long:{len(prefix)}")
            reader.wait_turn()
            order.append("long:request")
            reader.first_token()

    def short_request(n: int, in_line: threading.Event, turn: threading.Event, release: threading.Event) -> None:
        with line.reading([1000 + n] * 40) as reader:
            in_line.set()
            reader.wait_turn()
            order.append(f"short:{n}")
            turn.set()
            release.wait(10)
            reader.first_token()

    holder = line.reading([999] * 40)
    holding = holder.__enter__()
    holding.wait_turn()  # a short read holds the turn when the long one arrives
    threads = [threading.Thread(target=long_request, daemon=True)]  # a hang fails, not blocks, the run
    threads[0].start()
    assert long_in_line.wait(5)
    release_previous = lambda: (holding.first_token(), holder.__exit__(None, None, None))  # noqa: E731
    for n in range(1, 10):
        in_line, turn, release = threading.Event(), threading.Event(), threading.Event()
        threads.append(threading.Thread(target=short_request, args=(n, in_line, turn, release), daemon=True))
        threads[-1].start()
        assert in_line.wait(5)
        release_previous()
        if n < 9:
            assert turn.wait(5)  # the next short read arrives while this one holds the turn
        release_previous = release.set
    release_previous()
    for t in threads:
        t.join(10)
    # the long read has waited 8 × 40 tokens of shorter reads: it goes before the ninth
    assert order == [f"short:{n}" for n in range(1, 9)] + ["long:100", "long:200", "long:300", "long:request", "short:9"]


def test_a_prompt_sent_before_counts_as_cached():
    line = PrefillLine(piece=100)
    with line.reading(list(range(500))) as reader:
        assert len(list(reader.pieces())) == 4  # cold: 100, 200, 300, 400, then the request
        reader.wait_turn()
        reader.first_token()
    follow_up = list(range(500)) + [9] * 30
    assert line.cached(follow_up) == 500
    with line.reading(follow_up) as reader:
        assert list(reader.pieces()) == []  # 30 new tokens: no pieces
        reader.wait_turn()
        reader.first_token()


def test_shift_walk_keeps_runs_after_a_deletion_and_stops_at_an_insertion():
    from roleplay.backends.prefill import reused_with_shift

    head, dropped, kept, tail = list(range(100)), list(range(1000, 1200)), list(range(2000, 2300)), [5] * 20
    cached = head + dropped + kept
    assert reused_with_shift(cached, head + kept + tail, 32) == 400  # the kept run moves up
    assert reused_with_shift(cached, head + kept + tail, 0) == 100  # off: the common prefix only
    assert reused_with_shift(cached, head + kept[:31] + tail, 32) == 100  # a run shorter than the minimum is read
    assert reused_with_shift(cached, head + [7] * 10 + kept, 32) == 100  # an insertion: what follows is read
    # two deletions: both later runs move, in order
    a, b = list(range(3000, 3100)), list(range(4000, 4100))
    assert reused_with_shift(head + dropped + a + dropped[:50] + b, head + a + b + tail, 32) == 300


def test_with_shift_a_trimmed_prompt_counts_its_kept_history_as_cached():
    line = PrefillLine(piece=100, shift=32)
    system, old_turns, kept_turns = list(range(200)), list(range(1000, 1400)), list(range(2000, 2400))
    plain = PrefillLine(piece=100)  # llama.cpp without KV shifting
    for each in (line, plain):
        with each.reading(system + old_turns + kept_turns) as reader:
            for _ in reader.pieces():
                pass
            reader.wait_turn()
            reader.first_token()
    trimmed = system + kept_turns + [9] * 30
    assert line.cached(trimmed) == 600
    assert plain.cached(trimmed) == 200  # the common prefix only: the kept turns are read again
    with line.reading(trimmed) as reader:
        assert list(reader.pieces()) == []  # 30 new tokens: no pieces that would cut the moved run short
        reader.wait_turn()
        reader.first_token()
