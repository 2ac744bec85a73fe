"""The web UI's named endpoints through ``gradio_client``: chat, swipes, edits, author, memory.

The real app (`webui.app.build_app`) runs in-process on a free loopback port with the
real SmolLM2 backend; replies are a few tokens. gradio_client keeps one session, so the
chat's session id (a ``gr.State``) carries across calls like in a browser tab.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from support import running_webui

HOSTILE = "<img src=x onerror=alert(1)>"


def write_hostile_card(home) -> None:
    """A card whose name, persona and greeting carry HTML/script payloads."""
    folder = home / "characters" / "evil"
    folder.mkdir(parents=True)
    (folder / "character.yaml").write_text(textwrap.dedent(f"""\
        id: evil
        name: "{HOSTILE}"
        persona: "<script>alert('persona')</script> A trickster."
        greetings:
          - "(grins) <script>alert('greeting')</script> {HOSTILE} Hello!"
        tags: ["<b>bold</b>"]
        """), encoding="utf-8")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, backend):
    """The launched app's URL and engine settings (module-scoped: one app for all tests)."""
    home = tmp_path_factory.mktemp("webui-home")
    write_hostile_card(home)
    with running_webui(home, backend) as (url, settings):
        yield {"url": url, "settings": settings}


@pytest.fixture
def client(ui):
    from gradio_client import Client

    return Client(ui["url"], verbose=False)


