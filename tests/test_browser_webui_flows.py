"""More web UI flows in headless Debian chromium (Playwright): import, export, fork, memory.

Each test drives one flow the way a user would and then checks what it really did, not
only what the page says: an uploaded SillyTavern V2 card lands in ``ROLEPLAY_HOME``; an
exported card downloads and parses as a SillyTavern card with the right name; forking a
chat after one short exchange adds a saved session with the same history; a memory added
and then edited in the Memory tab is listed and is in the memory store. The home folder
lies outside /tmp and the working directory (as ~/.roleplay does), so downloads only work
if the app allows its export folder. One app serves
the module; every test starts from a freshly loaded page. A screenshot per flow goes to
the ``artifacts_dir`` as ``webui_flow_<name>.png``.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from support import CHROMIUM, CHROMIUM_ARGS as ARGS, running_webui, wait_for

#: Generation on a shared 2-core CPU can take a while; UI steps are fast.
SLOW_MS = 420_000
UI_MS = 30_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                 reason="Debian chromium is not installed (make browser)")]

#: The card uploaded in the import flow (SillyTavern V2 JSON).
IMPORT_NAME = "Captain Mirela Voss"
IMPORT_ID = "captain-mirela-voss"
IMPORT_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": IMPORT_NAME,
        "description": "{{char}} commands the airship Kestrel and speaks in clipped, salty orders.",
        "personality": "gruff, loyal, superstitious about the wind",
        "scenario": "{{user}} has just signed on as the Kestrel's new navigator.",
        "first_mes": "(taps the barometer) You're late, navigator. The wind won't wait.",
        "mes_example": "<START>\n{{user}}: Where are we headed?\n"
                       "{{char}}: (points east) Wherever the storm isn't.\n",
        "creator_notes": "", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": [], "tags": ["airship"], "creator": "tests",
        "character_version": "1", "extensions": {},
    },
}


@pytest.fixture(scope="module")
def app(tmp_path_factory, backend):
    # subtle: the home is deliberately outside /tmp and the working directory — the two
    # places Gradio serves files from by default — so exports must be explicitly allowed
    # (a real ~/.roleplay is outside both too).
    outside = Path("/var/tmp")
    home = Path(tempfile.mkdtemp(prefix="roleplay-flows-", dir=outside)) if outside.is_dir() \
        else tmp_path_factory.mktemp("browser-flows-home")
    try:
        with running_webui(home, backend) as (url, settings):
            yield {"url": url, "home": home, "settings": settings, "backend": backend}
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_page(app, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    downloads = tmp_path_factory.mktemp("downloads")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, downloads_path=str(downloads))
        pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        pg.dialogs = []  # type: ignore[attr-defined]
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        yield pg
        browser.close()


@pytest.fixture
def page(browser_page, app):
    """The shared browser tab, freshly loaded (no state left from the previous flow)."""
    browser_page.goto(app["url"], wait_until="domcontentloaded")
    browser_page.wait_for_selector("#chat-input textarea", timeout=60_000)
    yield browser_page
    assert browser_page.dialogs == []  # type: ignore[attr-defined]


def shot(page, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"webui_flow_{name}.png"), full_page=True)




def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def dropdown_options(page, elem_id: str) -> list[str]:
    """The option texts of the Gradio dropdown ``#elem_id`` (opens it, reads, closes it)."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    options = page.locator(f"#{elem_id} [role=option]")
    options.first.wait_for(timeout=UI_MS)
    texts = [t.replace("✓", "").strip() for t in options.all_inner_texts()]  # ✓ marks the chosen one
    box.press("Escape")
    page.locator(f"#{elem_id}").click(position={"x": 2, "y": 2})  # blur without choosing
    return texts


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown ``#elem_id`` by typing and clicking it."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(option)
    page.locator(f"#{elem_id} [role=option]", has_text=option).first.click()


def open_author_io(page) -> None:
    page.get_by_role("tab", name="Author").click()
    page.locator("#author-card input").wait_for(timeout=UI_MS)
    if not page.locator("#author-upload").is_visible():
        page.get_by_text("Import / export", exact=True).click()
    page.locator("#author-upload").wait_for(timeout=UI_MS)


# -- 1. import a card by uploading a file ------------------------------------------------

