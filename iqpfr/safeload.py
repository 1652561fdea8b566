"""The one way the project reads a tensor file: as data, never as code.

`torch.load(..., weights_only=True)` unpickles only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), so a checkpoint, bundle or target file handed in by someone
else cannot run code when it is opened (a pickle can: PyTorch made weights_only the default in 2.6
for that reason). Training state that is not of those types is stored in a form that is (the
numpy RNG state as a tensor and plain numbers: `train.rng_state`). A file that needs anything
else is refused with an error naming it. Tests check that no other module calls `torch.load`.

Integrity. `torch.save` writes a zip archive with a CRC-32 per record, but `torch.load` does not
check them: a flipped bit in a tensor loads silently. `load` therefore refuses a file whose zip
records fail their CRC, or that carries bytes after the archive's end record (an appended or
truncated file), before unpickling anything. `tensor_digest` is a sha256 over a file's tensors
and values, which bundles carry so that a re-saved, hand-edited bundle is refused too.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import torch

_END_OF_ARCHIVE = b"PK\x05\x06"  # the zip end-of-central-directory signature (22-byte record, no comment)


def _check_archive(path: Path, what: str) -> None:
    """Refuse anything but an intact zip archive that ends where its end record says."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 22))
        tail = fh.read()
    if size < 22 or tail[:4] != _END_OF_ARCHIVE or tail[-2:] != b"\x00\x00":
        raise ValueError(f"{path} is not a readable {what}: it is not an intact torch.save archive "
                         f"(truncated, appended to, or another format)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path} is not a readable {what}: damaged archive ({err})") from None
    if bad is not None:
        raise ValueError(f"{path} is not a readable {what}: record {bad} fails its CRC check (the file is damaged)")


def tensor_digest(obj) -> str:
    """sha256 over a nested structure of tensors and plain values (dict keys in sorted order):
    equal for equal contents, whatever file they were saved in."""
    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(b"D")
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"L" if isinstance(x, list) else b"U")
            for v in x:
                walk(v)
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def load(path: str | Path, what: str = "tensor file", map_location: str | torch.device = "cpu"):
    """Read `path` with weights_only=True after checking the archive (CRCs, nothing appended).
    FileNotFoundError if missing; ValueError (naming the file) if it is damaged, unreadable or holds
    objects other than tensors and plain data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found")
    _check_archive(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a file we will not trust
        reason = str(err).strip().splitlines()
        first = next((line for line in reason if "Unsupported global" in line or "GLOBAL" in line), reason[0] if reason else "")
        raise ValueError(f"{path} is not a readable {what}: it is damaged or holds objects other than tensors and plain "
                         f"data, which are refused ({type(err).__name__}: {first.strip()})") from None
