"""Datasets, loaders and features: CIFAR-10, MNIST, spoken digits, image folders."""

from ._dataset import DATASETS, ArrayDataset, DatasetInfo, list_datasets, register_dataset
from ._loader import AUGMENTATIONS, BatchLoader, to_float_tensor

# Importing the loader modules registers cifar10, mnist, fsdd and imagefolder.
from ._audio import dct_matrix, log_mel, mel_center_frequencies_hz, mel_filterbank, mfcc, read_wav  # isort: skip
from ._cifar10 import CIFAR10_CLASSES, load_cifar10  # isort: skip
from ._mnist import load_mnist  # isort: skip
from ._fsdd import load_fsdd  # isort: skip
from ._imagefolder import load_imagefolder  # isort: skip
from ._download import DOWNLOADS, RemoteDataset, RemoteFile, download  # isort: skip
from ._paths import CACHE_DIR_ENV, DATA_DIR_ENV, cache_dir, resolve_data_dir  # isort: skip
from ._splits import calibration_split, split_train_val  # isort: skip
from ._api import load_dataset, prepare  # isort: skip

__all__ = [
    "AUGMENTATIONS",
    "CACHE_DIR_ENV",
    "CIFAR10_CLASSES",
    "DATASETS",
    "DATA_DIR_ENV",
    "DOWNLOADS",
    "ArrayDataset",
    "BatchLoader",
    "DatasetInfo",
    "RemoteDataset",
    "RemoteFile",
    "cache_dir",
    "calibration_split",
    "dct_matrix",
    "download",
    "list_datasets",
    "load_cifar10",
    "load_dataset",
    "load_fsdd",
    "load_imagefolder",
    "load_mnist",
    "log_mel",
    "mel_center_frequencies_hz",
    "mel_filterbank",
    "mfcc",
    "prepare",
    "read_wav",
    "register_dataset",
    "resolve_data_dir",
    "split_train_val",
    "to_float_tensor",
]
