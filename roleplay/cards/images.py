"""Images from untrusted cards: decoded under a pixel limit, re-encoded as plain PNG.

An upload's bytes are never copied to disk as they came: Pillow reads the header first,
the pixel count is checked against `LIMITS.image_pixels` before any pixel is decoded
(a decompression bomb stops there), and the image is saved anew as a PNG without its
metadata chunks (a card PNG's ``chara`` text would otherwise ride along). Pillow is
imported lazily; it is only needed when images are involved.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from ..errors import CardError
from .safety import LIMITS


def reencode_png(data: bytes, *, file: str | Path | None = None) -> bytes:
    """Decode ``data`` (any format Pillow reads) under the pixel limit; return a clean PNG."""
    from PIL import Image

    if len(data) > LIMITS.file_bytes:
        raise CardError(f"image is {len(data)} bytes; the limit is {LIMITS.file_bytes}", file=file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > LIMITS.image_pixels:
                    raise CardError(f"image is {w}x{h} pixels; the limit is {LIMITS.image_pixels} pixels",
                                    file=file)
                img.load()
                if img.mode not in ("RGB", "RGBA", "L", "LA"):
                    img = img.convert("RGBA")
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                return buf.getvalue()
    except CardError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError…) on bad data
        raise CardError(f"not a readable image ({type(exc).__name__}: {str(exc)[:120]})".splitlines()[0],
                        file=file) from None


def placeholder_avatar(name: str, *, size: tuple[int, int] = (400, 600)) -> bytes:
    """A generated portrait-shaped PNG (colour from the name) for cards without an avatar."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(name.encode("utf-8")).digest()
    bg = (64 + digest[0] // 2, 64 + digest[1] // 2, 64 + digest[2] // 2)
    fg = tuple(min(255, c + 90) for c in bg)
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse([w * 0.25, h * 0.12, w * 0.75, h * 0.45], fill=fg)      # head
    draw.rounded_rectangle([w * 0.12, h * 0.5, w * 0.88, h * 1.05], radius=int(w * 0.2), fill=fg)  # shoulders
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
