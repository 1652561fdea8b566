"""A corpus of bad image inputs, built on demand, for checking every entry point that reads
user images (`iqpfr restore`, the folder data source, the scorer): what each says per file.

`build(folder)` writes the corpus (no file is shipped); `report()` in benchmarks/bad_inputs.py
runs each entry point on it and prints the table that the README shows.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .synthfaces import render_face


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (8-bit RGB) with a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _bomb(side: int = 16000) -> bytes:
    """A small file that decompresses to side x side RGB pixels of zeros."""
    row = b"\x00" + b"\x00" * (3 * side)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _face(size: int = 64) -> np.ndarray:
    return (render_face([77, 0], size).image * 255).astype(np.uint8)


def build(folder: str | Path) -> dict[str, str]:
    """Write the corpus into `folder`; returns {file name: what it is}. One good face is included
    so that each entry point shows it processes the rest."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    face = _face()
    good = io.BytesIO()
    Image.fromarray(face).save(good, "PNG")
    jpg = io.BytesIO()
    Image.fromarray(face).save(jpg, "JPEG", quality=90)
    items = {}

    def put(name: str, content: bytes, what: str) -> None:
        (d / name).write_bytes(content)
        items[name] = what

    put("good face.png", good.getvalue(), "a valid face, with a space in its name")
    put("truncated.png", good.getvalue()[: len(good.getvalue()) // 2], "PNG cut in half")
    put("truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 2], "JPEG cut in half")
    put("zero.png", b"", "zero bytes")
    put("text.png", b"just some text, not an image\n", "a text file named .png")
    put("bomb.png", _bomb(), "decompression bomb: 16000 x 16000 pixels in a small file")
    put("header_20000.png", _png_header_only(20000, 20000), "header claims 20000 x 20000, no data")
    put("one_pixel.png", _png(Image.new("RGB", (1, 1), (200, 100, 50))), "1 x 1 pixel")
    put("deep16.png", _png(Image.fromarray((face[..., 0].astype(np.uint16) * 257))), "16-bit grayscale")
    cmyk = io.BytesIO()
    Image.fromarray(face).convert("CMYK").save(cmyk, "JPEG")
    put("cmyk.jpg", cmyk.getvalue(), "CMYK JPEG")
    pal = Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    put("palette_alpha.png", _png(pal, transparency=0), "palette PNG with transparency")
    gif = io.BytesIO()
    frames = [Image.fromarray(face), Image.fromarray(255 - face)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.gif", gif.getvalue(), "animated GIF (2 frames)")
    rot = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    Image.fromarray(face[:, :48]).save(rot, "JPEG", exif=exif)
    put("exif_rotated.jpg", rot.getvalue(), "JPEG with EXIF orientation 6")
    odd = os.fsdecode(b"latin1_\xe9t\xe9.png")  # not valid UTF-8
    (d / odd).write_bytes(good.getvalue())
    items[odd] = "valid face, file name not UTF-8"
    os.symlink("loop.png", d / "loop.png")
    items["loop.png"] = "symlink to itself"
    (d / "folder.png").mkdir()
    items["folder.png/"] = "a directory named like an image"
    return items


def _png(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()