def test_import_sillytavern_card_by_upload(page, app, tmp_path, artifacts_dir):
    from roleplay.cards import load_card

    card_file = tmp_path / "mirela.json"
    card_file.write_text(json.dumps(IMPORT_CARD), encoding="utf-8")
    target = app["home"] / "characters" / IMPORT_ID / "character.yaml"
    assert not target.exists()
    open_author_io(page)
    assert IMPORT_ID not in dropdown_options(page, "author-card")

    page.set_input_files("#author-upload input[type=file]", str(card_file))
    wait_for(page, lambda: "Imported" in text_of(page, "author-status") or "failed" in text_of(page, "author-status"),
             timeout_ms=UI_MS, what="the import status")
    status = text_of(page, "author-status")
    assert f"Imported {IMPORT_NAME} as {IMPORT_ID}" in status, status
    shot(page, artifacts_dir, "import")

    # saved under this app's ROLEPLAY_HOME, as a loadable YAML card carrying the upload's fields
    assert target.is_file()
    assert IMPORT_NAME in target.read_text(encoding="utf-8")
    card = load_card(target)
    assert card.name == IMPORT_NAME
    assert "airship Kestrel" in card.persona
    assert any("You're late, navigator" in g for g in card.greetings)
    assert any("Wherever the storm isn't" in text for _src, text in card.all_stories())

    # opened in the editor at once (the form, not only the picker, shows the imported card)
    assert page.locator("#author-card input").first.input_value() == IMPORT_ID
    name_box = page.locator("#author-name textarea, #author-name input").first
    wait_for(page, lambda: name_box.input_value() == IMPORT_NAME, timeout_ms=UI_MS, what="the imported card to open")
    assert "airship Kestrel" in page.locator("#author-persona textarea").first.input_value()
    assert IMPORT_ID in dropdown_options(page, "author-card")
    shot(page, artifacts_dir, "import_opened")

    # and every other card list knows it without a restart: Chat and Memory refresh on opening
    page.get_by_role("tab", name="Chat").click()
    wait_for(page, lambda: IMPORT_ID in dropdown_options(page, "chat-character"), timeout_ms=UI_MS,
             what="the imported card in the Chat tab's character list")
    page.get_by_role("tab", name="Memory").click()
    wait_for(page, lambda: IMPORT_ID in dropdown_options(page, "memory-character"), timeout_ms=UI_MS,
             what="the imported card in the Memory tab's character list")


# -- 2. export a card and download it ----------------------------------------------------

def export_and_download(page, fmt: str) -> tuple[Path, str]:
    """Export the loaded card as ``fmt`` ("V2 JSON", …), download the file it offers."""
    choose(page, "author-export-format", fmt)
    page.locator("#author-export-file").wait_for(timeout=UI_MS)
    before = text_of(page, "author-status")
    page.locator("#author-export").click()
    wait_for(page, lambda: text_of(page, "author-status") != before and "Export" in text_of(page, "author-status"),
             timeout_ms=UI_MS, what=f"the {fmt} export status")
    status = text_of(page, "author-status")
    assert "Exported to" in status, status
    suffix = ".{}.{}".format(*fmt.lower().split())  # the exporter names files <id>.v2.json etc.
    # the file list shows the name as stem and extension on separate lines
    wait_for(page, lambda: suffix in text_of(page, "author-export-file").replace("\n", ""), timeout_ms=UI_MS,
             what=f"the {suffix} file offered for download")
    link = page.locator("#author-export-file a").first
    link.wait_for(timeout=UI_MS)
    with page.expect_download(timeout=UI_MS) as info:
        link.click()
    download = info.value
    assert download.failure() is None
    return Path(download.path()), download.suggested_filename


def test_export_card_downloads_a_sillytavern_card(page, app, artifacts_dir):
    from PIL import Image

    open_author_io(page)
    choose(page, "author-card", "ada")
    name_box = page.locator("#author-name textarea, #author-name input").first
    name = wait_for(page, lambda: name_box.input_value().strip(), timeout_ms=UI_MS, what="the card to load")
    assert "Ada" in name

    path, suggested = export_and_download(page, "V2 JSON")
    assert suggested.endswith(".v2.json"), suggested
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["spec"] == "chara_card_v2"
    assert data["data"]["name"] == name
    assert data["data"]["first_mes"].strip()
    shot(page, artifacts_dir, "export")

    path, suggested = export_and_download(page, "V3 PNG")
    raw = path.read_bytes()
    assert suggested.endswith(".v3.png"), suggested
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(path) as img:
        chunks = dict(img.text)  # type: ignore[attr-defined]
    embedded = json.loads(base64.b64decode(chunks["ccv3"]))  # a V3 PNG carries the V3 card in ccv3
    assert embedded["spec"] == "chara_card_v3"
    assert embedded["data"]["name"] == name
    assert json.loads(base64.b64decode(chunks["chara"]))["data"]["name"] == name  # and V2 for old readers


# -- 3. chat, then fork the session ------------------------------------------------------

def bot_texts(page) -> list[str]:
    return page.locator("#chatbot .message.bot").all_inner_texts()


def chat_texts(page) -> list[str]:
    return [t.strip() for t in page.locator("#chatbot .message.user, #chatbot .message.bot").all_inner_texts()]


