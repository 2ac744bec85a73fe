"""YAML cards: safe parsing (alias bombs, object tags, depth), line-numbered errors,
comment-preserving saves, load → save → load equality, and a real disk-full save."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roleplay.cards import load_card, save_card
from roleplay.cards.yaml_io import card_errors, parse_yaml
from roleplay.config import BUNDLED_CHARACTERS
from roleplay.errors import CardError

DATA = Path(__file__).parent / "data" / "cards"
REPO = Path(__file__).resolve().parent.parent
BUNDLED = sorted(p.parent.name for p in BUNDLED_CHARACTERS.glob("*/character.yaml"))


def _bounded_python(code: str, *, mem_bytes: int = 1 << 30) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter capped at ``mem_bytes`` of address space."""
    pre = ("import resource\n"
           f"resource.setrlimit(resource.RLIMIT_AS, ({mem_bytes}, {mem_bytes}))\n")
    return subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


@pytest.mark.parametrize("name, expect", [("billion_laughs.yaml", "aliases"),
                                          ("quiet_alias_bomb.yaml", "after expanding aliases")])
def test_alias_bombs_fail_fast_within_bounded_memory(name, expect):
    # A 1 GiB address-space cap: expanding the bomb would need far more, so a CardError
    # (not a MemoryError, not a hang) shows the loader never expanded it.
    proc = _bounded_python(
        "from roleplay.cards import load_card\nfrom roleplay.errors import CardError\n"
        f"try:\n    load_card({str(DATA / name)!r})\nexcept CardError as e:\n    print('CardError:', e)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CardError:") and expect in proc.stdout


def test_object_tags_are_refused():
    with pytest.raises(CardError, match="python/object/apply") as ei:
        load_card(DATA / "python_tag.yaml")
    assert ei.value.line == 2
    with pytest.raises(CardError, match="not allowed"):
        parse_yaml("a: !custom {x: 1}\n", file="t.yaml")
    assert parse_yaml("a: !!str 3\n", file="t.yaml")["a"].value == "3"  # core tags are plain YAML


def test_nesting_and_string_limits():
    with pytest.raises(CardError, match="nesting deeper"):
        parse_yaml("a: " + "[" * 100 + "]" * 100, file="t.yaml")
    with pytest.raises(CardError, match="longer than"):
        parse_yaml("a: " + "x" * 1_000_001, file="t.yaml")


def test_validate_reports_every_error_with_its_line():
    errs = [str(e) for e in card_errors(DATA / "bad_types.yaml")]
    f = str(DATA / "bad_types.yaml")
    assert f"{f}:6: greetings[1]: must be a string" in errs
    assert any(e.startswith(f"{f}:8: style.action_style:") for e in errs)
    assert any(e.startswith(f"{f}:9: talkativeness:") for e in errs)
    assert len(errs) == 3


def test_missing_and_unknown_fields(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("id: x\npersona: hi\n", encoding="utf-8")
    with pytest.raises(CardError, match="name: is required"):
        load_card(p)
    p.write_text("id: x\nname: X\ngreetings: []\npersonna: typo\n", encoding="utf-8")
    with pytest.raises(CardError) as ei:
        load_card(p)
    assert (ei.value.line, ei.value.field) == (4, "personna")
    p.write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    with pytest.raises(CardError, match="invalid YAML") as ei:
        load_card(p)
    assert ei.value.line is not None


@pytest.mark.parametrize("card_id", BUNDLED)
def test_bundled_card_load_save_load(tmp_path, card_id):
    card = load_card(BUNDLED_CHARACTERS / card_id)
    assert card_errors(BUNDLED_CHARACTERS / card_id) == []
    out = save_card(card, tmp_path / card_id / "character.yaml")
    again = load_card(out)
    assert again == card
    assert save_card(again, tmp_path / "second.yaml").read_text("utf-8") == out.read_text("utf-8")


def test_comments_survive_an_edit(tmp_path):
    p = tmp_path / "keeper" / "character.yaml"
    p.parent.mkdir()
    p.write_text("# my favourite card\nid: keeper  # the folder name\nname: Keeper\n"
                 "persona: |\n  A lighthouse keeper.\n# greetings below\ngreetings:\n  - Ahoy.  # first\n",
                 encoding="utf-8")
    card = load_card(p)
    card.scenario = "A storm."
    card.greetings = ["Ahoy.", "Shut the door."]
    save_card(card)
    text = p.read_text("utf-8")
    for comment in ("# my favourite card", "# the folder name", "# greetings below"):
        assert comment in text
    assert load_card(p) == card


def test_disk_full_keeps_the_old_card(tmp_path):
    p = tmp_path / "full" / "character.yaml"
    p.parent.mkdir()
    save_card(_small_card(), p)
    before = p.read_bytes()
    # A real EFBIG: cap the file size the child may write, ignore SIGXFSZ so write() fails.
    code = f"""
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
sys.dont_write_bytecode = True  # under the cap only the card is written (a fresh clone compiles lazily)
from roleplay.cards import load_card, save_card
from roleplay.errors import CardError
card = load_card({str(p)!r})
card.persona = "x" * 200_000
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
try:
    save_card(card)
    print(json.dumps({{"error": None}}))
except CardError as e:
    print(json.dumps({{"error": str(e), "type": type(e).__name__}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["type"] == "CardError" and "previous file is unchanged" in out["error"]
    assert p.read_bytes() == before
    assert sorted(x.name for x in p.parent.iterdir()) == ["character.yaml"]  # no temp file left


def _small_card():
    from roleplay.cards.schema import Character

    return Character(id="full", name="Full", persona="short")