def text_of(message: dict) -> str:
    """A Chatbot message's text (gradio 6 returns content as a list of typed parts)."""
    content = message["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def last_content(chat: list) -> str:
    return text_of(chat[-1])


def test_every_event_has_a_named_endpoint(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ["/new_chat", "/send", "/regenerate", "/continue", "/swipe_prev", "/swipe_next",
                 "/edit_message", "/delete_from", "/fork", "/resume", "/author_load", "/author_validate",
                 "/author_save", "/author_preview", "/author_try", "/author_import", "/author_export",
                 "/memory_list", "/memory_add", "/memory_forget", "/eval_run", "/eval_report",
                 "/eval_transcript"]:
        assert name in names, name


def test_chat_send_regenerate_swipe_edit_delete(client, ui):
    from roleplay.cards import get_card

    card = get_card("sherlock", ui["settings"])
    chat, _img, _badge, status, *_ = client.predict("sherlock", "Lin", "", api_name="/new_chat")
    sid = re.search(r"`(\w+)`", status).group(1)  # the session id (a gr.State) is shown in the status
    assert chat[0]["role"] == "assistant"
    assert card.greetings[0].split(")")[0] in text_of(chat[0])  # the greeting is shown first

    sampling = (0.0, 0.95, 8, 1)  # greedy, few tokens
    job = client.submit("You have been in Afghanistan, I perceive?", *sampling, api_name="/send")
    outputs = job.outputs()
    final_chat = job.result()[0]
    assert len(outputs) >= 3  # streamed: several partial updates before the final one
    assert [m["role"] for m in final_chat] == ["assistant", "user", "assistant"]
    reply = last_content(final_chat)
    assert reply.strip() and "`" in reply  # the emotion badge
    why = job.result()[5]
    assert "Stage note" in why

    chat = client.submit(*sampling[:1], 0.95, 8, 2, api_name="/regenerate").result()[0]
    assert "swipe 2/2" in last_content(chat)
    chat = client.predict(api_name="/swipe_prev")[0]
    assert "swipe 1/2" in last_content(chat)
    assert last_content(chat).split("\n\n`")[0] == reply.split("\n\n`")[0]
    chat = client.predict(api_name="/swipe_next")[0]
    assert "swipe 2/2" in last_content(chat)

    chat = client.predict("(bows) Edited by hand.", api_name="/edit_message")[0]  # no selection: the last one
    assert last_content(chat).startswith("(bows) Edited by hand.")
    chat = client.predict(api_name="/delete_from")[0]
    assert [m["role"] for m in chat] == ["assistant", "user"]

    from roleplay.engine import Engine
    from roleplay.sessions import Session

    saved = Session.load(Engine(ui["settings"]), sid).messages
    assert [m.role for m in saved] == ["assistant", "user"]
    assert saved[1].speaker == "Lin"


def test_hostile_card_text_is_escaped(client):
    chat, _img, _badge, _status, info, *_ = client.predict("evil", "", "", api_name="/new_chat")
    greeting = text_of(chat[0])
    assert "<script>" not in greeting and "<img" not in greeting
    assert "&lt;script&gt;" in greeting and "&lt;img src=x onerror=alert(1)&gt;" in greeting
    assert "<img" not in info and "&lt;img" in info


def test_author_inline_error_then_save(client, ui):
    values = client.predict("ada", api_name="/author_load")
    fields, yaml_text = list(values[:11]), values[11]
    assert fields[0] == "ada" and "name:" in yaml_text

    broken = list(fields)
    broken[1] = ""  # an empty name
    out = client.predict(yaml_text, *broken, api_name="/author_validate")
    assert "must not be empty" in out[12] and "name" in out[12]  # the YAML panel names field and reason

    fixed = list(fields)
    fixed[1] = "Ada Revised"
    out = client.predict(yaml_text, *fixed, api_name="/author_save")
    assert "Saved to" in out[13]
    saved = ui["settings"].user_characters / "ada" / "character.yaml"
    from roleplay.cards import load_card

    card = load_card(saved)
    assert card.name == "Ada Revised"
    assert card.avatar is None or card.asset(card.avatar) is not None  # pictures copied along


def test_author_preview_shows_parts_and_tokens(client):
    values = client.predict("sherlock", api_name="/author_load")
    fields, yaml_text = list(values[:11]), values[11]
    md = client.predict(yaml_text, "Hello, who are you?", *fields, api_name="/author_preview")
    assert "| system |" in md and "**total**" in md
    assert "Messages sent to the model" in md


def test_memory_add_list_forget(client):
    table, status = client.predict("tester", "sherlock", "The user's cat is called Miso.", api_name="/memory_add")
    rows = table["data"] if isinstance(table, dict) else table
    assert any("Miso" in r[1] for r in rows)
    table, status = client.predict("tester", "sherlock", api_name="/memory_clear")
    table, status = client.predict("tester", "sherlock", api_name="/memory_list")
    rows = table["data"] if isinstance(table, dict) else table
    assert not [r for r in rows if any(r)]


def test_eval_tab_reports_and_escapes(client, ui):
    """A missing run is one clear error; transcripts are escaped."""
    report, *_ = client.predict("no-such-run", api_name="/eval_report")
    assert "not a run folder" in report
    from webui.eval_tab import transcript_markdown

    md = transcript_markdown({"item": "x", "character_name": HOSTILE, "user_name": "U", "turns": [
        {"user": "<script>alert(1)</script>", "replies": {"engine": {"text": HOSTILE}}}]})
    assert "<script>" not in md and "<img" not in md and "&lt;img" in md


def test_webui_refuses_public_bind_without_auth(capsys, tmp_path):
    from roleplay.cli import main

    assert main(["webui", "--host", "0.0.0.0"]) == 2
    assert "--auth" in capsys.readouterr().err
    assert main(["webui", "--share"]) == 2
    assert "--auth" in capsys.readouterr().err
    bad = tmp_path / "auth.txt"
    bad.write_text("# logins\nnocolon\n")
    assert main(["webui", "--host", "0.0.0.0", "--auth-file", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_a_gallery_click_opens_the_card_the_user_saw_even_if_the_list_moved():
    """A page opens with the gallery built at start-up and then refreshes it: a card
    imported meanwhile shifts the list, so a click's index alone would open its neighbour."""
    import gradio as gr

    from webui.chat_tab import pick

    def click(index, caption):
        return gr.SelectData(None, {"index": index, "value": {"image": None, "caption": caption}})

    before = [("ada", "Ada Lovelace · science"), ("sherlock", "Sherlock Holmes · detective")]
    after = [("ada", "Ada Lovelace · science"), ("mirela", "Captain Mirela Voss · airship"),
             ("sherlock", "Sherlock Holmes · detective")]
    assert pick(before, click(1, "Sherlock Holmes · detective")) == "sherlock"
    assert pick(after, click(1, "Sherlock Holmes · detective")) == "sherlock"  # the old page's index
    twins = [("a", "Twin"), ("b", "Twin")]
    assert pick(twins, click(1, "Twin")) == "b"  # equal captions: the index decides
    assert pick(after, click(0, None)) == "ada"  # no caption sent: the index
    assert pick(after, click(7, "Nobody")) is None
