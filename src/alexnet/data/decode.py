"""Decode one image file to a square uint8 RGB array at a storage size, whatever its mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any PIL mode: 16-bit and 32-bit grey are scaled (not clipped) to 8 bits, CMYK is converted,
    and transparent pixels are laid on white (photos with alpha are mostly cut-outs on a white page)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(page, rgba)
    return image.convert("RGB")


def decode_image(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8: EXIF orientation applied, short side resized to ``size``, centre crop.

    Raises whatever PIL raises for an unreadable or truncated file.
    """
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale no smaller than we need
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        image.load()
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(resized, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
