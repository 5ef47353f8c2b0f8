"""Datasets, loaders and features: CIFAR-10, MNIST, spoken digits, image folders."""

from ._dataset import DATASETS, ArrayDataset, DatasetInfo, list_datasets, register_dataset
from ._loader import AUGMENTATIONS, BatchLoader, to_float_tensor

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "ArrayDataset",
    "BatchLoader",
    "DatasetInfo",
    "list_datasets",
    "register_dataset",
    "to_float_tensor",
]
