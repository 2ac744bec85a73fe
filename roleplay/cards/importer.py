"""Import any supported card into ``DIR/<id>/``: format detection, reading, safe writing.

Formats (detected from the bytes first, the suffix second): our YAML card (a file, a
folder with ``character.yaml`` + ``stories/*.txt`` + images, or a zip of one);
SillyTavern V1/V2/V3 as ``.json`` or ``.png``; ChatHaruhi folders, zips and jsonl.

Reading never writes: everything becomes an `ImportedCard` in memory (bounded by
`LIMITS`), images are re-encoded by Pillow, and every name that becomes a path goes
through `safe_name`/`safe_join`. Writing stages the whole card folder beside the target
and renames it into place, so an import that fails half-way (disk full, a bad member)
leaves neither a half card nor a damaged previous one.
"""
from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import CardError
from . import chatharuhi
from .archive import read_zip
from .images import reencode_png
from .png import SIGNATURE, read_text_chunks
from .safety import LIMITS, safe_join, safe_name
from .schema import ID_RE, Character
from .tavern import from_tavern, parse_json_card
from .yaml_io import atomic_write, character_from_data, load_card, parse_yaml, save_card

FORMATS = ("yaml", "card-folder", "card-zip", "tavern-json", "tavern-png", "chatharuhi-folder",
           "chatharuhi-zip", "chatharuhi-jsonl")


@dataclass
class ImportedCard:
    """A card read from an upload, not yet written: the card, its story files and images."""

    card: Character
    format: str
    #: ``stories/<name>`` → text (ChatHaruhi scenes, or a card folder's story files).
    story_files: dict[str, str] = field(default_factory=dict)
    #: file name beside the card → re-encoded PNG bytes (avatar, emotion images).
    assets: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """What `import_card` wrote."""

    card: Character
    path: Path
    format: str
    stories: int
    story_files: int
    assets: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.card.id, "name": self.card.name, "path": str(self.path), "format": self.format,
                "language": self.card.language, "stories": self.stories, "story_files": self.story_files,
                "lorebook": len(self.card.lorebook), "greetings": len(self.card.greetings),
                "assets": self.assets, "warnings": self.warnings}


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        if path.is_symlink():
            raise CardError("symbolic links are not followed in imports", file=path)
        size = path.stat().st_size
        if size > limit:
            raise CardError(f"file is {size} bytes; the limit is {limit}", file=path)
        return path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read: {exc.strerror}", file=path) from None


def detect_format(path: str | Path) -> str:
    """One of `FORMATS` for ``path`` (CardError when it is none of them)."""
    path = Path(path)
    if path.is_dir():
        if (path / "character.yaml").is_file():
            return "card-folder"
        if (path / "system_prompt.txt").is_file() and (path / "texts").is_dir():
            return "chatharuhi-folder"
        raise CardError("a folder to import needs character.yaml, or ChatHaruhi's system_prompt.txt "
                        "and texts/", file=path)
    if not path.is_file():
        raise CardError("no such file or folder", file=path)
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CardError(f"cannot read: {exc.strerror}", file=path) from None
    suffix = path.suffix.lower()
    if head.startswith(SIGNATURE):
        return "tavern-png"
    if head.startswith(b"PK"):
        return "zip"
    if suffix == ".jsonl":
        return "chatharuhi-jsonl"
    if suffix == ".json":
        return "tavern-json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".png":
        return "tavern-png"
    if suffix == ".zip":
        return "zip"
    raise CardError("unknown card format; import a folder, .yaml, .json, .png, .zip or ChatHaruhi .jsonl",
                    file=path)


def read_import(path: str | Path, *, card_id: str | None = None) -> ImportedCard:
    """Read (never write) the card at ``path``; ``card_id`` overrides the detected id."""
    path = Path(path)
    if card_id is not None and not ID_RE.match(card_id):
        raise CardError("ids are 1-64 characters of a-z, 0-9, '_' or '-'", field="id")
    if path.name == "character.yaml" and path.is_file():
        path = path.parent  # the card with its stories and images, not the bare file
    fmt = detect_format(path)
    if fmt == "card-folder":
        return _from_file_map(_folder_files(path), source=str(path), fmt=fmt, card_id=card_id,
                              fallback=path.name)
    if fmt == "chatharuhi-folder":
        return _from_scenes(chatharuhi.from_folder(path), fmt, card_id, path.name)
    data = _read_bytes(path, LIMITS.zip_total_bytes if fmt == "zip" else LIMITS.file_bytes)
    if fmt == "zip":
        return _from_file_map(read_zip(path), source=str(path), fmt="zip", card_id=card_id, fallback=path.stem)
    return _from_single(path.name, data, source=str(path), fmt=fmt, card_id=card_id, fallback=path.stem)


