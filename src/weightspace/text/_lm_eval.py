"""Evaluation of causal LMs: perplexity, bits per character and per byte, deterministic replies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weightspace._errors import WeightspaceValueError
from weightspace.text._causal import (
    Prompt,
    _texts,
    _token_list,
    chunk_texts,
    hf_model,
    prompt_ids,
    special_ids,
    token_nll,
)

__all__ = ["LMEvaluation", "bits_per_byte", "evaluate_lm", "fertility", "generate", "perplexity"]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class LMEvaluation:
    """How well a causal LM predicts a set of texts (from :func:`evaluate_lm`).

    Token perplexity depends on the tokenizer: a model that cuts a text into more tokens has
    more, easier predictions. Bits per character and per byte count the same total code length
    against the text itself, so they compare models with different tokenizers.

    Attributes:
        text_nats: Code length of each text in nats (natural-log loss summed over its tokens,
            the end token included when it was predicted).
        text_tokens: Predicted tokens of each text.
        text_characters: Characters (Unicode code points) of each text.
        text_bytes: UTF-8 bytes of each text.

    Example:
        >>> from weightspace.text import LMEvaluation
        >>> import math
        >>> ev = LMEvaluation((4 * math.log(2),), (4,), (2,), (2,))
        >>> ev.perplexity, ev.bits_per_token, ev.bits_per_character
        (2.0, 1.0, 2.0)
    """

    text_nats: tuple[float, ...]
    text_tokens: tuple[int, ...]
    text_characters: tuple[int, ...]
    text_bytes: tuple[int, ...]

    @property
    def nats(self) -> float:
        """Total code length in nats."""
        return float(sum(self.text_nats))

    @property
    def tokens(self) -> int:
        """Total predicted tokens."""
        return sum(self.text_tokens)

    @property
    def mean_nll(self) -> float:
        """Mean loss per predicted token (nats): the token-mean cross-entropy."""
        return self.nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        """``exp`` of the mean token loss."""
        return math.exp(self.mean_nll)

    @property
    def bits_per_token(self) -> float:
        """Mean loss per token in bits."""
        return self.mean_nll / _LN2

    @property
    def bits_per_character(self) -> float:
        """Total bits over total characters."""
        return self.nats / _LN2 / max(sum(self.text_characters), 1)

    @property
    def bits_per_byte(self) -> float:
        """Total bits over total UTF-8 bytes."""
        return self.nats / _LN2 / max(sum(self.text_bytes), 1)


def evaluate_lm(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    start_id: int | None = None,
    end_id: int | None = None,
    include_end: bool = True,
) -> LMEvaluation:
    r"""Code length of each text under a causal LM, for perplexity and bits per character/byte.

    Each text is scored on its own, as :func:`chunk_texts` cuts it: the start token (BOS, else
    EOS), its tokens (tokenised without special tokens) and, with ``include_end``, the end
    token (EOS), which tells where a text stops; its code length is :math:`-\sum_t \ln p(x_t
    \mid x_{<t})` over every token after the start. A text longer than ``max_length`` tokens
    is scored in windows of ``max_length`` that overlap by one token, so tokens far into it see
    a truncated context. Runs in eval mode without gradients and restores the mode.

    Args:
        model: A causal LM (transformers, PEFT or :class:`weightspace.models.ChatModel`).
        tokenizer: Its tokenizer.
        texts: The texts.
        batch_size: Rows per forward pass (right-padded; padding changes nothing).
        max_length: The most tokens per forward row.
        start_id: The start token; default BOS (else EOS).
        end_id: The end token; default EOS.
        include_end: Predict the end token too.

    Returns:
        :class:`LMEvaluation`.

    Raises:
        WeightspaceValueError: on empty or non-string ``texts`` or a bad argument.

    Example:
        >>> import math, torch
        >>> from weightspace.text import evaluate_lm
        >>> from weightspace.text import char_tokenizer
        >>> tok = char_tokenizer("ab")
        >>> uniform = lambda input_ids, attention_mask: torch.zeros(*input_ids.shape, 8)
        >>> ev = evaluate_lm(uniform, tok, ["abab"], include_end=False)
        >>> round(ev.bits_per_character, 6), ev.tokens  # log2(8) bits for each of 4 characters
        (3.0, 4)
    """
    texts = _texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    blocks = chunk_texts(
        texts,
        tokenizer,
        block_size=max_length,
        start_id=start_id,
        end_id=end_id,
        include_end=include_end,
    )
    nats = torch.zeros(len(texts), dtype=torch.float64)
    counts = torch.zeros(len(texts), dtype=torch.long)
    lengths = blocks.attention_mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True).tolist()  # similar lengths together
    net = hf_model(model) if isinstance(model, nn.Module) else model
    was_training = net.training if isinstance(net, nn.Module) else False
    if isinstance(net, nn.Module):
        net.eval()
    try:
        with torch.inference_mode():
            for k in range(0, len(order), batch_size):
                rows = blocks.select(order[k : k + batch_size])
                nll, used = token_nll(net, (rows.input_ids, rows.attention_mask, rows.labels))
                docs = rows.documents
                nats.index_add_(0, docs, nll.double().sum(dim=1))
                counts.index_add_(0, docs, used.sum(dim=1))
    finally:
        if isinstance(net, nn.Module):
            net.train(was_training)
    return LMEvaluation(
        text_nats=tuple(float(v) for v in nats),
        text_tokens=tuple(int(v) for v in counts),
        text_characters=tuple(len(t) for t in texts),
        text_bytes=tuple(len(t.encode("utf-8")) for t in texts),
    )


def perplexity(model: nn.Module, tokenizer: Any, texts: Sequence[str], **kwargs: Any) -> float:
    """Token perplexity of ``texts``: ``exp`` of the mean token loss (see :func:`evaluate_lm`).

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        texts: The texts.
        **kwargs: Passed to :func:`evaluate_lm`.

    Returns:
        The perplexity.
    """
    return evaluate_lm(model, tokenizer, texts, **kwargs).perplexity


def bits_per_byte(model: nn.Module, tokenizer: Any, texts: Sequence[str], **kwargs: Any) -> float:
    """Bits per UTF-8 byte of ``texts`` under a causal LM (see :func:`evaluate_lm`).

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        texts: The texts.
        **kwargs: Passed to :func:`evaluate_lm`.

    Returns:
        Bits per byte.
    """
    return evaluate_lm(model, tokenizer, texts, **kwargs).bits_per_byte


def fertility(tokenizer: Any, texts: Sequence[str]) -> float:
    """Tokens per whitespace-separated word of ``texts`` (no special tokens).

    The higher, the worse a tokenizer fits a language: more, shorter pieces per word.

    Args:
        tokenizer: A transformers (or ``tokenizers``-backed) tokenizer.
        texts: The texts.

    Returns:
        Total tokens over total words.

    Raises:
        WeightspaceValueError: if ``texts`` holds no word.

    Example:
        >>> from weightspace.text import fertility
        >>> from weightspace.text import char_tokenizer
        >>> fertility(char_tokenizer("ab "), ["ab ba", "a"])  # 6 characters, 3 words
        2.0
    """
    texts = _texts(texts)
    n_words = sum(len(t.split()) for t in texts)
    if n_words == 0:
        raise WeightspaceValueError("`texts` holds no word; fertility is undefined")
    return sum(len(_token_list(tokenizer, t)) for t in texts) / n_words


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 64,
    system: str | None = None,
    chat_template: bool = True,
    batch_size: int = 8,
    skip_special_tokens: bool = True,
) -> list[str]:
    """Greedy replies to a batch of prompts (deterministic), through the chat template.

    Each prompt becomes :func:`prompt_ids` (the chat template with the generation prompt, or
    raw text); prompts are left-padded into batches and decoded greedily until the end token
    (EOS, or the end-of-turn token of the model's generation config) or ``max_new_tokens``.

    Args:
        model: A transformers causal LM, a PEFT model or a :class:`weightspace.models.ChatModel`.
        tokenizer: Its tokenizer.
        prompts: A list of prompts, each a user message (string) or a list of messages.
        max_new_tokens: The most tokens to generate per reply.
        system: A system message put before every prompt (chat template only).
        chat_template: Use the chat template (else raw-text continuation).
        batch_size: Prompts per ``generate`` call.
        skip_special_tokens: Leave special tokens out of the decoded replies.

    Returns:
        One reply per prompt, stripped of surrounding whitespace.

    Raises:
        WeightspaceValueError: if ``prompts`` is a single string or a prompt is malformed, or
            on a bad ``max_new_tokens`` / ``batch_size``.
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise WeightspaceValueError(
            "`prompts` must be a list of prompts (strings or message lists); wrap one in a list"
        )
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {value!r}")
    seqs = [prompt_ids(tokenizer, p, system=system, chat_template=chat_template) for p in prompts]
    _, eos = special_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    net: Any = hf_model(model)
    was_training = net.training
    net.eval()
    replies: list[str] = []
    try:
        with torch.inference_mode():
            for k in range(0, len(seqs), batch_size):
                group = seqs[k : k + batch_size]
                width = max(len(s) for s in group)
                ids = torch.full((len(group), width), int(pad), dtype=torch.long)
                mask = torch.zeros(len(group), width, dtype=torch.long)
                for r, s in enumerate(group):
                    ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                    mask[r, width - len(s) :] = 1
                out = net.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=int(pad),
                )
                for row in out[:, width:]:
                    text = tokenizer.decode(row, skip_special_tokens=skip_special_tokens)
                    replies.append(str(text).strip())
    finally:
        net.train(was_training)
    return replies
