"""A generated 200-chapter novel goes through with bounded memory and a progress bar."""
from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

from roleplay.authoring import extract

BENCH = Path(__file__).resolve().parent.parent / "bench" / "authoring.py"


def _generator():
    spec = importlib.util.spec_from_file_location("bench_authoring", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_novel


def test_two_hundred_chapters_bounded_memory_and_progress(tmp_path, capsys):
    labels: list[str] = []
    text = _generator()(chars=300_000, chapters=200, labels=labels)
    path = tmp_path / "novel.txt"
    path.write_text(text, encoding="utf-8")
    tracemalloc.start()
    ex = extract(path, character="Holloway", progress=True)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    err = capsys.readouterr().err
    assert "200/200" in err and "extracting" in err          # the tqdm bar ran to the end
    assert ex.chapters == 200 and ex.quotes == len(labels)
    # Memory: the book itself plus the character's material, not a copy per chapter.
    assert peak < 12 * len(text.encode("utf-8")), peak
    true = labels.count("Holloway")
    assert 0.6 * true <= len(ex.lines) <= true
    assert ex.stories and all(len(s) <= 1400 for s in ex.stories)
