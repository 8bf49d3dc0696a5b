"""Data for minicnn: MNIST files (IDX format, verified download, cache), mini-batches, and augmentation."""
from .idx import read_idx, parse_idx, write_idx  # noqa: F401
from .sources import UrlSource, NpmSource, LocalFolderSource, Source, log_to_stderr  # noqa: F401
from .mnist import (MNIST_FILES, MNIST_SHA256, default_data_dir, default_sources,  # noqa: F401
                    load_mnist, read_mnist_folder)
from .loader import iterate_batches, DataLoader, to_float_images  # noqa: F401
from .augment import random_affine, affine_matrices  # noqa: F401
