"""Datasets held whole as uint8 tensors, and the batched pipeline that feeds them to a model."""

from alexnet.data.augment import Preprocess
from alexnet.data.datasets import DATASETS, default_root, load_dataset, load_splits
from alexnet.data.device_loader import BatchLoader, shard
from alexnet.data.imageset import Dataset, ImageSet, channel_stats

__all__ = [
    "DATASETS",
    "BatchLoader",
    "Dataset",
    "ImageSet",
    "Preprocess",
    "channel_stats",
    "default_root",
    "load_dataset",
    "load_splits",
    "shard",
]
