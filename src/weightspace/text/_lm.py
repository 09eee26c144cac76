"""Causal language models as lossless compressors: code lengths in bits per text."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace._errors import WeightspaceValueError

__all__ = ["lm_code_lengths"]


def lm_code_lengths(
    model: Callable[..., Tensor],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    start_id: int | None = None,
    end_id: int | None = None,
    batch_size: int = 16,
) -> Tensor:
    r"""Bits an arithmetic coder driven by a causal LM needs for each text (its code length).

    Each text is tokenised without special tokens, preceded by ``start_id`` and followed by
    ``end_id``; its code length is :math:`-\sum_t \log_2 p(x_t \mid x_{<t})` over the text's
    tokens and the end token (which tells the decoder where the text stops, so the sizes of
    a set of texts add up to a decodable stream). An arithmetic coder reaches this within two
    bits per text. Dividing by the number of characters gives bits per character
    (:func:`bits_per_character`).

    Args:
        model: ``model(input_ids, attention_mask) -> logits`` of shape ``[N, L, vocab]``, such
            as :class:`weightspace.models.ChatModel`.
        tokenizer: A transformers tokenizer of the model.
        texts: The texts.
        start_id: The context token; default the tokenizer's BOS (else its EOS) token.
        end_id: The end token; default the tokenizer's EOS token.
        batch_size: Texts per forward pass (right-padded; padding does not change the result).

    Returns:
        float64 ``[len(texts)]``: bits per text.

    Raises:
        WeightspaceValueError: if ``texts`` is not a sequence of strings, no start or end
            token is known, or ``batch_size < 1``.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise WeightspaceValueError("`texts` must be a sequence of strings; wrap one in a list")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    if start_id is None:
        start_id = tokenizer.bos_token_id
        if start_id is None:
            start_id = tokenizer.eos_token_id
    if end_id is None:
        end_id = tokenizer.eos_token_id
    if start_id is None or end_id is None:
        raise WeightspaceValueError(
            "the tokenizer has no BOS/EOS token; pass `start_id` and `end_id`"
        )
    out = torch.zeros(len(texts), dtype=torch.float64)
    seqs = [
        [int(start_id), *tokenizer(t, add_special_tokens=False)["input_ids"], int(end_id)]
        for t in texts
    ]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths together
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = 1
            logits = model(ids, mask).double()
            logp = F.log_softmax(logits[:, :-1], dim=-1)
            picked = logp.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            out[idx] = -picked.sum(dim=1) / math.log(2)
    return out
