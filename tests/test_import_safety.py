"""Hostile uploads: zip-slip, absolute/drive/NUL names, symlinks, zip and image bombs, PNG
chunk floods, oversize base64 and files. Each is refused with a CardError, and nothing is
written outside (or left half-written inside) the target folder."""
from __future__ import annotations

import base64
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from roleplay.cards.importer import import_card, read_import
from roleplay.cards.safety import LIMITS, safe_join, safe_name
from roleplay.errors import CardError

CARD_YAML = b"id: zed\nname: Zed\npersona: p\navatar: avatar.png\n"


def _png(path: Path, *, size=(16, 16), chunks: dict[str, str] | None = None) -> Path:
    info = PngInfo()
    for k, v in (chunks or {}).items():
        info.add_text(k, v)
    Image.new("RGB", size, "blue").save(path, pnginfo=info)
    return path


def _card_png(path: Path, **kw) -> Path:
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Zed", "description": "d"}}
    return _png(path, chunks={"chara": base64.b64encode(json.dumps(card).encode()).decode()}, **kw)


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _only_expected(root: Path, expected: set[str]) -> None:
    """Everything under root is in ``expected`` (relative posix paths of top-level entries)."""
    assert {p.name for p in root.iterdir()} <= expected


@pytest.mark.parametrize("bad", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "C:/evil.txt",
                                 "C:evil.txt", "a\\..\\evil.txt"])
def test_zip_slip_members_are_refused(tmp_path, bad):
    z = _zip(tmp_path / "up.zip", [("zed/character.yaml", CARD_YAML), (bad, b"pwned")])
    out = tmp_path / "box" / "cards"
    with pytest.raises(CardError, match="zip member"):
        import_card(z, out_dir=out)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "box" / "evil.txt").exists()
    assert not out.exists() or not any(out.iterdir())