def _from_single(name: str, data: bytes, *, source: str, fmt: str, card_id: str | None,
                 fallback: str) -> ImportedCard:
    if fmt == "tavern-png":
        return _from_png(data, source=source, card_id=card_id)
    text = chatharuhi.decode_text(data, file=source)
    if fmt == "chatharuhi-jsonl":
        return _from_scenes(chatharuhi.from_jsonl(text, source=source), fmt, card_id, fallback)
    if fmt == "tavern-json":
        card, files = from_tavern(parse_json_card(text, file=source), file=source, card_id=card_id)
        return _with_story_files(ImportedCard(card, fmt), files, source)
    raw = parse_yaml(text, file=source)
    card = character_from_data(raw, file=source, raw=raw)
    if card_id:
        card.id = card_id
    return ImportedCard(card, "yaml")


def _from_png(data: bytes, *, source: str, card_id: str | None) -> ImportedCard:
    import base64
    import binascii

    texts = read_text_chunks(data, file=source)
    key = "ccv3" if "ccv3" in texts else "chara" if "chara" in texts else None
    if key is None:
        raise CardError("this PNG holds no character card (no 'chara' or 'ccv3' text chunk)", file=source)
    b64 = "".join(texts[key].split())  # some writers wrap base64 lines
    if len(b64) * 3 // 4 > LIMITS.base64_decoded_bytes:
        raise CardError(f"'{key}' chunk decodes past {LIMITS.base64_decoded_bytes} bytes", file=source)
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"the '{key}' chunk is not valid base64; re-export the card", file=source) from None
    text = chatharuhi.decode_text(raw, file=f"{source}[{key}]")
    card, files = from_tavern(parse_json_card(text, file=f"{source}[{key}]"), file=source, card_id=card_id)
    out = ImportedCard(card, "tavern-png")
    out.assets["avatar.png"] = reencode_png(data, file=source)
    out.card.avatar = "avatar.png"
    return _with_story_files(out, files, source)


def _with_story_files(out: ImportedCard, files: dict[str, str], source: str) -> ImportedCard:
    if len(files) > LIMITS.stories:
        raise CardError(f"more than {LIMITS.stories} story files", file=source)
    for name, text in files.items():
        out.story_files[_story_name(name, source)] = text
    return out


def _story_name(name: str, source: str) -> str:
    try:
        rel = safe_name(name, what="story file")
    except CardError as exc:
        raise CardError(exc.reason, file=source) from None
    if "/" in rel or not rel.endswith(".txt"):
        raise CardError(f"story file {name!r} must be a plain NAME.txt", file=source)
    return rel


def _from_scenes(scenes: chatharuhi.Scenes, fmt: str, card_id: str | None, fallback: str) -> ImportedCard:
    card, files = chatharuhi.to_card(scenes, card_id=card_id, fallback_name=fallback)
    out = ImportedCard(card, fmt, story_files=dict(files))
    if not chatharuhi.detect_name(scenes):
        out.warnings.append(f"no speaker found in the scenes; named the character {card.name!r}")
    return out


def _folder_files(folder: Path) -> dict[str, bytes]:
    """A card folder's files (no symlinks, bounded) keyed by posix relative name."""
    out: dict[str, bytes] = {}
    total = 0
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            raise CardError("symbolic links are not followed in imports", file=p)
        if not p.is_file():
            continue
        data = _read_bytes(p, LIMITS.file_bytes)
        total += len(data)
        if total > LIMITS.zip_total_bytes or len(out) >= LIMITS.zip_members:
            raise CardError(f"the folder holds more than {LIMITS.zip_total_bytes} bytes or "
                            f"{LIMITS.zip_members} files", file=folder)
        out[p.relative_to(folder).as_posix()] = data
    return out


