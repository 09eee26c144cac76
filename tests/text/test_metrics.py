"""Reconstruction metrics and lossless references, on hand-worked cases."""

from __future__ import annotations

import bz2
import lzma
import math

import pytest
import torch

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.text import (
    bits_per_character,
    bleu,
    chrf,
    compressed_bits,
    exact_match,
    lm_code_lengths,
    token_f1,
    words,
)

pytest.importorskip("sacrebleu")


def test_bleu_hand_worked() -> None:
    assert bleu(["the cat sat down"], ["the cat sat down"]) == pytest.approx(100.0)
    # A set without a single 4-gram has no 4-gram precision at all: BLEU is 0.
    assert bleu(["the cat sat"], ["the cat sat"]) == 0.0
    # Precisions 5/6, 3/5, 2/4, 1/3 at equal length: (1/12) ** (1/4).
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(
        100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    )
    # All precisions 1, 4 words against 6: brevity penalty exp(1 - 6/4).
    assert bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(
        100 * math.exp(-0.5)
    )
    # No 3- or 4-gram matches: exponential smoothing gives 1/2 and 1/4 of one count.
    got = bleu(["the cat ran off"], ["the cat sat down"])  # 2/4, 1/3, 0/2, 0/1
    assert got == pytest.approx(100 * (2 / 4 * 1 / 3 * (1 / 2) / 2 * (1 / 4) / 1) ** 0.25)


def test_bleu_is_corpus_level() -> None:
    # Counts pool over sentences: not the mean of the sentence scores.
    hyps, refs = ["the cat sat", "a b c d"], ["the cat sat", "w x y z"]
    assert 0 < bleu(hyps, refs) < 100
    assert bleu(hyps, refs) != pytest.approx((100 + bleu(hyps[1:], refs[1:])) / 2)


def test_chrf_bounds_and_near_misses() -> None:
    assert chrf(["a small dog"], ["a small dog"]) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abcdef"]) == pytest.approx(0.0)
    near = chrf(["small dogs"], ["small dog"])
    assert 70 < near < 100  # one extra letter costs little
    assert near > bleu(["small dogs"], ["small dog"])


def test_token_f1_and_exact_match_hand_worked() -> None:
    assert token_f1("the cat sat", "the cat sat down") == pytest.approx(2 * 1 * 0.75 / 1.75)
    # Multiset overlap: "the the" against "the": 1 match, P 1/2, R 1.
    assert token_f1("the the", "the") == pytest.approx(2 / 3)
    assert token_f1("sat the cat", "the cat sat") == 1.0  # order does not count
    assert token_f1("", "") == 1.0 and token_f1("", "a") == 0.0 and token_f1("x", "y") == 0.0
    assert words("Don't STOP-now.") == ["don", "'", "t", "stop", "-", "now", "."]
    assert exact_match("A dog's bone.", "a dog 's bone .")
    assert not exact_match("a dog's bone", "a dog's bone.")


def test_compressed_bits_are_the_stream_sizes() -> None:
    text = "a few words of English text, " * 4
    assert compressed_bits(text, "bz2") == 8 * len(bz2.compress(text.encode(), 9))
    xz = lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME)
    assert compressed_bits(text, "lzma") < 8 * len(xz)  # no .xz container
    assert compressed_bits(text * 10, "gzip") < 8 * len(text * 10) / 5
    assert compressed_bits("é", "gzip") == 8 * 4  # UTF-8: 2 bytes, stored in a fixed block
    with pytest.raises(WeightspaceValueError, match="`method` must be 'gzip', 'bz2' or 'lzma'"):
        compressed_bits("x", "zip")  # type: ignore[arg-type]


def test_bits_per_character() -> None:
    assert bits_per_character(12, ["abc", "def"]) == 2.0
    assert bits_per_character([3, 9], ["abc", "def"]) == 2.0
    with pytest.raises(ShapeMismatchError, match="`bits` holds 1 sizes and `texts` 2 texts"):
        bits_per_character([3], ["abc", "def"])
    with pytest.raises(WeightspaceValueError, match="holds no character"):
        bits_per_character(1, [""])


class _Tokens:
    """A stand-in tokenizer: one token per character, ids 3 + ord(c) - ord('a')."""

    bos_token_id = 1
    eos_token_id = 2

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [3 + ord(c) - ord("a") for c in text]}


def test_lm_code_lengths_of_a_uniform_model_and_padding() -> None:
    vocab = 32

    def uniform(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, vocab)

    bits = lm_code_lengths(uniform, _Tokens(), ["abc", "a", ""], batch_size=2)
    # Each token, and the end token, costs log2(32) = 5 bits.
    assert bits.tolist() == pytest.approx([20.0, 10.0, 5.0])

    # A model that depends on the sequence: batched with padding equals one at a time.
    torch.manual_seed(0)
    table = torch.randn(vocab, vocab)

    def bigram(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return table[ids]

    texts = ["abcde", "b", "cab"]
    together = lm_code_lengths(bigram, _Tokens(), texts, batch_size=3)
    alone = torch.cat([lm_code_lengths(bigram, _Tokens(), [t]) for t in texts])
    assert torch.allclose(together, alone)
    logp = torch.log_softmax(table.double(), dim=1) / math.log(2)
    assert float(alone[1]) == pytest.approx(-float(logp[1, 4] + logp[4, 2]))


def test_metric_errors() -> None:
    with pytest.raises(ShapeMismatchError, match="`hypotheses` holds 1 texts and `references` 2"):
        bleu(["a"], ["a", "b"])
    with pytest.raises(WeightspaceValueError, match="`hypotheses` must be a sequence of strings"):
        chrf("abc", "abc")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`texts` must be a sequence of strings"):
        lm_code_lengths(lambda i, m: i, _Tokens(), "abc")
