"""Text: sentences from Debian packages, embedding quantisers, reconstruction metrics, LM sizes.

The pieces of a lossy text compressor built on a sentence encoder (project 13): a sentence is
stored as the codes of its quantised embedding and read back by a decoder that inverts the
encoder.

* Corpus: :func:`wordnet_glosses` (Debian ``wordnet-base``) and :func:`fortunes` (Debian
  ``fortunes``) as :class:`Sentence` records with their source document, and
  :func:`split_by_document`, which never puts one document on two sides of a split.
* Quantisers (:class:`EmbeddingQuantizer`: ``fit`` / ``encode`` / ``decode`` and exact
  :attr:`~EmbeddingQuantizer.bits_per_vector`): :class:`ScalarQuantizer` (1 to 16 bits per
  coordinate, or raw float32), :class:`PCAQuantizer` (PCA truncation) and
  :class:`ProductQuantizer`; :class:`HuffmanCoder` entropy-codes their codes with exact
  sizes.
* Metrics: :func:`bleu` and :func:`chrf` (sacrebleu), :func:`token_f1`, :func:`exact_match`,
  :func:`bits_per_character`; lossless references :func:`compressed_bits` (gzip, bz2, lzma)
  and :func:`lm_code_lengths` (a causal LM as an arithmetic coder).
* Inversion: :class:`EmbeddingDecoder`, a small causal transformer conditioned on an
  embedding through a few soft prefix tokens, over a :class:`Vocabulary` cut from a
  tokenizer; trained with :func:`decoder_loss` through :mod:`weightspace.train`, read out
  with :meth:`EmbeddingDecoder.generate`, and corrected by :func:`invert` (sample, re-embed
  and rerank, in steps).
* Refusal judges (project 15): :func:`keyword_refusal` and :func:`attack_success` (Wei et
  al.'s substring rule, :data:`REFUSAL_SUBSTRINGS`) and :class:`RefusalClassifier`
  (logistic regression on sentence embeddings).

Example:
    >>> import torch
    >>> from weightspace import text
    >>> x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    >>> q = text.ScalarQuantizer(bits=4).fit(x)
    >>> codes = q.encode(x)
    >>> q.bits_per_vector, codes.shape
    (32, torch.Size([500, 8]))
    >>> coder = text.HuffmanCoder(q.levels).fit(codes)
    >>> bool(coder.code_lengths(codes).float().mean() < q.bits_per_vector)
    True
"""

from __future__ import annotations

from weightspace.text._corpus import Sentence as Sentence
from weightspace.text._corpus import fortunes as fortunes
from weightspace.text._corpus import split_by_document as split_by_document
from weightspace.text._corpus import wordnet_glosses as wordnet_glosses
from weightspace.text._decoder import EmbeddingDecoder as EmbeddingDecoder
from weightspace.text._decoder import Inversion as Inversion
from weightspace.text._decoder import Vocabulary as Vocabulary
from weightspace.text._decoder import decoder_loss as decoder_loss
from weightspace.text._decoder import invert as invert
from weightspace.text._entropy import HuffmanCoder as HuffmanCoder
from weightspace.text._lm import lm_code_lengths as lm_code_lengths
from weightspace.text._metrics import Compressor as Compressor
from weightspace.text._metrics import bits_per_character as bits_per_character
from weightspace.text._metrics import bleu as bleu
from weightspace.text._metrics import chrf as chrf
from weightspace.text._metrics import compressed_bits as compressed_bits
from weightspace.text._metrics import exact_match as exact_match
from weightspace.text._metrics import token_f1 as token_f1
from weightspace.text._metrics import words as words
from weightspace.text._quantize import EmbeddingQuantizer as EmbeddingQuantizer
from weightspace.text._quantize import PCAQuantizer as PCAQuantizer
from weightspace.text._quantize import ProductQuantizer as ProductQuantizer
from weightspace.text._quantize import ScalarQuantizer as ScalarQuantizer
from weightspace.text._refusal import REFUSAL_SUBSTRINGS as REFUSAL_SUBSTRINGS
from weightspace.text._refusal import RefusalClassifier as RefusalClassifier
from weightspace.text._refusal import attack_success as attack_success
from weightspace.text._refusal import keyword_refusal as keyword_refusal

__all__ = [
    "REFUSAL_SUBSTRINGS",
    "Compressor",
    "EmbeddingDecoder",
    "EmbeddingQuantizer",
    "HuffmanCoder",
    "Inversion",
    "PCAQuantizer",
    "ProductQuantizer",
    "RefusalClassifier",
    "ScalarQuantizer",
    "Sentence",
    "Vocabulary",
    "attack_success",
    "bits_per_character",
    "bleu",
    "chrf",
    "compressed_bits",
    "decoder_loss",
    "exact_match",
    "fortunes",
    "invert",
    "keyword_refusal",
    "lm_code_lengths",
    "split_by_document",
    "token_f1",
    "wordnet_glosses",
    "words",
]
