"""A newcomer's first minute in headless Debian chromium (Playwright): the web UI opens
ready to chat, without a click.

A fresh home has no sessions, so the page opens with the first bundled card (gallery
order) and its greeting; sending a message there starts the chat (saved only now, so
opening a page never leaves empty sessions) and the real model replies; clicking a message
selects it for editing. Reloading then
opens with the last used character: here one whose session was updated last. A
screenshot of each step goes to the ``artifacts_dir`` as ``webui_open_<step>.png``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import CHROMIUM, CHROMIUM_ARGS as ARGS, running_webui, wait_for

#: Generation on a shared 2-core CPU can take a while; UI steps are fast.
SLOW_MS = 420_000
UI_MS = 60_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                 reason="Debian chromium is not installed (make browser)")]


def first_greeting(card) -> str:
    """The greeting line as the page shows it (macros expanded with the card's user name)."""
    from roleplay.cards.macros import expand

    return expand(card.greetings[0], char=card.name, user=card.user_name or "User")


def bot_texts(page) -> list[str]:
    return page.locator("#chatbot .message.bot").all_inner_texts()


def test_page_opens_with_a_greeting_then_chats_and_reopens_with_the_last_character(
        tmp_path, backend, artifacts_dir):
    from playwright.sync_api import sync_playwright

    from roleplay.cards import list_cards
    from roleplay.config import BUNDLED_CHARACTERS
    from roleplay.engine import Engine
    from roleplay.sessions import Session

    with running_webui(tmp_path / "home", backend) as (url, settings):
        cards, _errors = list_cards(settings)
        bundled = sorted((c for c in cards if c.path.parent.parent == BUNDLED_CHARACTERS),
                         key=lambda c: c.name.lower())
        first, other = bundled[0], bundled[-1]
        assert first.id != other.id
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#chat-input textarea", timeout=UI_MS)

            # no click: the first bundled card's greeting is there, and nothing is saved yet
            expected = first_greeting(first)
            wait_for(page, lambda: bot_texts(page), timeout_ms=UI_MS, what="the opening greeting")
            assert bot_texts(page)[0].startswith(expected[:40])
            assert first.name in page.locator("#chat-character-info").inner_text()
            assert Session.list(settings) == []
            page.screenshot(path=str(artifacts_dir / "webui_open_1_greeting.png"), full_page=True)

            # send a message: the chat starts with that character and the model replies
            page.get_by_text("Sampling", exact=True).click()
            page.locator("#chat-max-tokens input[type=number]").fill("8")
            page.locator("#chat-max-tokens input[type=number]").press("Tab")
            page.locator("#chat-input textarea").fill("Good evening. May I come in?")
            page.locator("#chat-input textarea").press("Enter")
            wait_for(page, lambda: "Reply saved" in page.locator("#chat-status").inner_text(),
                     timeout_ms=SLOW_MS, what="the reply")
            assert len(bot_texts(page)) == 2 and bot_texts(page)[1].strip()
            page.screenshot(path=str(artifacts_dir / "webui_open_2_reply.png"), full_page=True)
            # clicking a message selects it for editing (the click's row reaches the handler)
            page.locator("#chatbot .message.bot").first.click()
            wait_for(page, lambda: page.locator("#chat-edit textarea").input_value() == expected,
                     timeout_ms=UI_MS, what="the clicked greeting in the edit box")
            saved = Session.list(settings)
            assert [s["characters"] for s in saved] == [[first.id]]
            engine = Engine(settings, backend=backend)
            messages = Session.load(engine, saved[0]["id"]).messages
            assert [m.role for m in messages] == ["assistant", "user", "assistant"]
            assert messages[0].text == expected and messages[1].text == "Good evening. May I come in?"

            # the most recently updated session decides what a new page opens with
            Session.new(engine, other.id)
            page.reload(wait_until="domcontentloaded")
            page.wait_for_selector("#chat-input textarea", timeout=UI_MS)
            wait_for(page, lambda: bot_texts(page) and bot_texts(page)[0].startswith(first_greeting(other)[:20]),
                     timeout_ms=UI_MS, what="the last used character's greeting")
            assert other.name in page.locator("#chat-character-info").inner_text()
            page.screenshot(path=str(artifacts_dir / "webui_open_3_last_used.png"), full_page=True)
            browser.close()
