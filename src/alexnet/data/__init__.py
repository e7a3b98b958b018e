"""Datasets held whole as uint8 arrays, and the batched pipeline that feeds them to a model.

Names load on first use: finding and describing a dataset (``alexnet data``) needs NumPy only, and the
torch side (``Preprocess``, ``BatchLoader``) is imported when a model is fed.
"""

from __future__ import annotations

from alexnet.lazy import lazy_exports

_EXPORTS = {
    "DATASETS": "alexnet.data.datasets",
    "default_root": "alexnet.data.datasets",
    "load_dataset": "alexnet.data.datasets",
    "load_splits": "alexnet.data.datasets",
    "Dataset": "alexnet.data.imageset",
    "ImageSet": "alexnet.data.imageset",
    "channel_stats": "alexnet.data.imageset",
    "Preprocess": "alexnet.data.augment",
    "BatchLoader": "alexnet.data.device_loader",
    "shard": "alexnet.data.device_loader",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
