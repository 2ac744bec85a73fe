"""Saving an edited card into the user's library (`cards.library.save_to_library`) and
giving a draft its source folder (`attach`): real files, real bundled cards, no model."""
from __future__ import annotations

import pytest

from roleplay.cards import load_card
from roleplay.cards.library import attach, save_to_library
from roleplay.cards.yaml_io import character_from_data, parse_yaml, read_text
from roleplay.config import BUNDLED_CHARACTERS
from roleplay.errors import CardError


def draft_of(path):
    """A card parsed from a file's text, as an editor holds it (no source folder yet)."""
    data = parse_yaml(read_text(path), file="character.yaml")
    return character_from_data(data, file="character.yaml", raw=data)


def test_saving_a_bundled_card_copies_its_pictures_into_the_user_folder(settings):
    source = BUNDLED_CHARACTERS / "sherlock" / "character.yaml"
    text = read_text(source).replace("name: Sherlock Holmes", "name: Sherlock Holmes II", 1)
    card = draft_of(source)
    saved = save_to_library(card, settings, text="# edited\n" + text, source=str(source))
    folder = settings.user_characters / "sherlock"
    assert saved.path == folder / "character.yaml"
    assert saved.name == "Sherlock Holmes II"
    assert saved.path.read_text("utf-8").startswith("# edited\n")  # the editor's text, comments kept
    for name in [card.avatar, *card.emotion_images.values()]:
        assert (folder / name).read_bytes() == (source.parent / name).read_bytes()
    assert (BUNDLED_CHARACTERS / "sherlock" / "character.yaml").read_text("utf-8") == read_text(source)


def test_files_already_in_the_user_folder_are_kept(settings):
    source = BUNDLED_CHARACTERS / "ada" / "character.yaml"
    card = load_card(source)
    folder = settings.user_characters / "ada"
    folder.mkdir(parents=True)
    (folder / card.avatar).write_bytes(b"mine")
    saved = save_to_library(card, settings)  # source: where the card was loaded from
    assert (folder / card.avatar).read_bytes() == b"mine"
    assert saved.name == card.name and saved.path.parent == folder


def test_stories_come_along_and_attach_resolves_them(settings, tmp_path):
    src = tmp_path / "src" / "quill"
    (src / "stories").mkdir(parents=True)
    (src / "character.yaml").write_text("id: quill\nname: Quill\n", encoding="utf-8")
    (src / "stories" / "one.txt").write_text("Quill:「Evening.」\n", encoding="utf-8")
    card = draft_of(src / "character.yaml")
    assert card.all_stories() == []
    attach(card, str(src / "character.yaml"))
    assert [t for _s, t in card.all_stories()] == ["Quill:「Evening.」"]
    saved = save_to_library(card, settings, source=src / "character.yaml")
    assert (settings.user_characters / "quill" / "stories" / "one.txt").is_file()
    assert [t for _s, t in saved.all_stories()] == ["Quill:「Evening.」"]


def test_an_asset_path_leaving_the_folder_is_refused_and_nothing_is_written(settings, tmp_path):
    src = tmp_path / "src" / "bad"
    src.mkdir(parents=True)
    (src / "character.yaml").write_text("id: bad\nname: Bad\n", encoding="utf-8")
    card = draft_of(src / "character.yaml")
    card.avatar = "../../secret.png"
    with pytest.raises(CardError, match="asset"):
        save_to_library(card, settings, source=src / "character.yaml")
    assert not (settings.user_characters / "bad" / "character.yaml").exists()
