"""The test-time augmentations every command offers, named by the views they average (``Preprocess.evaluate``
makes them). Torch-free, so settings can be checked without importing torch."""

from alexnet.errors import InputError

TTA_MODES = ("none", "flip", "flip-translate", "ten-crop")


def check_tta(tta: str) -> str:
    """``tta`` if it names a mode, else ``InputError`` listing them."""
    if tta not in TTA_MODES:
        raise InputError(f"unknown --tta {tta!r}; use {', '.join(TTA_MODES)}")
    return tta
