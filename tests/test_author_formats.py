"""Reading books: encodings, EPUB, SRT, Markdown, plays — and bad input that must fail clearly.

Every bad input ends in one `CardError` naming the file (the CLI prints it on one line and
exits 2) or in a clear empty result; never a traceback, never a half-written card folder.
"""
from __future__ import annotations

import os

import pytest

from roleplay.authoring import extract, read_book
from roleplay.authoring.reading import MAX_BOOK_BYTES
from roleplay.cli import main
from roleplay.errors import CardError

EN = ('Chapter 1\n\n"You are late," said Holloway.\n"The train was slow," Lydia replied.\n'
      '"Trains are never slow," said Holloway, frowning.\n')
ZH = "第一回\n\n悟空道：“师父，我去也！”\n八戒笑道：“猴哥又要走？”\n“你这呆子。”行者说。\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16", "utf-16-le", "utf-16-be"])
def test_chinese_in_any_encoding(tmp_path, encoding):
    path = tmp_path / "book.txt"
    path.write_bytes(ZH.encode(encoding))
    ex = extract(path, character="孙悟空", aliases=["悟空", "行者"])
    assert ex.language == "zh"
    assert [ln.text for ln in ex.lines] == ["师父，我去也！", "你这呆子。"]


def test_single_byte_code_page(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(('"Café au lait, s\'il vous plaît," said Holloway.\n"Déjà vu," said Lydia.\n' * 20)
                     .encode("cp1252"))
    book = read_book(path)
    assert "Café" in book.text
    assert extract(book, character="Holloway").lines


def test_epub_chapters(tmp_path):
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("t1")
    book.set_title("The Late Train")
    book.set_language("en")
    chapters = []
    for i, body in enumerate(['<p>"You are late," said Holloway.</p><p>"Sorry," said Lydia.</p>',
                              '<p>"Again?" asked Holloway.</p>']):
        c = epub.EpubHtml(title=f"C{i}", file_name=f"c{i}.xhtml", lang="en")
        c.content = f"<html><body><h1>Chapter {i + 1}</h1>{body}</body></html>"
        book.add_item(c)
        chapters.append(c)
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    path = tmp_path / "late.epub"
    epub.write_epub(str(path), book)
    ex = extract(path, character="Holloway")
    assert ex.title == "The Late Train" and ex.chapters == 2
    assert [ln.text for ln in ex.lines] == ["You are late.", "Again?"]


def test_srt_marked_speakers_and_narration(tmp_path):
    path = tmp_path / "film.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nHOLLOWAY: You are late.\n\n"
                    "2\n00:00:02,500 --> 00:00:04,000\n[Lydia] The train was slow.\n\n"
                    "3\n00:00:30,000 --> 00:00:31,000\n- Nobody marked this one.\n", encoding="utf-8")
    ex = extract(path, character="HOLLOWAY")
    assert ex.kind == "subtitles" and ex.scenes == 2
    assert ex.speakers == {"HOLLOWAY": 1, "Lydia": 1}
    assert ex.quotes == 2  # the unmarked line is narration


def test_markdown_headings_are_chapters(tmp_path):
    path = tmp_path / "book.md"
    path.write_text("# One\n\n" + EN + "\n# Two\n\n\"Again?\" asked Holloway.\n", encoding="utf-8")
    ex = extract(path, character="Holloway")
    assert ex.chapters == 2 and len(ex.lines) == 3


def test_play_stage_directions_become_actions(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text("ACT I\n\n[A room.]\n\nAGNES. [Laughing.] No.\nHUGO. Yes.\nAGNES. Maybe.\nHUGO. Fine.\n",
                    encoding="utf-8")
    ex = extract(path, character="AGNES")
    assert ex.kind == "play"
    assert [(ln.text, ln.action) for ln in ex.lines] == [("No.", "Laughing."), ("Maybe.", "")]


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "PNG image"),
    (b"%PDF-1.7\n" + os.urandom(200), "PDF"),
    (b"abc\x00\x01\x02" * 400 + os.urandom(3000), "binary"),
])
def test_bad_files_fail_with_one_clear_error(tmp_path, data, reason):
    path = tmp_path / "book.txt"
    path.write_bytes(data)
    with pytest.raises(CardError) as err:
        extract(path, character="Holloway")
    assert reason in str(err.value) and str(path) in str(err.value)


def test_fifty_megabytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.txt"
    with path.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    assert path.stat().st_size > MAX_BOOK_BYTES
    with pytest.raises(CardError, match="split it into volumes"):
        read_book(path)


def test_text_without_quotes_is_a_clear_empty_result(tmp_path, capsys):
    path = tmp_path / "essay.txt"
    path.write_text("It was a quiet day. Nothing happened at all.\n" * 50, encoding="utf-8")
    ex = extract(path)
    assert ex.quotes == 0 and not ex.speakers
    assert main(["author", "speakers", str(path), "--no-progress"]) == 0
    assert "no speakers found" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    path = tmp_path / "book.txt"
    path.write_text(EN, encoding="utf-8")
    out = tmp_path / "cards"
    assert main(["author", "extract", str(path), "--character", "Nobody", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no lines were attributed to 'Nobody'" in err and "Holloway" in err
    assert not out.exists() or not any(out.iterdir())
    assert main(["author", "extract", str(tmp_path / "missing.txt"), "--character", "X", "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_mislabelled_bom_is_one_clear_error(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(b"\xff\xfe" + "“Hello,” said Holloway.".encode("utf-16-le") + b"\x00")  # odd length
    with pytest.raises(CardError, match="byte-order mark"):
        read_book(path)


def test_any_text_gives_a_result_or_a_card_error():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from roleplay.authoring.reading import Book

    alphabet = st.sampled_from(list("“”「」『』‘’\"'.,:;!?。，：！？\n 道说said he she Holmes悟空行者ABC*-#第一回Chapter[]()（）"))

    @settings(max_examples=150, deadline=None)
    @given(st.text(alphabet=alphabet, min_size=1, max_size=400), st.sampled_from([None, "Holmes", "悟空"]))
    def run(text, who):
        try:
            ex = extract(Book(text=text, title="fuzz"), character=who)
        except CardError:
            return
        assert ex.attributed + ex.unresolved == ex.quotes
        assert all(ln.speaker == who for ln in ex.lines)

    run()


def test_speakers_json_and_option_errors(tmp_path, capsys):
    import json

    path = tmp_path / "book.txt"
    path.write_text(EN, encoding="utf-8")
    assert main(["author", "speakers", str(path), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speakers"] == {"Holloway": 2, "Lydia": 1} and out["unresolved"] == 0
    assert main(["author", "speakers", str(path), "--min-confidence", "2", "--no-progress"]) == 2
    assert "--min-confidence must be between 0 and 1" in capsys.readouterr().err
