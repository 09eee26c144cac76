"""Embedding inversion: a small causal decoder conditioned on an embedding, and correction."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["EmbeddingDecoder", "Inversion", "Vocabulary", "decoder_loss", "invert"]


def _texts(texts: object, argument: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise WeightspaceValueError(
            f"`{argument}` must be a sequence of strings; wrap one text in a list"
        )
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise WeightspaceValueError(
            f"`{argument}` must hold only strings, got {type(bad[0]).__name__}"
        )
    return list(texts)


class Vocabulary:
    """The most frequent tokens of a tokenizer on a corpus, with compact ids for a decoder.

    Ids 0 to 3 are the padding, start, end and unknown tokens; ids from 4 on are the kept
    tokens of ``tokenizer`` (most frequent first). Texts are tokenised without special
    tokens; a token outside the vocabulary becomes the unknown id, shown as the
    tokenizer's unknown token when decoded. Decoding goes back through ``tokenizer.decode``,
    so a WordPiece tokenizer's ``##`` pieces are joined again.

    Args:
        tokenizer: A transformers tokenizer.
        token_ids: The tokenizer ids to keep, in the order of their compact ids.

    Attributes:
        tokenizer: The tokenizer.
        token_ids: The kept tokenizer ids.
    """

    PAD = 0
    BOS = 1
    EOS = 2
    UNK = 3
    SPECIAL = 4

    def __init__(self, tokenizer: Any, token_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.token_ids = [int(t) for t in token_ids]
        if len(set(self.token_ids)) != len(self.token_ids):
            raise WeightspaceValueError("`token_ids` holds a repeated id; pass each id once")
        self._to_compact = {t: i + self.SPECIAL for i, t in enumerate(self.token_ids)}

    @classmethod
    def build(
        cls, tokenizer: Any, texts: Sequence[str], *, size: int = 8000, min_count: int = 1
    ) -> Vocabulary:
        """Keep the ``size`` most frequent tokens of ``texts`` seen at least ``min_count`` times.

        Ties in frequency go to the smaller tokenizer id, so the result is deterministic.

        Args:
            tokenizer: A transformers tokenizer.
            texts: The training texts.
            size: Most tokens kept (besides the four special ids).
            min_count: Fewest occurrences of a kept token.

        Returns:
            The vocabulary.
        """
        texts = _texts(texts)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise WeightspaceValueError(f"`size` must be an int >= 1, got {size!r}")
        counts: Counter[int] = Counter()
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        return cls(tokenizer, kept[:size])

    def __len__(self) -> int:
        """Number of ids, the four special ones included."""
        return len(self.token_ids) + self.SPECIAL

    def encode(self, texts: Sequence[str], *, max_length: int) -> Tensor:
        """Compact ids ``[N, L]``: each text's tokens, then the end id, padded with 0.

        Texts longer than ``max_length - 1`` tokens are cut, and keep their end id.
        ``L`` is the longest row (at most ``max_length``).
        """
        texts = _texts(texts)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise WeightspaceValueError(f"`max_length` must be an int >= 2, got {max_length!r}")
        rows = []
        for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            row = [self._to_compact.get(t, self.UNK) for t in ids[: max_length - 1]]
            rows.append([*row, self.EOS])
        width = max((len(r) for r in rows), default=1)
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def decode(self, ids: Tensor) -> list[str]:
        """Texts of rows of compact ids, each read up to its first end (or padding) id."""
        if not isinstance(ids, Tensor) or ids.ndim != 2:
            raise WeightspaceValueError("`ids` must be a tensor [N, L] of compact ids")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        out = []
        for row in ids.tolist():
            tokens = []
            for i in row:
                if i in (self.EOS, self.PAD):
                    break
                if i == self.BOS:
                    continue
                if i == self.UNK:
                    if unk is not None:
                        tokens.append(int(unk))
                    continue
                if not 0 <= i < len(self):
                    raise WeightspaceValueError(f"`ids` holds {i}, outside [0, {len(self)})")
                tokens.append(self.token_ids[i - self.SPECIAL])
            out.append(str(self.tokenizer.decode(tokens)).strip())
        return out

    def coverage(self, texts: Sequence[str]) -> float:
        """Fraction of the tokens of ``texts`` that are in the vocabulary."""
        total = known = 0
        for ids in self.tokenizer(_texts(texts), add_special_tokens=False)["input_ids"]:
            total += len(ids)
            known += sum(t in self._to_compact for t in ids)
        return known / total if total else 1.0


class EmbeddingDecoder(nn.Module):
    r"""A causal transformer that writes a sentence from its embedding.

    The embedding (any fixed-size vector, such as MiniLM's 384 dimensions) is mapped by one
    linear layer to ``prefix`` soft tokens that precede the start token; the transformer
    (pre-norm blocks, causal attention, learnt positions, output layer tied to the token
    embedding) then predicts the sentence token by token. This is the hypothesis model of
    vec2text (Morris et al., EMNLP 2023) at a small scale, trained from scratch.

    Args:
        vocab_size: Number of token ids (``len(vocabulary)``).
        embedding_dim: Size of the conditioning embedding.
        prefix: Number of soft tokens the embedding becomes.
        width: Model width.
        layers: Transformer blocks.
        heads: Attention heads.
        max_length: Longest token sequence (start token included).
        dropout: Dropout in the blocks.

    Example:
        >>> import torch
        >>> from weightspace.text import EmbeddingDecoder
        >>> _ = torch.manual_seed(0)
        >>> dec = EmbeddingDecoder(vocab_size=20, embedding_dim=8, width=16, layers=1, heads=2)
        >>> dec(torch.randn(3, 8), torch.ones(3, 5, dtype=torch.long)).shape
        torch.Size([3, 5, 20])
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        *,
        prefix: int = 4,
        width: int = 256,
        layers: int = 3,
        heads: int = 4,
        max_length: int = 40,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, v in (
            ("vocab_size", vocab_size),
            ("embedding_dim", embedding_dim),
            ("prefix", prefix),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("max_length", max_length),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {v!r}")
        if width % heads:
            raise WeightspaceValueError(f"`heads`={heads} must divide `width`={width}")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.prefix = prefix
        self.width = width
        self.max_length = max_length
        self.condition = nn.Linear(embedding_dim, prefix * width)
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(prefix + max_length, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.tokens.weight
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, embeddings: Tensor, inputs: Tensor) -> Tensor:
        """Next-token logits after each input token.

        Args:
            embeddings: The conditioning vectors.
            inputs: Token ids, starting with the start id.

        Returns:
            Logits; position ``t`` predicts ``inputs``' token ``t + 1`` (or the next one).

        Shapes:
            - embeddings: ``[N, embedding_dim]``.
            - inputs: ``[N, T]`` with ``T <= max_length``.
            - output: ``[N, T, vocab_size]``.
        """
        n, t = inputs.shape
        if embeddings.shape != (n, self.embedding_dim):
            raise ShapeMismatchError(
                f"`embeddings` must have shape [{n}, {self.embedding_dim}], got "
                f"{list(embeddings.shape)}"
            )
        if t > self.max_length:
            raise WeightspaceValueError(
                f"`inputs` has {t} tokens, more than `max_length`={self.max_length}"
            )
        soft = self.condition(embeddings).view(n, self.prefix, self.width)
        x = torch.cat([soft, self.tokens(inputs)], dim=1)
        x = x + self.positions.weight[: self.prefix + t]
        size = self.prefix + t
        mask = torch.triu(torch.full((size, size), float("-inf"), device=x.device), diagonal=1)
        h = self.blocks(x, mask=mask, is_causal=True)
        logits: Tensor = self.head(self.norm(h[:, self.prefix :]))
        return logits

    @torch.no_grad()
    def generate(
        self,
        embeddings: Tensor,
        *,
        max_length: int | None = None,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        banned: Sequence[int] = (Vocabulary.UNK, Vocabulary.PAD, Vocabulary.BOS),
        min_tokens: int = 1,
    ) -> Tensor:
        """Write one token sequence per embedding: greedy, or sampled at ``temperature``.

        Args:
            embeddings: ``[N, embedding_dim]``.
            max_length: Most tokens written (default: the model's ``max_length - 1``).
            temperature: 0 for greedy decoding; otherwise the softmax temperature of sampling.
            generator: Random generator of the samples.
            banned: Ids never written (unknown, padding and start by default).
            min_tokens: The end id is not written before this many tokens (a sentence is
                never empty).

        Returns:
            ``[N, L]`` compact ids, each row ending at its end id (padding after it);
            decode them with :meth:`Vocabulary.decode`.
        """
        if temperature < 0 or not math.isfinite(temperature):
            raise WeightspaceValueError(f"`temperature` must be >= 0, got {temperature!r}")
        steps = self.max_length - 1 if max_length is None else int(max_length)
        steps = min(steps, self.max_length - 1)
        was = self.training
        self.eval()
        n = embeddings.shape[0]
        device = embeddings.device
        seq = torch.full((n, 1), Vocabulary.BOS, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        ban = torch.tensor(list(banned), dtype=torch.long, device=device)
        try:
            for step in range(steps):
                logits = self(embeddings, seq)[:, -1].float()
                logits[:, ban] = float("-inf")
                if step < min_tokens:
                    logits[:, Vocabulary.EOS] = float("-inf")
                if temperature == 0:
                    nxt = logits.argmax(dim=1)
                else:
                    probs = F.softmax(logits / temperature, dim=1)
                    nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
                nxt = torch.where(done, torch.full_like(nxt, Vocabulary.PAD), nxt)
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                done |= nxt == Vocabulary.EOS
                if bool(done.all()):
                    break
        finally:
            self.train(was)
        return seq[:, 1:]


def decoder_loss(model: nn.Module, batch: Any) -> Tensor:
    """Token cross-entropy of an :class:`EmbeddingDecoder` on ``(embeddings, targets)``.

    ``targets`` are :meth:`Vocabulary.encode` rows (tokens, end id, padding); the inputs are
    the targets shifted right behind the start id, and padding is not scored. The loss
    convention of :mod:`weightspace.train` (``loss(model, batch)``), so the decoder trains
    with :func:`weightspace.train.fit_` or :class:`weightspace.train.Trainer`.

    Example:
        >>> import torch
        >>> from weightspace.text import EmbeddingDecoder, decoder_loss
        >>> _ = torch.manual_seed(0)
        >>> dec = EmbeddingDecoder(vocab_size=10, embedding_dim=4, width=8, layers=1, heads=2)
        >>> targets = torch.tensor([[5, 6, 2], [7, 2, 0]])
        >>> loss = decoder_loss(dec, (torch.randn(2, 4), targets))
        >>> round(float(loss.detach()), 1)  # about log(10) for 10 ids
        2.3
    """
    embeddings, targets = batch
    start = torch.full_like(targets[:, :1], Vocabulary.BOS)
    inputs = torch.cat([start, targets[:, :-1]], dim=1)
    logits = model(embeddings, inputs)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=Vocabulary.PAD
    )


@dataclass(frozen=True)
class Inversion:
    """What :func:`invert` wrote at each correction step.

    Attributes:
        texts: ``texts[s][i]``: the best text for embedding ``i`` after step ``s`` (step 0 is
            the greedy hypothesis).
        cosines: ``[steps + 1, N]``: the cosine between each best text's re-embedding and the
            target it was chosen for.
        embeddings: ``[steps + 1, N, dim]``: the unit-length re-embeddings of those texts.
        candidates: Texts re-embedded in all (the cost of the correction).
    """

    texts: list[list[str]]
    cosines: Tensor
    embeddings: Tensor
    candidates: int

    @property
    def final(self) -> list[str]:
        """The texts after the last step."""
        return self.texts[-1]


def invert(
    decoder: EmbeddingDecoder,
    vocabulary: Vocabulary,
    embed: Callable[[list[str]], Tensor],
    targets: Tensor,
    *,
    steps: int = 0,
    samples: int = 4,
    temperature: float = 0.7,
    step_size: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> Inversion:
    r"""Texts whose embeddings match ``targets``: a hypothesis, then correction by reranking.

    Step 0 decodes each target greedily. Each further step is a sample-and-rerank stand-in
    for vec2text's corrector: it writes ``samples`` candidates sampled at ``temperature``
    from the target, plus one greedy candidate from the pushed condition
    :math:`\mathrm{normalise}(t + \eta (t - e))`, where :math:`e` is the embedding of the
    best text so far (so the decoder is asked for what the current text lacks), embeds them
    all with ``embed`` and keeps, per target, the text of highest cosine with :math:`t`
    seen so far. Cosines can only rise from step to step. Only what a receiver has is
    used: the (possibly quantised) target, the decoder and the encoder.

    Args:
        decoder: The trained decoder.
        vocabulary: Its vocabulary.
        embed: ``embed(texts) -> [N, dim]`` embeddings (e.g. ``SentenceEncoder.encode``).
        targets: The embeddings to invert, ``[N, dim]``.
        steps: Correction steps after the hypothesis.
        samples: Sampled candidates per target and step.
        temperature: Sampling temperature.
        step_size: :math:`\eta` of the pushed condition.
        seed: Seed of the samples.
        batch_size: Targets decoded at once.

    Returns:
        The texts and cosines after each step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise WeightspaceValueError(f"`steps` must be an int >= 0, got {steps!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise WeightspaceValueError(f"`samples` must be an int >= 0, got {samples!r}")
    if not isinstance(targets, Tensor) or targets.ndim != 2:
        raise WeightspaceValueError("`targets` must be a tensor [N, dim] of embeddings")
    t = F.normalize(targets.float(), dim=1)
    g = torch.Generator().manual_seed(int(seed))

    def write(cond: Tensor, temp: float) -> list[str]:
        out: list[str] = []
        for i in range(0, len(cond), batch_size):
            ids = decoder.generate(cond[i : i + batch_size], temperature=temp, generator=g)
            out += vocabulary.decode(ids)
        return out

    def cos(texts: list[str]) -> tuple[Tensor, Tensor]:
        e = F.normalize(embed(texts).float(), dim=1)
        return (e * t).sum(dim=1), e

    best = write(t, 0.0)
    best_cos, best_emb = cos(best)
    texts, cosines, count = [list(best)], [best_cos.clone()], len(best)
    embeddings = [best_emb.clone()]
    for _ in range(steps):
        pushed = F.normalize(t + step_size * (t - best_emb), dim=1)
        pools = [write(pushed, 0.0)] + [write(t, temperature) for _ in range(samples)]
        for cand in pools:
            c, e = cos(cand)
            count += len(cand)
            better = c > best_cos
            best = [x if b else y for x, y, b in zip(cand, best, better.tolist(), strict=True)]
            best_cos = torch.where(better, c, best_cos)
            best_emb = torch.where(better[:, None], e, best_emb)
        texts.append(list(best))
        cosines.append(best_cos.clone())
        embeddings.append(best_emb.clone())
    return Inversion(
        texts=texts,
        cosines=torch.stack(cosines),
        embeddings=torch.stack(embeddings),
        candidates=count,
    )
