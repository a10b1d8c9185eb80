"""The image data sets as components: Fashion-MNIST (offline, Debian's package) and CIFAR-10 (a
`cifar-10-batches-py` folder). Reading the files is symexp.data.images; this is the config."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch

from symexp.components import DataSet
from symexp.data import TensorData
from symexp.schema import Count, NonNegInt


@dataclass
class ImageSet(DataSet):
    name: Literal["fashion_mnist", "cifar10"] = "fashion_mnist"
    root: Optional[str] = None  # directory of the files; null = the data set's default location
    fallback: Optional[Literal["fashion_mnist"]] = None  # load this instead (one message) if `name` is missing
    n_train: Optional[Count] = None  # the first n training images (null = all)
    n_test: Optional[Count] = None  # the first n test images (null = all)
    augment: bool = False  # per-member random crop (after `pad` reflect padding) and horizontal flip
    pad: NonNegInt = 4
    flip: bool = True
    kind = "images"
    task = "classification"

    def build(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        from symexp.data.images import image_data

        return image_data(asdict(self), device, dtype)
