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
