"""Atomic file writes: a file is either the old one or the whole new one, never half of either.

Every writer in the package goes through `replacing`: the new content goes to a hidden temporary
file beside the target (`.NAME.tmp`), is flushed and fsync'ed, and only then renamed over the
target (`os.replace` is atomic on POSIX). A kill at any moment leaves the previous file in place; a
failing disk (ENOSPC, EIO, raised by `write`, `flush` or `fsync`) leaves it too, removes the
temporary file and raises an OSError that names the file and says the previous one is unchanged.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temporary(path: str | Path) -> Path:
    """Where `replacing` writes before the rename: hidden, so folder listings never pick it up."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """`with replacing(p) as fh: fh.write(...)`: p is replaced by what was written, atomically and
    durably, only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OSError(err.errno, f"writing {path} failed ({reason}); {kept}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> str:
    """Write `data` to `path` atomically; return its sha256."""
    with replacing(path) as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def write_text(path: str | Path, text: str) -> str:
    """Write UTF-8 `text` to `path` atomically; return its sha256."""
    return write_bytes(path, text.encode("utf-8"))


def save_torch(obj, path: str | Path) -> str:
    """`torch.save(obj)` to `path` atomically (streamed to the temporary file, so a checkpoint is
    never held twice in memory); return the file's sha256."""
    import torch

    with replacing(path) as fh:
        torch.save(obj, fh)
    return sha256_file(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