def _from_file_map(files: dict[str, bytes], *, source: str, fmt: str, card_id: str | None,
                   fallback: str) -> ImportedCard:
    """A card folder's or zip's files → ImportedCard (our YAML, ChatHaruhi, or one card file)."""
    cards = sorted((n for n in files if n.rsplit("/", 1)[-1] == "character.yaml"), key=len)
    if cards:
        return _from_yaml_folder(files, cards[0], source=source, fmt="card-folder" if fmt == "card-folder"
                                 else "card-zip", card_id=card_id)
    scenes = chatharuhi.from_files(files, source=source)
    if scenes is not None:
        return _from_scenes(scenes, "chatharuhi-zip", card_id, fallback)
    singles = [n for n in files if PurePosixPath(n).suffix.lower() in (".json", ".png", ".jsonl", ".yaml", ".yml")]
    if len(singles) == 1:
        n = singles[0]
        kind = {".json": "tavern-json", ".png": "tavern-png", ".jsonl": "chatharuhi-jsonl"}.get(
            PurePosixPath(n).suffix.lower(), "yaml")
        return _from_single(n, files[n], source=f"{source}:{n}", fmt=kind, card_id=card_id,
                            fallback=PurePosixPath(n).stem)
    raise CardError("no card found in the zip: expected character.yaml, ChatHaruhi system_prompt.txt + "
                    "texts/, or one .json/.png/.jsonl card", file=source)


def _from_yaml_folder(files: dict[str, bytes], card_name: str, *, source: str, fmt: str,
                      card_id: str | None) -> ImportedCard:
    prefix = card_name[: -len("character.yaml")]
    where = f"{source}:{card_name}" if fmt == "card-zip" else str(Path(source) / card_name)
    raw = parse_yaml(chatharuhi.decode_text(files[card_name], file=where), file=where)
    card = character_from_data(raw, file=where, raw=raw)
    if card_id:
        card.id = card_id
    out = ImportedCard(card, fmt)
    for n, data in files.items():
        if n.startswith(prefix + "stories/") and n.endswith(".txt"):
            out.story_files[_story_name(n[len(prefix + "stories/"):], source)] = \
                chatharuhi.decode_text(data, file=f"{source}:{n}")
    if len(out.story_files) > LIMITS.stories:
        raise CardError(f"more than {LIMITS.stories} story files", file=source)

    def asset(name: str | None, what: str) -> str | None:
        if not name:
            return None
        rel = safe_name(name, what=what)
        data = files.get(prefix + rel)
        if data is None:
            out.warnings.append(f"{what} {name!r} is missing from the import; reference dropped")
            return None
        new = str(PurePosixPath(rel).with_suffix(".png"))
        out.assets[new] = reencode_png(data, file=f"{source}:{prefix}{rel}")
        return new

    card.avatar = asset(card.avatar, "avatar")
    card.emotion_images = {k: v for k, v in ((k, asset(v, f"emotion image {k!r}"))
                                             for k, v in card.emotion_images.items()) if v}
    return out


def import_card(path: str | Path, *, out_dir: str | Path, card_id: str | None = None,
                overwrite: bool = False) -> ImportResult:
    """Read the card at ``path`` and write it to ``out_dir/<id>/`` (all or nothing).

    >>> import_card("haruhi.zip", out_dir="~/.roleplay/characters")  # doctest: +SKIP
    """
    imported = read_import(path, card_id=card_id)
    return write_imported(imported, out_dir=out_dir, overwrite=overwrite)


def write_imported(imported: ImportedCard, *, out_dir: str | Path, overwrite: bool = False) -> ImportResult:
    """Write an `ImportedCard` as ``out_dir/<id>/`` via a staging folder renamed into place."""
    out_dir = Path(out_dir).expanduser()
    card = imported.card
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CardError(f"cannot create the folder: {exc.strerror}", file=out_dir) from None
    target = safe_join(out_dir, card.id, what="card id")
    if target.exists() and not overwrite:
        raise CardError(f"a card {card.id!r} already exists there; pass --force to replace it or --id to "
                        "choose another id", file=target)
    staging = out_dir / f".import-{card.id}-{uuid.uuid4().hex[:8]}"
    old = out_dir / f".replaced-{card.id}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        jobs = [(safe_join(staging / "stories", n, what="story file"), t) for n, t in imported.story_files.items()]
        jobs += [(safe_join(staging, n, what="asset"), d) for n, d in imported.assets.items()]
        # subtle: thousands of scene files each fsync'd one after another cost ~7 ms apiece;
        # concurrent fsyncs share journal commits (3000 files: 22 s → ~1 s), same durability.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda job: atomic_write(*job), jobs))
        save_card(card, staging / "character.yaml")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    except (OSError, CardError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        reason = exc.strerror if isinstance(exc, OSError) else exc.reason.split(";")[0]
        raise CardError(f"cannot write the card ({reason}); nothing was changed", file=target) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    loaded = load_card(target)
    return ImportResult(card=loaded, path=target / "character.yaml", format=imported.format,
                        stories=len(loaded.all_stories()), story_files=len(imported.story_files),
                        assets=sorted(imported.assets), warnings=imported.warnings)
