"""Reconstruction metrics (BLEU, chrF, token F1, exact match) and lossless size references."""

from __future__ import annotations

import bz2
import lzma
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._optional import require_module

__all__ = [
    "Compressor",
    "bits_per_character",
    "bleu",
    "chrf",
    "compressed_bits",
    "exact_match",
    "token_f1",
    "words",
]

Compressor = Literal["gzip", "bz2", "lzma"]
"""A general-purpose lossless compressor of :func:`compressed_bits`."""

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """The lower-cased word and punctuation tokens of ``text`` (what F1 and exact match compare).

    Runs of letters, digits and underscores are words; every other non-space character is a
    token of its own. Spacing is ignored, so ``"dog's"`` and ``"dog 's"`` give the same list.

    Example:
        >>> from weightspace.text import words
        >>> words("A well-known  dog's bone.")
        ['a', 'well', '-', 'known', 'dog', "'", 's', 'bone', '.']
    """
    if not isinstance(text, str):
        raise WeightspaceValueError(f"`text` must be a string, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def token_f1(hypothesis: str, reference: str) -> float:
    r"""F1 of the bags of word tokens (SQuAD-style, without dropping articles or punctuation).

    With :math:`m` the size of the multiset intersection of :func:`words` of both texts,
    precision :math:`m/|h|`, recall :math:`m/|r|` and F1 their harmonic mean. Two empty
    texts score 1, one empty text 0. Word order does not count: a paraphrase that reuses the
    words scores high, a synonym scores nothing.

    Example:
        >>> from weightspace.text import token_f1
        >>> round(token_f1("the cat sat", "the cat sat down"), 4)  # P 3/3, R 3/4
        0.8571
    """
    h, r = words(hypothesis), words(reference)
    if not h and not r:
        return 1.0
    if not h or not r:
        return 0.0
    m = sum((Counter(h) & Counter(r)).values())
    if m == 0:
        return 0.0
    precision, recall = m / len(h), m / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(hypothesis: str, reference: str) -> bool:
    """Whether the two texts have the same :func:`words` (case and spacing ignored).

    Example:
        >>> from weightspace.text import exact_match
        >>> exact_match("A dog's bone.", "a dog 's bone ."), exact_match("a dog", "the dog")
        (True, False)
    """
    return words(hypothesis) == words(reference)


def _pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    for name, seq in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(seq, str) or not all(isinstance(t, str) for t in seq):
            raise WeightspaceValueError(
                f"`{name}` must be a sequence of strings (one per sentence), got "
                f"{type(seq).__name__}"
            )
    if len(hypotheses) != len(references):
        raise ShapeMismatchError(
            f"`hypotheses` holds {len(hypotheses)} texts and `references` {len(references)}; "
            "pass one reference per hypothesis"
        )
    if not hypotheses:
        raise WeightspaceValueError("`hypotheses` is empty; pass at least one sentence")
    return list(hypotheses), list(references)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0 to 100) with sacrebleu's defaults: 13a tokens, exponential smoothing.

    Papineni et al. (2002): geometric mean of the 1- to 4-gram precisions over the whole set
    times a brevity penalty; one reference per hypothesis (in the example the precisions are
    5/6, 3/5, 2/4 and 1/3, the lengths equal: 100 times their product to the power 1/4).
    A zero count of matching n-grams is smoothed (``1 / (2**k * total)`` for the k-th such
    order), so one missing 4-gram does not zero a sentence; but a set of texts that holds no
    4-gram at all (every hypothesis shorter than four tokens) scores 0. Needs ``sacrebleu``
    (``pip install 'weightspace[text]'``).

    Example:
        >>> from weightspace.text import bleu
        >>> round(bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), 2)
        53.73
    """
    hyps, refs = _pairs(hypotheses, references)
    sacrebleu = require_module("sacrebleu", pip="sacrebleu", extra="text")
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0 to 100): character 6-gram F-score with beta 2 (Popović, 2015; sacrebleu).

    Kinder than BLEU to near misses in spelling and inflection ("dogs" for "dog"). Needs
    ``sacrebleu``.

    Example:
        >>> from weightspace.text import chrf
        >>> chrf(["a small dog"], ["a small dog"])
        100.0
    """
    hyps, refs = _pairs(hypotheses, references)
    sacrebleu = require_module("sacrebleu", pip="sacrebleu", extra="text")
    return float(sacrebleu.corpus_chrf(hyps, [refs]).score)


def compressed_bits(text: str, method: Compressor) -> int:
    """Size in bits of ``text`` (UTF-8) compressed losslessly by ``method``, at its best level.

    The streams are kept without container headers where the format allows it, so that short
    texts are not charged for metadata a set of them would share: ``"gzip"`` is the raw
    DEFLATE stream gzip writes (no 18-byte gzip header and trailer), ``"lzma"`` the raw LZMA2
    stream of an ``.xz`` file (no container), ``"bz2"`` the whole bzip2 stream (it has no raw
    form: 4 header bytes and a 10-byte end of stream are included).

    Args:
        text: The text; compress a whole set by joining it (e.g. with newlines).
        method: ``"gzip"``, ``"bz2"`` or ``"lzma"``.

    Returns:
        The number of bits (8 times the compressed bytes).

    Example:
        >>> from weightspace.text import compressed_bits
        >>> compressed_bits("", "gzip"), compressed_bits("a" * 1000, "gzip") < 200
        (16, True)
    """
    if not isinstance(text, str):
        raise WeightspaceValueError(f"`text` must be a string, got {type(text).__name__}")
    data = text.encode("utf-8")
    if method == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        out = c.compress(data) + c.flush()
    elif method == "bz2":
        out = bz2.compress(data, 9)
    elif method == "lzma":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
        out = lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)
    else:
        raise WeightspaceValueError(f"`method` must be 'gzip', 'bz2' or 'lzma', got {method!r}")
    return 8 * len(out)


def bits_per_character(bits: float | Sequence[float], texts: Sequence[str]) -> float:
    """Total ``bits`` divided by the total number of characters of ``texts``.

    Args:
        bits: One total, or one size per text.
        texts: The texts the bits encode.

    Returns:
        Bits per character (Unicode code points).

    Raises:
        WeightspaceValueError: if ``texts`` has no character.

    Example:
        >>> from weightspace.text import bits_per_character
        >>> bits_per_character([40, 24], ["abcd", "efgh"])
        8.0
    """
    if isinstance(texts, str):
        raise WeightspaceValueError("`texts` must be a sequence of strings; wrap one in a list")
    if isinstance(bits, (int, float)):
        total = float(bits)
    else:
        values = list(bits)
        if len(values) != len(texts):
            raise ShapeMismatchError(
                f"`bits` holds {len(values)} sizes and `texts` {len(texts)} texts; pass one "
                "size per text or a single total"
            )
        total = float(sum(values))
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise WeightspaceValueError("`texts` holds no character; bits per character is undefined")
    return total / chars
