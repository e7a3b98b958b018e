"""The test-time augmentations every command offers, named by the views they average (``Preprocess.evaluate``
makes them). Torch-free, so settings can be checked without importing torch."""

TTA_MODES = ("none", "flip", "flip-translate", "ten-crop")