def test_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("zed/avatar.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "up.zip", [("zed/character.yaml", CARD_YAML), (link, b"/etc/passwd")])
    with pytest.raises(CardError, match="symbolic link"):
        import_card(z, out_dir=tmp_path / "out")


def test_symlink_in_folder_import_is_refused(tmp_path):
    src = tmp_path / "zed"
    src.mkdir()
    (src / "character.yaml").write_bytes(CARD_YAML)
    os.symlink("/etc/passwd", src / "avatar.png")
    with pytest.raises(CardError, match="symbolic links"):
        import_card(src, out_dir=tmp_path / "out")


def test_names_and_ids(tmp_path):
    for bad in ["", "a\x00b", "../x", "/abs", "D:\\x", "a/../../b"]:
        with pytest.raises(CardError):
            safe_name(bad)
    (tmp_path / "inside").mkdir()
    os.symlink(tmp_path, tmp_path / "inside" / "up")
    with pytest.raises(CardError, match="outside"):
        safe_join(tmp_path / "inside", "up/x")
    png = _card_png(tmp_path / "c.png")
    for bad_id in ["../x", "X", "a/b"]:
        with pytest.raises(CardError):
            import_card(png, out_dir=tmp_path / "out", card_id=bad_id)
    # an id smuggled in through our own extension field is validated like any other
    card = {"spec": "chara_card_v2", "data": {"name": "Zed", "extensions": {"roleplay": {"id": "../../x"}}}}
    (tmp_path / "c.json").write_text(json.dumps(card), encoding="utf-8")
    res = import_card(tmp_path / "c.json", out_dir=tmp_path / "out")  # an invalid id is replaced
    assert res.card.id == "zed" and res.path.parent == tmp_path / "out" / "zed"
    card["data"]["extensions"]["roleplay"] = {"id": "ok", "story_files": {"../../evil.txt": "x"}}
    (tmp_path / "c.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(CardError, match="story file"):
        import_card(tmp_path / "c.json", out_dir=tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_limits(tmp_path, monkeypatch):
    many = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(12)])
    monkeypatch.setattr(LIMITS, "zip_members", 10)
    with pytest.raises(CardError, match="12 members"):
        read_import(many)
    bomb = _zip(tmp_path / "bomb.zip", [("zed/character.yaml", CARD_YAML), ("zed/big.bin", b"\0" * 3_000_000)])
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(LIMITS, "zip_total_bytes", 1_000_000)
    with pytest.raises(CardError, match="zip bomb"):
        read_import(bomb)


def test_image_pixel_limit(tmp_path, monkeypatch):
    png = _card_png(tmp_path / "big.png", size=(300, 200))
    monkeypatch.setattr(LIMITS, "image_pixels", 50_000)
    with pytest.raises(CardError, match="300x200 pixels"):
        import_card(png, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_uploaded_image_is_reencoded(tmp_path):
    src = tmp_path / "zed"
    src.mkdir()
    (src / "character.yaml").write_bytes(CARD_YAML.replace(b"avatar.png", b"face.jpg"))
    Image.new("RGB", (20, 30), "green").save(src / "face.jpg", format="JPEG", comment=b"hello")
    res = import_card(src, out_dir=tmp_path / "out")
    assert res.card.avatar == "face.png"
    data = (res.path.parent / "face.png").read_bytes()
    assert data.startswith(b"\x89PNG") and b"hello" not in data
    (src / "face.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CardError, match="not a readable image"):
        import_card(src, out_dir=tmp_path / "out2")


def test_png_and_base64_and_size_limits(tmp_path, monkeypatch):
    flood = _png(tmp_path / "flood.png", chunks={f"k{i}": "v" for i in range(30)})
    monkeypatch.setattr(LIMITS, "png_chunks", 20)
    with pytest.raises(CardError, match="PNG chunks"):
        read_import(flood)
    monkeypatch.setattr(LIMITS, "png_chunks", 1000)
    png = _card_png(tmp_path / "c.png")
    monkeypatch.setattr(LIMITS, "base64_decoded_bytes", 20)
    with pytest.raises(CardError, match="decodes past"):
        read_import(png)
    monkeypatch.setattr(LIMITS, "file_bytes", 100)
    with pytest.raises(CardError, match="limit is 100"):
        read_import(png)


def test_story_count_limit(tmp_path, monkeypatch):
    root = tmp_path / "c"
    (root / "texts").mkdir(parents=True)
    (root / "system_prompt.txt").write_text("You are A.", encoding="utf-8")
    for i in range(5):
        (root / "texts" / f"{i}.txt").write_text("A: hi\n", encoding="utf-8")
    monkeypatch.setattr(LIMITS, "stories", 3)
    with pytest.raises(CardError, match="more than 3"):
        import_card(root, out_dir=tmp_path / "out")


def test_failed_write_leaves_previous_card(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cards"
    first = import_card(_card_png(tmp_path / "c.png"), out_dir=out)
    before = first.path.read_bytes()
    with pytest.raises(CardError, match="already exists"):
        import_card(tmp_path / "c.png", out_dir=out)
    # A replacement whose avatar cannot be written (a real EFBIG from RLIMIT_FSIZE, which
    # binds root too): the import fails as a whole and the previous card stays.
    noisy = tmp_path / "noisy.png"
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(noisy)
    big = _card_png(tmp_path / "big.png", size=(300, 300))
    big.write_bytes(big.read_bytes())
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from PIL import Image
from roleplay.cards.importer import import_card
from roleplay.cards.png import write_text_chunks, read_text_chunks
from roleplay.errors import CardError
texts = read_text_chunks(open({str(big)!r}, "rb").read())
data = write_text_chunks(open({str(noisy)!r}, "rb").read(), texts)
open({str(tmp_path / "noisy_card.png")!r}, "wb").write(data)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    import_card({str(tmp_path / "noisy_card.png")!r}, out_dir={str(out)!r}, overwrite=True)
    print("no error")
except CardError as e:
    print("CardError:", e)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CardError:") and "nothing was changed" in proc.stdout
    assert first.path.read_bytes() == before
    _only_expected(out, {"zed"})
