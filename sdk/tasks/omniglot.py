"""Omniglot (Lake et al. 2015) few-shot character classification, Vinyals et al. (2016) protocol.

The source is ``omniglot_trainval.npz`` (``images (C, 20, 105, 105)`` bool, True = background;
``names (C,)`` ``Alphabet/characterNN``) and ``splits_vinyals/{train,val[,test]}.txt`` listing classes
as ``Alphabet/characterNN/rotDDD``: each of the 4 rotations (0/90/180/270 degrees) of a character is
its own class. Images are inverted (ink = 1), converted to 8-bit greyscale and resized to 28 x 28 with
a Lanczos filter, as the MAML / ProtoNets reference code does; samples are float32 ``(1, 28, 28)`` in
``[0, 1]``. The shared folder holds the 1200 train + val characters only (4112 + 688 classes of 20
drawings); a folder that also has ``test.txt`` and the test characters gives a ``"test"`` split.

Resizing 24 000 drawings takes a few seconds, so the uint8 result is cached as an ``.npz`` file in
``$METAEDGE_CACHE`` (default ``~/.cache/metaedge``), keyed by the source files' size and mtime and the
image size; it is read back without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ...atomic import atomic_write
from ...errors import InputError
from .base import register_family
from .episodes import EpisodicFamily
from .images import pillow, resize
from .table import find_data_dir

#: bump when the preprocessing changes, so stale caches are not reused
PREPROCESS_VERSION = 1
ROTATIONS = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}  # quarter turns for np.rot90
_LINE = re.compile(r"^(?P<char>[^/]+/[^/]+)/(?P<rot>rot\d{3})$")


def cache_dir() -> Path:
    """``$METAEDGE_CACHE``, or ``~/.cache/metaedge``: where preprocessed data sets are kept."""
    return Path(os.environ.get("METAEDGE_CACHE") or "~/.cache/metaedge").expanduser()


def preprocess(images: np.ndarray, size: int) -> np.ndarray:
    """Background-true binary drawings ``(C, D, H, W)`` -> ink-bright uint8 ``(C, D, size, size)``."""
    Image = pillow()
    out = np.empty(images.shape[:2] + (size, size), dtype=np.uint8)
    for c in range(images.shape[0]):
        ink = np.where(images[c], np.uint8(0), np.uint8(255))  # invert: ink = 255, i.e. 1.0 once scaled
        for d in range(images.shape[1]):
            # From a uint8 array Pillow makes a mode "L" image, so the Lanczos filter applies.
            out[c, d] = resize(Image.fromarray(ink[d]), size)[0]
    return out


def load_characters(files: list[Path], size: int) -> tuple[list[str], np.ndarray]:
    """Character names and their preprocessed drawings ``(C, D, size, size)`` uint8, through the cache."""
    stats = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = hashlib.sha256(json.dumps([stats, size, PREPROCESS_VERSION]).encode()).hexdigest()[:16]
    cached = cache_dir() / f"omniglot-{size}px-{key}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return z["names"].tolist(), z["images"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache file: rebuild it below
    names: list[str] = []
    parts: list[np.ndarray] = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            if "images" not in z or "names" not in z:
                raise InputError(f"{f}: expected arrays 'images' and 'names', found {list(z.keys())}")
            images, file_names = z["images"], z["names"]
        if images.ndim != 4 or images.dtype != np.bool_ or file_names.shape != images.shape[:1]:
            raise InputError(
                f"{f}: expected images (C, drawers, H, W) bool and names (C,), got {images.shape} {images.dtype} "
                f"and {file_names.shape}; pass an Omniglot npz as described in its README"
            )
        if parts and images.shape[1] != parts[0].shape[1]:
            raise InputError(f"{f}: {images.shape[1]} drawings per character, other files {parts[0].shape[1]}")
        names += file_names.tolist()
        parts.append(preprocess(images, size))
    if len(set(names)) != len(names):
        raise InputError(f"character names repeat across {[f.name for f in files]}; keep each character in one file")
    data = np.concatenate(parts)
    _save_cache(cached, names, data)
    return names, data


def _save_cache(path: Path, names: list[str], images: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic, so a concurrent reader never sees a half-written file
        atomic_write(path, lambda f: np.savez(f, names=np.array(names), images=images))
    except OSError as err:
        warnings.warn(
            f"could not cache preprocessed Omniglot in {path.parent} ({err}); set METAEDGE_CACHE to a "
            "writable folder to skip the preprocessing next time",
            stacklevel=3,
        )


def read_split(path: Path, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A Vinyals split file: character index ``(L,)``, quarter turns ``(L,)`` and the class names (lines)."""
    chars, turns, lines = [], [], []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None or m["rot"] not in ROTATIONS:
            raise InputError(
                f"{path}, line {number}: {line!r} is not 'Alphabet/characterNN/rotDDD' with DDD in "
                "000/090/180/270; fix that line"
            )
        if m["char"] not in index:
            raise InputError(
                f"{path}, line {number}: character {m['char']!r} is not in the npz files; add its "
                "drawings or drop the line"
            )
        chars.append(index[m["char"]])
        turns.append(ROTATIONS[m["rot"]])
        lines.append(line)
    if not lines:
        raise InputError(f"{path}: lists no class; pass a filled split file")
    return np.array(chars), np.array(turns), lines