def test_fork_after_one_exchange_adds_a_session_with_the_same_history(page, app, artifacts_dir):
    from roleplay.engine import Engine
    from roleplay.sessions import Session

    from roleplay.cards import load_card
    from roleplay.config import BUNDLED_CHARACTERS

    # the greetings' openings (before {{user}}): proof that the click opened Sherlock, not the
    # card next to him (the import flow above adds one before him in the gallery)
    openings = [g.split("{{user}}")[0][:30] for g in load_card(BUNDLED_CHARACTERS / "sherlock").greetings]
    # the page opens with the gallery built at start-up, then refreshes it; a card imported
    # since (the import flow) shifts the portraits, so click once the gallery has settled
    from webui.cards_view import gallery_items

    captions = [c for _img, c in gallery_items(app["settings"])[0]]
    wait_for(page, lambda: page.locator("#chat-gallery .thumbnail-item").all_inner_texts() == captions,
             timeout_ms=UI_MS, what="the gallery to list every card")
    page.locator("#chat-gallery .thumbnail-item", has_text="Sherlock").first.click()
    wait_for(page, lambda: "New chat" in text_of(page, "chat-status") and bot_texts(page)
             and any(o in bot_texts(page)[0] for o in openings),
             timeout_ms=60_000, what="Sherlock's greeting")  # the page opened with a greeting already
    original = re.search(r"New chat (\w+)", text_of(page, "chat-status")).group(1)

    page.get_by_text("Sampling", exact=True).click()
    page.locator("#chat-max-tokens input[type=number]").fill("8")
    page.locator("#chat-max-tokens input[type=number]").press("Tab")
    page.locator("#chat-input textarea").fill("Hello, Holmes.")
    page.locator("#chat-input textarea").press("Enter")
    wait_for(page, lambda: "Reply saved" in text_of(page, "chat-status"), timeout_ms=SLOW_MS, what="the reply")
    history = chat_texts(page)
    assert len(bot_texts(page)) == 2 and "Hello, Holmes." in history

    page.get_by_text("Sessions", exact=True).click()
    page.locator("#chat-fork").wait_for(timeout=UI_MS)
    before = dropdown_options(page, "chat-sessions")
    assert len(before) == 1 and original in before[0]

    page.locator("#chat-fork").click()
    forked = wait_for(page, lambda: re.search(r"Forked into (\w+)", text_of(page, "chat-status")),
                      timeout_ms=UI_MS, what="the fork status").group(1)
    assert forked != original
    wait_for(page, lambda: forked in page.locator("#chat-sessions input").first.input_value(),
             timeout_ms=UI_MS, what="the fork chosen in the sessions list")
    after = dropdown_options(page, "chat-sessions")
    assert len(after) == len(before) + 1
    fork_label = next(o for o in after if forked in o)
    assert f"{len(history)} messages" in fork_label
    assert chat_texts(page) == history  # the page now shows the fork: the same history
    shot(page, artifacts_dir, "fork")

    # and in the sessions database: a second session with the same messages
    engine = Engine(app["settings"], backend=app["backend"])
    a, b = Session.load(engine, original), Session.load(engine, forked)
    assert [(m.role, m.text) for m in b.messages] == [(m.role, m.text) for m in a.messages]
    assert len(b.messages) == len(history) == 3


# -- 4. add and edit a memory ------------------------------------------------------------

def memory_rows(page) -> str:
    return text_of(page, "memory-table")


def test_memory_add_and_edit_are_listed_and_stored(page, app, artifacts_dir):
    from roleplay.memory import get_store

    user = "browser-flow-user"
    first, second = "The user's cat is called Miso.", "The user's cat is called Pepper."
    page.get_by_role("tab", name="Memory").click()
    user_box = page.locator("#memory-user textarea, #memory-user input").first
    user_box.fill(user)
    choose(page, "memory-character", "sherlock")
    wait_for(page, lambda: "memories." in text_of(page, "memory-status"), timeout_ms=UI_MS,
             what="the memory list to load")
    assert first not in memory_rows(page)

    page.locator("#memory-text textarea").fill(first)
    page.locator("#memory-add").click()
    wait_for(page, lambda: first in memory_rows(page), timeout_ms=60_000, what="the added memory in the table")
    stored = get_store(app["settings"]).list(user, "sherlock")
    assert [m.text for m in stored] == [first]

    # edit it: select the row (its text fills the emptied box), change the text, save
    text_box = page.locator("#memory-text textarea")
    text_box.fill("")
    page.locator("#memory-table").get_by_text(first, exact=True).filter(visible=True).first.click()
    wait_for(page, lambda: text_box.input_value() == first, timeout_ms=UI_MS, what="the selected memory")
    text_box.fill(second)
    page.locator("#memory-save-edit").click()
    wait_for(page, lambda: "Edited" in text_of(page, "memory-status"), timeout_ms=60_000, what="the edit")
    rows = memory_rows(page)
    assert second in rows and first not in rows
    assert [m.text for m in get_store(app["settings"]).list(user, "sherlock")] == [second]
    shot(page, artifacts_dir, "memory")
