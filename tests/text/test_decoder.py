"""The embedding decoder: vocabulary, training through weightspace.train, generation, correction."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from weightspace import ShapeMismatchError, WeightspaceValueError, train
from weightspace.text import EmbeddingDecoder, Vocabulary, decoder_loss, invert


class WordTokenizer:
    """A stand-in tokenizer: one id per known word (id = 100 + index), 1 for unknown."""

    unk_token_id = 1
    WORDS: ClassVar[list[str]] = [
        "a",
        "dog",
        "cat",
        "sat",
        "ran",
        "the",
        "mat",
        "big",
        "red",
        "on",
        "fast",
        "rare",
    ]

    def __call__(
        self, texts: list[str], add_special_tokens: bool = False
    ) -> dict[str, list[list[int]]]:
        ids = [
            [100 + self.WORDS.index(w) if w in self.WORDS else 1 for w in t.split()] for t in texts
        ]
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        return " ".join("[UNK]" if i == 1 else self.WORDS[i - 100] for i in ids)


SENTENCES = ["a dog sat on the mat", "the cat ran fast", "a big red dog", "the mat sat"]


def test_vocabulary_counts_encodes_and_decodes() -> None:
    tok = WordTokenizer()
    vocab = Vocabulary.build(tok, [*SENTENCES, "rare"], size=10, min_count=1)
    # Most frequent first (the: 3; a, dog, sat, mat: 2), ties to the smaller tokenizer id;
    # of the seven words seen once, the five of smallest id fill the ten places.
    assert vocab.token_ids == [105, 100, 101, 103, 106, 102, 104, 107, 108, 109]
    assert len(vocab) == 14 and vocab.coverage(["a zebra"]) == 0.5
    ids = vocab.encode(["a dog", "zebra sat on the mat"], max_length=4)
    assert ids.tolist() == [[5, 6, 2, 0], [3, 7, 13, 2]]  # cut to 3 tokens + end; 3 = unknown
    assert vocab.decode(ids) == ["a dog", "[UNK] sat on"]
    assert vocab.decode(torch.tensor([[1, 4, 2, 5]])) == ["the"]  # start skipped, stop at end
    with pytest.raises(WeightspaceValueError, match="`max_length` must be an int >= 2"):
        vocab.encode(["a"], max_length=1)
    with pytest.raises(WeightspaceValueError, match="`texts` must be a sequence of strings"):
        vocab.encode("a dog", max_length=4)  # type: ignore[arg-type]


def _overfit() -> tuple[EmbeddingDecoder, Vocabulary, torch.Tensor]:
    tok = WordTokenizer()
    vocab = Vocabulary.build(tok, SENTENCES)
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    targets = vocab.encode(SENTENCES, max_length=10)
    torch.manual_seed(0)
    dec = EmbeddingDecoder(len(vocab), 8, prefix=2, width=32, layers=1, heads=2, max_length=10)
    history = train.fit_(
        dec, (emb, targets), epochs=120, batch_size=4, lr=3e-3, loss=decoder_loss, seed=0
    )
    assert history.losses[-1] < 0.1 < 2.0 < history.losses[0]
    return dec, vocab, emb


def test_decoder_learns_to_invert_and_generation_stops() -> None:
    dec, vocab, emb = _overfit()
    ids = dec.generate(emb)
    assert vocab.decode(ids) == SENTENCES
    assert all(int((row == Vocabulary.EOS).sum()) == 1 for row in ids)  # one end, then padding
    g = torch.Generator().manual_seed(1)
    sampled = dec.generate(emb, temperature=1.0, generator=g)
    assert sampled.shape[0] == 4 and not bool((sampled == Vocabulary.UNK).any())
    assert dec.generate(emb, max_length=2).shape == (4, 2)

    # Correction with a stand-in encoder: the cosine of each step never drops.
    table = {s: e for s, e in zip(SENTENCES, emb, strict=True)}

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.stack([table.get(t, torch.ones(8) / 8**0.5) for t in texts])

    result = invert(dec, vocab, embed, emb, steps=2, samples=2, seed=0)
    assert result.final == SENTENCES and len(result.texts) == 3
    assert torch.allclose(result.cosines, torch.ones(3, 4), atol=1e-5)
    assert result.candidates == 4 + 2 * 3 * 4
    assert result.embeddings.shape == (3, 4, 8)
    assert torch.allclose((result.embeddings[-1] * emb).sum(1), result.cosines[-1])
    # A target its greedy text does not match exactly can only get closer.
    noisy = F.normalize(emb + 0.3 * torch.randn(4, 8, generator=g), dim=1)
    out = invert(dec, vocab, embed, noisy, steps=3, samples=3, seed=0)
    assert bool((out.cosines[1:] >= out.cosines[:-1]).all())


def test_decoder_errors() -> None:
    dec = EmbeddingDecoder(10, 4, width=8, layers=1, heads=2, max_length=5)
    with pytest.raises(ShapeMismatchError, match=r"`embeddings` must have shape \[2, 4\]"):
        dec(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(WeightspaceValueError, match="`inputs` has 6 tokens, more than"):
        dec(torch.zeros(2, 4), torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(WeightspaceValueError, match="`heads`=3 must divide `width`=8"):
        EmbeddingDecoder(10, 4, width=8, heads=3)
    with pytest.raises(WeightspaceValueError, match="`temperature` must be >= 0"):
        dec.generate(torch.zeros(1, 4), temperature=-1.0)
