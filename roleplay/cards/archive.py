"""Zip uploads read safely into memory: no member ever becomes a path on disk unchecked.

A zip from a stranger may name members ``../../.bashrc``, ``/etc/passwd``, ``C:\\x``,
carry NUL bytes or symlinks, lie about sizes, or hold a million entries. Each member is
checked with `safe_name` (the same rule every card path follows), symlinks are refused,
and member count and uncompressed bytes are bounded while reading, not just from the
(forgeable) directory. The result is a name -> bytes map; importers decide what to keep
and write it through `safe_join` under their target folder.
"""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from ..errors import CardError
from .safety import LIMITS, safe_name


def read_zip(path: str | Path) -> dict[str, bytes]:
    """Every regular file of the zip at ``path`` as ``{posix name: bytes}``; CardError if unsafe."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > LIMITS.zip_total_bytes:
            raise CardError(f"zip is {size} bytes; the limit is {LIMITS.zip_total_bytes}", file=path)
        zf = zipfile.ZipFile(path)
    except CardError:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, NotImplementedError, ValueError, EOFError… on junk
        raise CardError(f"not a readable zip file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                        file=path) from None
    out: dict[str, bytes] = {}
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > LIMITS.zip_members:
            raise CardError(f"zip has {len(infos)} members; the limit is {LIMITS.zip_members}", file=path)
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise CardError(f"zip member {info.filename!r} is a symbolic link; links are not allowed",
                                file=path)
            if info.filename.endswith("/"):  # a folder entry (not info.is_dir(): fails on empty names)
                _member_name(info.filename.rstrip("/"), path)
                continue
            name = _member_name(info.filename, path)
            if name in out:
                raise CardError(f"zip member {name!r} appears twice", file=path)
            budget = LIMITS.zip_total_bytes - total
            try:
                with zf.open(info) as fh:
                    data = fh.read(budget + 1)  # subtle: bound the real output, not the header's claim
            except CardError:
                raise
            except Exception as exc:  # zlib.error, BadZipFile (CRC), NotImplementedError (method), …
                raise CardError(f"zip member {name!r} cannot be read ({type(exc).__name__}: {exc})"
                                .splitlines()[0], file=path) from None
            total += len(data)
            if total > LIMITS.zip_total_bytes:
                raise CardError(f"zip expands past {LIMITS.zip_total_bytes} bytes (a zip bomb?)", file=path)
            out[name] = data
    return out


def _member_name(name: str, path: Path) -> str:
    try:
        return safe_name(name, what="zip member")
    except CardError as exc:
        raise CardError(exc.reason + "; the zip is refused", file=path) from None