@register_family("omniglot")
class Omniglot(EpisodicFamily):
    """Omniglot n-way k-shot episodes, rotations as classes (see the module docstring).

    Args:
        path: a folder with Omniglot ``*.npz`` files and ``splits_vinyals/``, or one npz file beside
            ``splits_vinyals/``; default ``shared/data/omniglot`` (see :func:`find_data_dir`).
        image_size: side of the resized square images.
        ways: default classes per episode (5; 20-way episodes via ``ways=20`` when sampling).

    Splits: ``"train"`` and ``"val"`` (Vinyals train / val classes), ``"test"`` only where the folder
    has ``splits_vinyals/test.txt`` and the test characters.
    """

    name = "omniglot"

    def __init__(self, path: str | Path | None = None, image_size: int = 28, ways: int = 5) -> None:
        source = find_data_dir("omniglot") if path is None else Path(path)
        if source.is_file():
            folder, files = source.parent, [source]
        else:
            folder, files = source, sorted(source.glob("*.npz"))
        if not files:
            raise InputError(f"{source}: no Omniglot .npz file; pass the folder of omniglot_trainval.npz")
        splits_dir = folder / "splits_vinyals"
        split_files = {
            s: splits_dir / f"{s}.txt" for s in ("train", "val", "test") if (splits_dir / f"{s}.txt").is_file()
        }
        if "train" not in split_files:
            raise InputError(f"{splits_dir}: no train.txt; pass a folder with splits_vinyals/train.txt (and val.txt)")
        names, drawings = load_characters(files, image_size)  # (chars, drawers, s, s) uint8
        index = {n: i for i, n in enumerate(names)}
        splits, class_names = {}, []
        for s, split_file in split_files.items():
            chars, turns, lines = read_split(split_file, index)
            x = np.empty((len(chars), drawings.shape[1], 1, image_size, image_size), dtype=np.uint8)
            for k in range(4):
                sel = turns == k
                x[sel, :, 0] = np.rot90(drawings[chars[sel]], k, axes=(-2, -1))
            # Class ids run on across splits, so train and val classes never share an id.
            ids = np.arange(len(class_names), len(class_names) + len(lines))
            class_names += lines
            splits[s] = (x.reshape(-1, 1, image_size, image_size), np.repeat(ids, drawings.shape[1]))
        self.image_size = image_size
        # the shared data holds Vinyals train + val only: evaluate on val unless test characters are present
        self.eval_split = "test" if "test" in splits else "val"
        self._setup(splits, ways, None, class_names, str(folder))

    def _split(self, split: str) -> str:
        if split == "test" and "test" not in self._x:
            raise InputError(
                f"the Omniglot test characters are not in {self.source}; use split 'val' (or point path at a "
                "folder with splits_vinyals/test.txt and the test characters)"
            )
        return super()._split(split)
