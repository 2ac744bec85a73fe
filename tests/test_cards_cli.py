"""The cards CLI as users run it: ``.venv/bin/python -m roleplay …`` in a subprocess.
Errors are one line on stderr with exit code 2 and no traceback; ``--json`` prints one document."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "cards"


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROLEPLAY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "roleplay", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=180)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_validate_malformed_cards(tmp_path, roleplay_home):
    good = tmp_path / "good" / "character.yaml"
    good.parent.mkdir()
    good.write_text("id: good\nname: Good\n", encoding="utf-8")
    missing = tmp_path / "missing.yaml"
    missing.write_text("id: m\npersona: no name\n", encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: b\nname: B\ngreetings: [\n", encoding="utf-8")
    trunc = tmp_path / "trunc.png"
    info = PngInfo()
    info.add_text("chara", base64.b64encode(b'{"spec": "chara_card_v2", "data": {"name": "T"}}').decode())
    Image.new("RGB", (8, 8)).save(trunc, pnginfo=info)
    trunc.write_bytes(trunc.read_bytes()[:-20])
    proc = run("cards", "validate", str(good.parent), str(DATA / "bad_types.yaml"), str(missing), str(broken),
               str(trunc), str(DATA / "python_tag.yaml"), home=roleplay_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errs = proc.stderr.strip().splitlines()
    assert f"{DATA / 'bad_types.yaml'}:6: greetings[1]: must be a string" in errs
    assert f"{missing}: name: is required" in errs
    assert any(e.startswith(f"{broken}:") and "invalid YAML" in e for e in errs)
    assert any(e.startswith(f"{trunc}: truncated PNG") for e in errs)
    assert any(e.startswith(f"{DATA / 'python_tag.yaml'}:2: YAML tag") for e in errs)
    assert len(errs) == 3 + 4
    assert f"ok: {good.parent}" in proc.stdout
    ok = run("cards", "validate", str(good), "--json", home=roleplay_home)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True


def test_new_list_show_export_import(tmp_path, roleplay_home):
    proc = run("cards", "new", "keeper", "--json", home=roleplay_home)
    assert proc.returncode == 0, proc.stderr
    path = Path(json.loads(proc.stdout)["path"])
    assert path == roleplay_home / "characters" / "keeper" / "character.yaml"
    assert "# " in path.read_text("utf-8")  # the template is commented
    assert run("cards", "validate", str(path), home=roleplay_home).returncode == 0
    assert "already exists" in _one_line_error(run("cards", "new", "keeper", home=roleplay_home))

    listed = json.loads(run("cards", "list", "--json", home=roleplay_home).stdout)
    assert "keeper" in {c["id"] for c in listed["cards"]}
    shown = json.loads(run("cards", "show", "keeper", "--json", home=roleplay_home).stdout)
    assert shown["name"] == "Keeper" and shown["lorebook"][0]["keys"] == ["lighthouse", "lamp"]

    out = tmp_path / "keeper.png"
    exp = run("export", "keeper", "--format", "v3-png", "-o", str(out), "--json", home=roleplay_home)
    assert exp.returncode == 0, exp.stderr
    assert json.loads(exp.stdout)["path"] == str(out) and out.stat().st_size > 0
    imp = run("import", str(out), "--id", "keeper2", "-o", str(tmp_path / "cards"), "--json", home=roleplay_home)
    assert imp.returncode == 0, imp.stderr
    doc = json.loads(imp.stdout)
    assert doc["id"] == "keeper2" and doc["format"] == "tavern-png" and doc["lorebook"] == 1
    assert (tmp_path / "cards" / "keeper2" / "avatar.png").is_file()


def test_import_errors_are_one_line(tmp_path, roleplay_home):
    bad = tmp_path / "bad.png"
    info = PngInfo()
    info.add_text("chara", "%%% not base64 %%%")
    Image.new("RGB", (8, 8)).save(bad, pnginfo=info)
    assert "not valid base64" in _one_line_error(run("import", str(bad), home=roleplay_home))
    assert "unknown character" in _one_line_error(
        run("export", "nobody", "--format", "v2-json", "-o", str(tmp_path / "x.json"), home=roleplay_home))
    (tmp_path / "x.txt").write_text("hello", encoding="utf-8")
    assert "unknown card format" in _one_line_error(run("import", str(tmp_path / "x.txt"), home=roleplay_home))
    ok = run("import", str(DATA / "v1_bob.json"), "--json", home=roleplay_home)
    assert ok.returncode == 0 and json.loads(ok.stdout)["id"] == "bob"
    assert (roleplay_home / "characters" / "bob" / "character.yaml").is_file()  # default DIR
