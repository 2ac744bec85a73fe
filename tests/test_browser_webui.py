"""The web UI in headless Debian chromium (Playwright): chat, swipes, escaping, authoring.

One walk through the page, as a user would: open it, pick a character, send a message
and watch the reply stream in with its action note, regenerate and switch swipes, open a
card with HTML/script in its fields (nothing runs; the text shows literally), then break a
card in the Author tab, see the inline error, fix it and save. A screenshot of every step
goes to the ``artifacts_dir`` (CI prints its path).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import CHROMIUM, CHROMIUM_ARGS as ARGS, running_webui, wait_for
from test_webui_endpoints import write_hostile_card

#: Generation on a shared 2-core CPU can take a while; UI steps are fast.
SLOW_MS = 420_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                 reason="Debian chromium is not installed (make browser)")]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, backend):
    home = tmp_path_factory.mktemp("browser-home")
    write_hostile_card(home)
    with running_webui(home, backend) as (url, _settings):
        yield url, home


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.dialogs = []  # type: ignore[attr-defined]
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        pg.goto(app_url[0], wait_until="domcontentloaded")
        pg.wait_for_selector("textarea", timeout=60_000)
        yield pg
        browser.close()


def shot(page, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"webui_{name}.png"), full_page=True)


def bot_texts(page) -> list[str]:
    return page.locator("#chatbot .message.bot").all_inner_texts()


def pick(page, caption: str) -> None:
    page.locator("#chat-gallery .thumbnail-item", has_text=caption).first.click()




def test_chat_swipes_escaping_and_author_flow(page, app_url, artifacts_dir):
    home = app_url[1]
    shot(page, artifacts_dir, "01_open")

    # pick a character: a new chat, the greeting first (the page opened with a greeting already)
    pick(page, "Sherlock")
    wait_for(page, lambda: "New chat" in page.locator("#chat-status").inner_text() and bot_texts(page),
             timeout_ms=60_000, what="the greeting")
    assert "(" in bot_texts(page)[0]
    shot(page, artifacts_dir, "02_picked")

    # send a message and watch the reply stream in
    page.get_by_text("Sampling", exact=True).click()  # open the accordion
    page.locator("#chat-max-tokens input[type=number]").fill("12")
    page.locator("#chat-max-tokens input[type=number]").press("Tab")
    page.locator("#chat-input textarea").fill("Good morning, Holmes. What do you deduce?")
    page.locator("#chat-input textarea").press("Enter")
    seen: set[str] = set()

    def reply_done() -> bool:
        texts = bot_texts(page)
        if len(texts) >= 2:
            seen.add(texts[-1])
        return "Reply saved" in page.locator("#chat-status").inner_text()

    wait_for(page, reply_done, timeout_ms=SLOW_MS, what="the streamed reply")
    final = bot_texts(page)[-1]
    assert len(seen) >= 2, "the reply did not stream (no partial text seen)"
    assert final.lstrip().startswith(("(", "（", "*")), f"no action note in {final!r}"
    page.get_by_text("Why this reply", exact=True).click()  # the collapsed "why" panel
    page.locator("#chat-why").get_by_text("Stage note").wait_for(timeout=30_000)
    assert "Retrieved lines" in page.locator("#chat-why").inner_text()
    shot(page, artifacts_dir, "03_reply_and_why")

    # regenerate, then move between the swipes
    page.locator("#chat-regenerate").click()
    wait_for(page, lambda: "swipe 2/2" in bot_texts(page)[-1] and "Reply saved" in
             page.locator("#chat-status").inner_text(), timeout_ms=SLOW_MS, what="the second swipe")
    shot(page, artifacts_dir, "04_regenerated")
    page.locator("#chat-prev").click()
    wait_for(page, lambda: "swipe 1/2" in bot_texts(page)[-1], timeout_ms=30_000, what="swipe 1/2")
    assert bot_texts(page)[-1].splitlines()[0] == final.splitlines()[0]  # swipe 1 is the first reply
    shot(page, artifacts_dir, "05_swipe_back")

    # a card with HTML/script in its fields: shown literally, nothing runs
    pick(page, "<img")
    wait_for(page, lambda: "<script>alert('greeting')</script>" in " ".join(bot_texts(page)),
             timeout_ms=60_000, what="the hostile greeting shown literally")
    assert "<img src=x onerror=alert(1)>" in page.locator("#chat-character-info").inner_text()
    assert "<img src=x onerror=alert(1)>" in page.locator("#chat-gallery").inner_text()
    assert page.locator("#chatbot img[src='x']").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
    shot(page, artifacts_dir, "06_hostile_card")

    # Author: load a card, break it, see the inline error, fix it, save
    page.get_by_role("tab", name="Author").click()
    page.locator("#author-card input").click()
    page.locator("#author-card input").fill("ada")
    page.get_by_role("option", name="ada", exact=True).click()
    name_box = page.locator("#author-name textarea, #author-name input").first
    wait_for(page, lambda: name_box.input_value().strip(), timeout_ms=30_000, what="the card to load")
    name_box.fill("")
    page.locator("#author-persona textarea").first.click()  # leave the field: validation runs
    wait_for(page, lambda: "must not be empty" in page.locator("#author-name").inner_text(),
             timeout_ms=30_000, what="the inline error at the name field")
    assert "field-error" in (page.locator("#author-name").get_attribute("class") or "")
    shot(page, artifacts_dir, "07_inline_error")

    name_box.fill("Ada Lovelace II")
    page.locator("#author-persona textarea").first.click()
    wait_for(page, lambda: "must not be empty" not in page.locator("#author-name").inner_text(),
             timeout_ms=30_000, what="the error to clear")
    page.locator("#author-save").click()
    wait_for(page, lambda: "Saved to" in page.locator("#author-status").inner_text(),
             timeout_ms=120_000, what="the save confirmation")
    shot(page, artifacts_dir, "08_saved")
    from roleplay.cards import load_card

    assert load_card(home / "characters" / "ada").name == "Ada Lovelace II"

    # the other tabs render
    page.get_by_role("tab", name="Memory").click()
    page.locator("#memory-user").wait_for()
    shot(page, artifacts_dir, "09_memory_tab")
    page.get_by_role("tab", name="Eval").click()
    page.locator("#eval-run").wait_for()
    shot(page, artifacts_dir, "10_eval_tab")
    assert page.dialogs == []  # type: ignore[attr-defined]
