"""The Author tab's "Extract from a book" flow in headless Debian chromium (Playwright, real Gradio).

Upload a novel, pick its inspector among the detected speakers, add her other names,
extract, review the draft, save — then check what was really written: a loadable card in
this app's ROLEPLAY_HOME with the extracted stories beside it, and the card listed in the
editor's picker. A screenshot goes to ``artifacts_dir`` as ``webui_author_extract.png``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import CHROMIUM, CHROMIUM_ARGS, running_webui, wait_for

UI_MS = 60_000
DATA = Path(__file__).parent / "data" / "authoring"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                 reason="Debian chromium is not installed (make browser)")]


def test_upload_pick_review_save(tmp_path, roleplay_home, backend, artifacts_dir):
    from playwright.sync_api import sync_playwright

    from roleplay.authoring.scoring import parse_labelled
    from roleplay.cards import load_card

    clean, _ = parse_labelled((DATA / "en_quill.txt").read_text(encoding="utf-8"))
    book = tmp_path / "harrowgate.txt"
    book.write_text(clean, encoding="utf-8")
    home = roleplay_home
    with running_webui(home, backend) as (url, _settings), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#chat-input textarea", timeout=UI_MS)
        page.get_by_role("tab", name="Author").click()
        page.locator("#author-card input").wait_for(timeout=UI_MS)
        page.get_by_text("Extract from a book", exact=True).click()
        page.locator("#author-book").wait_for(timeout=UI_MS)

        page.set_input_files("#author-book input[type=file]", str(book))
        summary = page.locator("#author-book-summary")
        wait_for(page, lambda: "attributed" in summary.inner_text() or "⚠" in summary.inner_text(),
                 timeout_ms=UI_MS, what="the speakers of the book")
        assert "Quill" in summary.inner_text()

        box = page.locator("#author-speaker input").first
        box.click()
        options = page.locator("#author-speaker [role=option]")
        options.first.wait_for(timeout=UI_MS)
        names = [t.replace("✓", "").strip() for t in options.all_inner_texts()]
        assert "Quill" in names and "Marsh" in " ".join(names)
        options.filter(has_text="Quill").first.click()
        page.locator("#author-aliases textarea, #author-aliases input").first.fill("Inspector Quill, Margaret Quill")

        page.locator("#author-extract-btn").click()
        review = page.locator("#author-draft-review")
        wait_for(page, lambda: "lines, mean confidence" in review.inner_text() or
                 "⚠" in page.locator("#author-draft-status").inner_text(), timeout_ms=UI_MS, what="the draft")
        assert "Quill" in review.inner_text()
        draft_yaml = page.locator("#author-draft-yaml").inner_text()
        assert "name: Quill" in draft_yaml and "persona:" in draft_yaml

        target = home / "characters" / "quill" / "character.yaml"
        assert not target.exists()
        page.locator("#author-draft-save").click()
        status = page.locator("#author-draft-status")
        wait_for(page, lambda: "Saved" in status.inner_text() or "⚠" in status.inner_text(),
                 timeout_ms=UI_MS, what="the save")
        assert "Saved" in status.inner_text(), status.inner_text()
        page.screenshot(path=str(artifacts_dir / "webui_author_extract.png"), full_page=True)

        card = load_card(target)
        assert card.name == "Quill" and "Inspector Quill" in card.aliases
        stories = [t for _s, t in card.all_stories()]
        assert stories and any(line.startswith("Quill:「") for s in stories for line in s.splitlines())
        picker = page.locator("#author-card input").first
        picker.click()
        page.locator("#author-card [role=option]").first.wait_for(timeout=UI_MS)
        assert "quill" in [t.replace("✓", "").strip() for t in
                           page.locator("#author-card [role=option]").all_inner_texts()]
        browser.close()
