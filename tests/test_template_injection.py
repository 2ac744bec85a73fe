"""Template injection: card and chat text are data, user templates run sandboxed."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from roleplay.cards.schema import Character
from roleplay.compose import Composer, StageNote
from roleplay.config import Budgets
from roleplay.errors import ConfigError, RoleplayError
from roleplay.tokens import approx_tokens

PAYLOADS = ["{{ 7*7 }}", "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
            "{% for x in range(3) %}loop{% endfor %}", "{% for %}", "{{ config }}", "{#", "{% raw %}"]
NOTE = StageNote(intent="neutral", intent_score=0.0, emotion="calm", note="(nods)")


def card_with(payload: str) -> Character:
    return Character(
        id="victim", name=f"Eve {payload}", persona=f"Persona {payload}", scenario=f"Scene {payload}",
        system_prompt=f"Sys {payload}", post_history_instructions=f"Post {payload}",
        knowledge={"unknown": [f"topic {payload}"], "known": [f"fact {payload}"]},
        stories=[f"Eve:「(waves) {payload}」"], user_name=f"Bob {payload}")


def compose(card: Character, text: str, composer: Composer | None = None, **kw):
    return (composer or Composer()).compose(
        card, [{"role": "user", "content": text}, {"role": "assistant", "content": text}], text,
        user_name=card.user_name, user_persona=text, stories=[text], memories=[text], summary=text,
        note=NOTE, budgets=Budgets(), count_tokens=approx_tokens, **kw)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("stage_mode", ["prefill", "instruct"])
def test_payloads_in_card_and_user_text_appear_literally(payload, stage_mode):
    card = card_with(payload)
    p = compose(card, f"user says {payload}", stage_mode=stage_mode)
    text = "\n".join(m["content"] for m in p.messages)
    for field in ("Persona", "Scene", "Sys", "topic", "fact", "user says"):
        assert f"{field} {payload}" in text, field
    if stage_mode == "instruct":
        assert f"Post {payload}" in text
    assert "49" not in text and "<class" not in text and "loop" not in text.replace(payload, "")


def test_user_template_folder_renders_sandboxed(tmp_path):
    (tmp_path / "system_en.j2").write_text("Custom for {{ char }} and {{ user }}: {{ persona }}", encoding="utf-8")
    p = compose(card_with("{{ 7*7 }}"), "hi", composer=Composer(template_dir=tmp_path))
    assert p.messages[0]["content"] == "Custom for Eve {{ 7*7 }} and Bob {{ 7*7 }}: Persona {{ 7*7 }}"
    assert p.messages[1]["content"].startswith("Classic scenes of")  # fallback to built-ins


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ persona.__class__.__base__.__subclasses__() }}",
    "{{ char.format.__globals__ }}",
])
def test_sandbox_stops_unsafe_user_templates(tmp_path, source):
    (tmp_path / "system_en.j2").write_text(source, encoding="utf-8")
    with pytest.raises(RoleplayError) as err:
        compose(card_with("x"), "hi", composer=Composer(template_dir=tmp_path))
    assert "system_en.j2" in str(err.value) and "sandbox" in str(err.value)


@pytest.mark.parametrize("source, match", [
    ("{% for %}", "syntax error"),
    ("{{ no_such_variable }}", "undefined"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_broken_user_templates_are_one_clear_error(tmp_path, source, match):
    (tmp_path / "system_en.j2").write_text(source, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        compose(card_with("x"), "hi", composer=Composer(template_dir=tmp_path))


def test_missing_template_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Composer(template_dir=tmp_path / "nope")


_SPECIAL = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "<|im_start|>", "<|im_end|>", "\x00", "{{char}}",
                            "{{user}}", "<USER>", "（", "）", "\n", "「", "」", "\u200b", "\ud7ff", "🙂"])
_TEXT = st.lists(st.one_of(st.text(max_size=20), _SPECIAL), max_size=30).map("".join)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persona=_TEXT, user_text=_TEXT, name=_TEXT.filter(lambda s: s.strip()), big=st.integers(0, 3),
       mode=st.sampled_from(["prefill", "instruct", "off"]), plain=st.booleans())
def test_random_text_never_crashes_the_composer(persona, user_text, name, big, mode, plain):
    """Whatever the text, composing either works or raises a RoleplayError."""
    try:
        card = Character(id="fuzz", name=name, persona=persona * (1 + big * 5000), scenario=user_text,
                         user_name=name[:10] or "U", lorebook=[{"keys": ["k"], "content": persona}])
    except Exception:  # pydantic rejects some names; the card loader turns that into CardError
        return
    try:
        p = compose(card, user_text * (1 + big * 2000), stage_mode=mode, plain=plain)
    except RoleplayError:
        return
    assert all(isinstance(m["content"], str) for m in p.messages)
    assert p.parts["history"] <= Budgets().history
