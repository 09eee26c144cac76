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
* Causal LMs (any transformers causal LM, PEFT model or
  :class:`weightspace.models.ChatModel`): a corpus as :class:`TokenBlocks` (:func:`pack_texts`
  for training, :func:`chunk_texts` per text, :func:`sft_blocks` for prompt/response pairs
  with the loss on the responses only), :func:`causal_lm_loss`, LoRA (:func:`add_lora`, PEFT)
  or full fine-tuning on :class:`weightspace.train.Trainer` with :func:`finetune_lm` (its
  adapter is a :class:`weightspace.TaskVector`), :func:`evaluate_lm` (perplexity, bits per
  character and per byte: :class:`LMEvaluation`), :func:`fertility` and deterministic batched
  chat replies with :func:`generate`.
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

from weightspace.text._causal import IGNORE_INDEX as IGNORE_INDEX
from weightspace.text._causal import FinetunedLM as FinetunedLM
from weightspace.text._causal import Message as Message
from weightspace.text._causal import Prompt as Prompt
from weightspace.text._causal import TokenBlocks as TokenBlocks
from weightspace.text._causal import add_lora as add_lora
from weightspace.text._causal import causal_lm_loss as causal_lm_loss
from weightspace.text._causal import char_tokenizer as char_tokenizer
from weightspace.text._causal import chunk_texts as chunk_texts
from weightspace.text._causal import finetune_lm as finetune_lm
from weightspace.text._causal import pack_texts as pack_texts
from weightspace.text._causal import prompt_ids as prompt_ids
from weightspace.text._causal import sft_blocks as sft_blocks
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
from weightspace.text._lm_eval import LMEvaluation as LMEvaluation
from weightspace.text._lm_eval import bits_per_byte as bits_per_byte
from weightspace.text._lm_eval import evaluate_lm as evaluate_lm
from weightspace.text._lm_eval import fertility as fertility
from weightspace.text._lm_eval import generate as generate
from weightspace.text._lm_eval import perplexity as perplexity
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
    "IGNORE_INDEX",
    "REFUSAL_SUBSTRINGS",
    "Compressor",
    "EmbeddingDecoder",
    "EmbeddingQuantizer",
    "FinetunedLM",
    "HuffmanCoder",
    "Inversion",
    "LMEvaluation",
    "Message",
    "PCAQuantizer",
    "ProductQuantizer",
    "Prompt",
    "RefusalClassifier",
    "ScalarQuantizer",
    "Sentence",
    "TokenBlocks",
    "Vocabulary",
    "add_lora",
    "attack_success",
    "bits_per_byte",
    "bits_per_character",
    "bleu",
    "causal_lm_loss",
    "char_tokenizer",
    "chrf",
    "chunk_texts",
    "compressed_bits",
    "decoder_loss",
    "evaluate_lm",
    "exact_match",
    "fertility",
    "finetune_lm",
    "fortunes",
    "generate",
    "invert",
    "keyword_refusal",
    "lm_code_lengths",
    "pack_texts",
    "perplexity",
    "prompt_ids",
    "sft_blocks",
    "split_by_document",
    "token_f1",
    "wordnet_glosses",
    "words",
]
