"""Few-shot episodes over a folder of labelled images: one sub-folder per class.

``"image-folder"`` reads ``<path>/<class>/<image>`` files (PNG, JPEG, BMP, GIF, TIFF via Pillow), resizes
each to ``image_size`` x ``image_size`` with an antialiasing (Lanczos) filter, in greyscale or RGB, and
keeps them as uint8; episodes hold float32 ``(C, H, W)`` images in ``[0, 1]``. Classes are split into
train / val / test deterministically by ``seed``, unless the folder has explicit ``train/``, ``val/``,
``test/`` sub-folders (each with class sub-folders), which are used as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, UnavailableError
from .base import register_family
from .episodes import EpisodicFamily
from .table import UnitSplit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
SPLIT_FOLDERS = ("train", "val", "test")


def pillow() -> Any:
    """The ``PIL.Image`` module, with a clear error when Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow ships with the training extras
        raise UnavailableError("image task families need Pillow; install it with `pip install pillow`") from err
    return Image


def resize(image: Any, size: int) -> np.ndarray:
    """A Pillow image of mode ``"L"`` or ``"RGB"`` resized to ``size`` x ``size``: uint8 ``(C, size, size)``.

    Lanczos (antialiased) filtering; the caller converts 1-bit images to ``"L"`` first, since Pillow
    applies no filter to mode ``"1"`` and the result would stay binary and blocky.
    """
    if image.size != (size, size):
        image = image.resize((size, size), pillow().LANCZOS)
    a = np.asarray(image, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 ``(channels, size, size)``; a ValueError names an unreadable file."""
    Image = pillow()
    try:
        with Image.open(path) as image:
            image.load()
            return resize(image.convert("L" if channels == 1 else "RGB"), size)
    except (OSError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise InputError(f"{path}: cannot read it as an image ({err}); remove or replace that file") from err


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` of the class sub-folders of ``root`` (hidden ones skipped)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root}: no class sub-folders; put each class's images in a folder <root>/<class>/")
    found: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}); add images or remove it")
        found[folder.name] = files
    return found


@register_family("image-folder")
class ImageFolder(EpisodicFamily):
    """Episodes over ``<path>/<class>/*.png`` (or ``<path>/{train,val,test}/<class>/*.png``).

    Args:
        path: the root folder.
        image_size: side of the square images after resizing (non-square images are stretched).
        channels: 1 (greyscale) or 3 (RGB).
        ways: default classes per episode.
        val_fraction, test_fraction: shares of the classes held out (ignored with explicit split folders).
        seed: seed of the class shuffle.
    """

    name = "image-folder"

    def __init__(
        self,
        path: str | Path,
        image_size: int = 28,
        channels: int = 1,
        ways: int = 5,
        val_fraction: float = 0.0,
        test_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"{root}: no such folder; pass a folder with one sub-folder per class")
        if channels not in (1, 3):
            raise InputError(f"channels={channels}; use 1 (greyscale) or 3 (RGB)")
        explicit = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
        if explicit:
            files = {s: class_folders(root / s) for s in explicit}
        else:
            by_class = class_folders(root)
            if len(by_class) < 2:
                raise InputError(f"{root}: only 1 class folder; few-shot episodes need several, one folder per class")
            held = UnitSplit(test_fraction=test_fraction, val_fraction=val_fraction, split_seed=seed).assign(
                sorted(by_class)
            )
            files = {s: {c: by_class[c] for c in held[s]} for s in SPLIT_FOLDERS if held[s]}
        names = sorted({c for per_split in files.values() for c in per_split})
        index = {c: i for i, c in enumerate(names)}
        splits = {}
        for s, per_class in files.items():
            paths = [(f, index[c]) for c, fs in per_class.items() for f in fs]
            x = np.stack([load_image(f, image_size, channels) for f, _ in paths])
            splits[s] = (x, np.array([label for _, label in paths], dtype=np.int64))
        self.image_size, self.channels, self.split_seed = image_size, channels, seed
        self.explicit_splits = bool(explicit)
        self._setup(splits, ways, None, names, str(root))
