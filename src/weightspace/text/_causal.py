"""Causal language models: token blocks, the causal LM loss, LoRA and full fine-tuning.

Every function takes a transformers causal LM (``LlamaForCausalLM`` and the like, a PEFT model
wrapping one, or a :class:`weightspace.models.ChatModel`, whose ``.model`` is used) and its
tokenizer. Batches are :class:`TokenBlocks` rows ``(input_ids, attention_mask, labels)`` with
transformers' label convention: ``labels[t]`` is the token predicted from the positions before
``t``, and ``-100`` marks a position without loss (padding, a prompt).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module

if TYPE_CHECKING:
    from weightspace._task_vector import TaskVector

__all__ = [
    "IGNORE_INDEX",
    "FinetunedLM",
    "Message",
    "Prompt",
    "TokenBlocks",
    "add_lora",
    "causal_lm_loss",
    "char_tokenizer",
    "chunk_texts",
    "finetune_lm",
    "pack_texts",
    "prompt_ids",
    "sft_blocks",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""The label of a position that carries no loss (transformers' convention)."""

Message = Mapping[str, str]
"""One chat message, ``{"role": "user" | "system" | "assistant", "content": text}``."""

Prompt = str | Sequence[Message]
"""A prompt: a user message as a string, or a whole conversation as a list of messages."""

Method = Literal["lora", "full"]


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside ``model`` (a ``ChatModel``'s ``.model``), else ``model``."""
    inner = getattr(model, "model", None)
    if type(model).__name__ == "ChatModel" and isinstance(inner, nn.Module):
        return inner
    return model


def logits_of(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Run ``model`` on token ids and return its logits ``[N, L, vocab]``."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor):
        raise WeightspaceValueError(
            "`model` must return logits (a tensor or an output with `.logits`), got "
            f"{type(out).__name__}"
        )
    return logits


def _token_list(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise WeightspaceValueError(f"`{name}` must be a sequence of strings; wrap one in a list")
    if not texts:
        raise WeightspaceValueError(f"`{name}` is empty; pass at least one text")
    return list(texts)


def _block_size(block_size: int, minimum: int = 2) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < minimum:
        raise WeightspaceValueError(f"`block_size` must be an int >= {minimum}, got {block_size!r}")
    return block_size


def special_ids(
    tokenizer: Any, start_id: int | None = None, end_id: int | None = None
) -> tuple[int, int]:
    """The start (BOS, else EOS) and end (EOS) token ids of ``tokenizer``, or those given."""
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
    return int(start_id), int(end_id)


@dataclass(frozen=True)
class TokenBlocks:
    """Rows of token ids ready for a causal LM: a dataset for :mod:`weightspace.train`.

    Row ``i`` is ``(input_ids[i], attention_mask[i], labels[i])`` (what :func:`causal_lm_loss`
    reads); rows are right-padded with the pad id, mask 0 and label ``-100``.

    Attributes:
        input_ids: ``[N, L]`` token ids.
        attention_mask: ``[N, L]``, 1 on real tokens and 0 on padding.
        labels: ``[N, L]``, the ids where the loss counts and ``-100`` elsewhere (the label at
            position 0 never counts: nothing precedes it).
        documents: ``[N]`` index of the text each row comes from (``-1`` for a packed row
            that may span several texts).

    Example:
        >>> import torch
        >>> from weightspace.text import TokenBlocks
        >>> ids = torch.tensor([[5, 6, 7, 0]])
        >>> mask = torch.tensor([[1, 1, 1, 0]])
        >>> blocks = TokenBlocks(ids, mask, torch.tensor([[-100, 6, 7, -100]]))
        >>> len(blocks), blocks.tokens, blocks.target_tokens
        (1, 3, 2)
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    documents: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self) -> None:
        shape = self.input_ids.shape
        if self.input_ids.ndim != 2:
            raise WeightspaceValueError(
                f"`input_ids` must be [N, L], got shape {tuple(shape)}; stack the rows"
            )
        for name in ("attention_mask", "labels"):
            if getattr(self, name).shape != shape:
                raise WeightspaceValueError(
                    f"`{name}` has shape {tuple(getattr(self, name).shape)} but `input_ids` "
                    f"{tuple(shape)}; pass one value per token"
                )
        if self.documents.numel() == 0:
            object.__setattr__(self, "documents", torch.full((shape[0],), -1, dtype=torch.long))
        elif self.documents.shape != (shape[0],):
            raise WeightspaceValueError(
                f"`documents` must hold one index per row ({shape[0]}), got shape "
                f"{tuple(self.documents.shape)}"
            )

    def __len__(self) -> int:
        """Number of rows."""
        return int(self.input_ids.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Row ``index`` as ``(input_ids, attention_mask, labels)``."""
        return self.input_ids[index], self.attention_mask[index], self.labels[index]

    @property
    def tokens(self) -> int:
        """Number of real (unpadded) tokens."""
        return int(self.attention_mask.sum())

    @property
    def target_tokens(self) -> int:
        """Number of tokens that carry a loss (labels other than ``-100`` after position 0)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def select(self, rows: Sequence[int] | Tensor) -> TokenBlocks:
        """The blocks at ``rows``, in that order."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        return TokenBlocks(
            self.input_ids[idx], self.attention_mask[idx], self.labels[idx], self.documents[idx]
        )


def _pad_rows(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int, documents: Sequence[int]
) -> TokenBlocks:
    width = max(len(ids) for ids, _ in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[r, : len(ids)] = 1
        labels[r, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return TokenBlocks(input_ids, mask, labels, torch.tensor(list(documents), dtype=torch.long))


def pack_texts(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    block_size: int,
    separator_id: int | None = None,
    drop_last: bool = True,
) -> TokenBlocks:
    """Concatenate the texts (each followed by ``separator_id``) and cut blocks of equal length.

    The usual form of a training corpus: no padding, every token is a target, and a block may
    start in the middle of one text and end in another (the separator tells the model where a
    text ends). Texts are tokenised without special tokens.

    Args:
        texts: The corpus, in order (shuffle or split it by document beforehand).
        tokenizer: A transformers tokenizer.
        block_size: Tokens per block.
        separator_id: Token after each text; default the tokenizer's EOS token.
        drop_last: Drop the last, shorter block (else it is right-padded).

    Returns:
        :class:`TokenBlocks` of shape ``[N, block_size]`` with ``documents`` all ``-1``.

    Raises:
        WeightspaceValueError: if ``texts`` is empty or not strings, ``block_size < 2``,
            no separator is known, or the corpus holds fewer than ``block_size`` tokens with
            ``drop_last=True``.

    Example:
        >>> from weightspace.text import pack_texts
        >>> from weightspace.text import char_tokenizer
        >>> tok = char_tokenizer("abc")
        >>> blocks = pack_texts(["abc", "ba", "cab"], tok, block_size=4)
        >>> blocks.input_ids.tolist()  # a=3, b=4, c=5, separator (EOS) = 2
        [[3, 4, 5, 2], [4, 3, 2, 5]]
    """
    texts = _texts(texts)
    block_size = _block_size(block_size)
    sep = tokenizer.eos_token_id if separator_id is None else separator_id
    if sep is None:
        raise WeightspaceValueError("the tokenizer has no EOS token; pass `separator_id`")
    stream: list[int] = []
    for t in texts:
        stream.extend(_token_list(tokenizer, t))
        stream.append(int(sep))
    n_full = len(stream) // block_size
    if n_full == 0 and drop_last:
        raise WeightspaceValueError(
            f"the corpus holds {len(stream)} tokens, fewer than `block_size`={block_size}; "
            "lower block_size or pass drop_last=False"
        )
    rows = [stream[i * block_size : (i + 1) * block_size] for i in range(n_full)]
    if not drop_last and len(stream) % block_size:
        rows.append(stream[n_full * block_size :])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    return _pad_rows([(r, r) for r in rows], int(pad), [-1] * len(rows))


def chunk_texts(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    block_size: int,
    start_id: int | None = None,
    end_id: int | None = None,
    include_end: bool = True,
) -> TokenBlocks:
    """Tokenise each text on its own and cut it into blocks that never cross texts.

    Text ``i`` becomes ``[start] + tokens + [end]``; its tokens after the start token are the
    targets, each predicted exactly once: block ``k`` holds positions ``k*(block_size-1)`` to
    ``k*(block_size-1) + block_size - 1``, so consecutive blocks share one token, the first of
    a block, which is context only (label ``-100``). A token far into a long text therefore
    sees at most ``block_size - 1`` tokens of context. Rows are right-padded; ``documents``
    gives each row's text. This is how :func:`evaluate_lm` scores texts.

    Args:
        texts: The texts.
        tokenizer: A transformers tokenizer.
        block_size: The most tokens per row.
        start_id: The first token of each text; default BOS (else EOS).
        end_id: The token after each text; default EOS.
        include_end: Append (and predict) ``end_id``.

    Returns:
        :class:`TokenBlocks`, one or more rows per text, in text order.

    Raises:
        WeightspaceValueError: on empty or non-string ``texts``, ``block_size < 2`` or a
            tokenizer without BOS/EOS tokens (pass ``start_id``/``end_id``).

    Example:
        >>> from weightspace.text import chunk_texts
        >>> from weightspace.text import char_tokenizer
        >>> blocks = chunk_texts(["abcab"], char_tokenizer("abc"), block_size=4)
        >>> blocks.input_ids.tolist(), blocks.labels.tolist()  # start (BOS) = 1
        ([[1, 3, 4, 5], [5, 3, 4, 2]], [[-100, 3, 4, 5], [-100, 3, 4, 2]])
    """
    texts = _texts(texts)
    block_size = _block_size(block_size)
    start, end = special_ids(tokenizer, start_id, end_id)
    rows: list[tuple[list[int], list[int]]] = []
    docs: list[int] = []
    for d, t in enumerate(texts):
        seq = [start, *_token_list(tokenizer, t)]
        if include_end:
            seq.append(end)
        step = block_size - 1
        for k in range(0, max(len(seq) - 1, 1), step):
            ids = seq[k : k + block_size]
            rows.append((ids, [IGNORE_INDEX, *ids[1:]]))
            docs.append(d)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return _pad_rows(rows, int(pad), docs)


def _messages(prompt: Prompt, system: str | None, name: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt
    ):
        items: list[Any] = list(prompt)
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in items]
    else:
        raise WeightspaceValueError(
            f"each of `{name}` must be a string or a list of messages "
            f"{{'role': ..., 'content': ...}}, got {type(prompt).__name__}"
        )
    if system is not None:
        if any(m["role"] == "system" for m in messages):
            raise WeightspaceValueError(
                f"`system` is given but a prompt of `{name}` already holds a system message; "
                "pass one or the other"
            )
        messages.insert(0, {"role": "system", "content": system})
    return messages


def prompt_ids(
    tokenizer: Any, prompt: Prompt, *, system: str | None = None, chat_template: bool = True
) -> list[int]:
    """The token ids a model reads before its reply to ``prompt``.

    With ``chat_template`` (default), the messages (``system`` first, if given) go through the
    tokenizer's chat template with the generation prompt (``<|im_start|>assistant`` and the
    like) appended. Without it, ``prompt`` must be a string and is tokenised as raw text with
    the tokenizer's own special tokens (a BOS token, for tokenizers that add one).

    Args:
        tokenizer: A transformers tokenizer (with a chat template when ``chat_template``).
        prompt: A user message, or a list of messages.
        system: A system message to put first.
        chat_template: Use the chat template.

    Returns:
        The token ids.

    Raises:
        WeightspaceValueError: if ``prompt`` is neither form, raw text is asked for a
            conversation, or the tokenizer has no chat template.

    Example:
        >>> from weightspace.text import prompt_ids
        >>> from weightspace.text import char_tokenizer
        >>> tok = char_tokenizer("abc")
        >>> tok.decode(prompt_ids(tok, "cab"))
        '<s>user:cab</s><s>assistant:'
    """
    if not chat_template:
        if not isinstance(prompt, str):
            raise WeightspaceValueError(
                "`prompt` must be a string when `chat_template=False` (raw text), got "
                f"{type(prompt).__name__}"
            )
        if system is not None:
            raise WeightspaceValueError(
                "`system` needs the chat template; pass chat_template=True or put the system "
                "text in the prompt"
            )
        return [int(i) for i in tokenizer(prompt)["input_ids"]]
    if getattr(tokenizer, "chat_template", None) is None:
        raise WeightspaceValueError(
            "the tokenizer has no chat template; pass chat_template=False for raw text"
        )
    messages = _messages(prompt, system, "prompts")
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, Mapping):
        out = out["input_ids"]
    return [int(i) for i in out]


def sft_blocks(
    pairs: Sequence[tuple[Prompt, str]],
    tokenizer: Any,
    *,
    system: str | None = None,
    chat_template: bool = True,
    max_length: int = 512,
    end_id: int | None = None,
) -> TokenBlocks:
    """Supervised fine-tuning rows: each prompt and its response, the loss on the response only.

    Row ``i`` is :func:`prompt_ids` of the prompt, then the response's tokens and ``end_id``
    (default EOS: for a chat model, the end-of-turn token, which is what stops generation).
    Labels are ``-100`` on the prompt and the padding, so training teaches the responses
    without teaching the prompts. A row longer than ``max_length`` loses the end of its
    response.

    Args:
        pairs: ``(prompt, response)`` pairs; a prompt is a string or a list of messages.
        tokenizer: A transformers tokenizer.
        system: A system message put before every prompt (chat template only).
        chat_template: Wrap prompts in the chat template (else raw text: prompt then response
            without separator; include any space or newline in the texts).
        max_length: The most tokens per row.
        end_id: The token that ends each response; default EOS.

    Returns:
        :class:`TokenBlocks`, one row per pair, ``documents`` = pair index.

    Raises:
        WeightspaceValueError: on an empty or malformed ``pairs``, a prompt that leaves no room
            for a response within ``max_length``, or no end token.

    Example:
        >>> from weightspace.text import sft_blocks
        >>> from weightspace.text import char_tokenizer
        >>> tok = char_tokenizer("abc")
        >>> rows = sft_blocks([("ab", "cc")], tok, chat_template=False)
        >>> rows.input_ids.tolist(), rows.labels.tolist()  # BOS a b | c c EOS
        ([[1, 3, 4, 5, 5, 2]], [[-100, -100, -100, 5, 5, 2]])
    """
    if isinstance(pairs, (str, Mapping)) or not isinstance(pairs, Sequence) or not pairs:
        raise WeightspaceValueError(
            "`pairs` must be a non-empty sequence of (prompt, response) pairs"
        )
    max_length = _block_size(max_length)
    _, end = special_ids(tokenizer, None, end_id)
    rows: list[tuple[list[int], list[int]]] = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], str)):
            raise WeightspaceValueError(
                f"`pairs[{i}]` must be a (prompt, response) pair with a string response, got "
                f"{pair!r}"
            )
        head = prompt_ids(tokenizer, pair[0], system=system, chat_template=chat_template)
        if len(head) >= max_length:
            raise WeightspaceValueError(
                f"the prompt of `pairs[{i}]` takes {len(head)} tokens, leaving no room for the "
                f"response within `max_length`={max_length}; raise max_length or shorten it"
            )
        tail = [*_token_list(tokenizer, pair[1]), end]
        ids = (head + tail)[:max_length]
        rows.append((ids, ([IGNORE_INDEX] * len(head) + tail)[:max_length]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return _pad_rows(rows, int(pad), list(range(len(rows))))


def _unpack(batch: Any) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(batch, Mapping):
        try:
            return batch["input_ids"], batch["attention_mask"], batch["labels"]
        except KeyError as err:
            raise WeightspaceValueError(
                f"a causal LM batch as a mapping needs 'input_ids', 'attention_mask' and "
                f"'labels', missing {err}"
            ) from None
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    raise WeightspaceValueError(
        "a causal LM batch must be (input_ids, attention_mask, labels) (rows of TokenBlocks) "
        f"or a mapping with those keys, got {type(batch).__name__}"
    )


def _trim(ids: Tensor, mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Drop trailing columns that are padding in every row (right-padded batches only)."""
    width = int(mask.sum(dim=1).max())
    if width < ids.shape[1] and not bool(mask[:, width:].any()):
        return ids[:, :width], mask[:, :width], labels[:, :width]
    return ids, mask, labels


def token_nll(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood (nats) of every target token: ``(nll [N, L-1], used [N, L-1])``."""
    ids, mask, labels = _trim(*_unpack(batch))
    logits = logits_of(hf_model(model), ids, mask)
    # Shift the labels, not the logits: position t is scored against labels[t + 1] and the last
    # position gets no target, so the [N, L, vocab] logits (the largest tensor of a step) are
    # never sliced into a copy, nor is their gradient.
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        reduction="none",
        ignore_index=IGNORE_INDEX,
    ).view_as(target)
    return nll[:, :-1], target[:, :-1] != IGNORE_INDEX


def causal_lm_loss(model: nn.Module, batch: Any) -> Tensor:
    r"""Mean next-token cross-entropy (nats) over the target tokens of a batch.

    :math:`-\frac{1}{T}\sum_{n,t} \log p(\text{labels}_{n,t} \mid \text{ids}_{n,<t})` over the
    :math:`T` positions whose label is not ``-100``: a token mean over the whole batch, as
    transformers computes it, so :math:`\exp` of it is the perplexity of those tokens. The
    library's loss convention (``loss(model, batch)``), for :class:`weightspace.train.Trainer`.

    Args:
        model: A causal LM (``model(input_ids=..., attention_mask=...)`` returns logits or an
            output with ``.logits``).
        batch: ``(input_ids, attention_mask, labels)``, rows of :class:`TokenBlocks`, or a
            mapping with those keys.

    Returns:
        The scalar loss.

    Raises:
        WeightspaceValueError: if the batch has another form or no target token.
    """
    nll, used = token_nll(model, batch)
    count = int(used.sum())
    if count == 0:
        raise WeightspaceValueError(
            "the batch holds no target token (every label is -100); check the labels"
        )
    return nll.sum() / count


def _peft() -> Any:
    return require_module("peft", pip="peft", extra="hf")


def add_lora(
    model: nn.Module,
    *,
    rank: int = 16,
    alpha: float | None = None,
    target_modules: Sequence[str] | str = ("q_proj", "v_proj"),
    dropout: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Wrap a transformers model with fresh LoRA adapters (PEFT), seeded.

    PEFT inserts the adapters into ``model`` itself (copy it first to keep it clean; or call
    ``unload()`` on the result). ``lora_A`` is drawn from a generator seeded with ``seed``
    (without touching the global RNG) and ``lora_B`` is zero, so the wrapped model starts
    equal to ``model``.

    Args:
        model: A transformers model (or a ``ChatModel``: its ``.model`` is wrapped).
        rank: The adapters' rank ``r``.
        alpha: The scale numerator (update ``alpha / rank * B A``); default ``2 * rank``.
        target_modules: Module names to adapt (``("q_proj", "v_proj")``, or ``"all-linear"``
            for every linear layer but the output head).
        dropout: Dropout on the adapters' input.
        seed: Seed of the ``lora_A`` initialisation.

    Returns:
        The ``peft.PeftModel``; only the adapters require gradients.

    Raises:
        WeightspaceValueError: on a bad rank, alpha, dropout or seed.
        MissingSourceError: if ``peft`` is not installed.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise WeightspaceValueError(f"`rank` must be an int >= 1, got {rank!r}")
    if alpha is not None and not alpha > 0:
        raise WeightspaceValueError(f"`alpha` must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise WeightspaceValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise WeightspaceValueError(f"`seed` must be an int, got {seed!r}")
    peft = _peft()
    targets: str | list[str] = (
        target_modules if isinstance(target_modules, str) else list(target_modules)
    )
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=float(2 * rank if alpha is None else alpha),
        target_modules=targets,
        lora_dropout=float(dropout),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` (transformers 5.x)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        torch.manual_seed(seed)
        wrapped: nn.Module = peft.get_peft_model(hf_model(model), config)
    return wrapped


def _count(params: Iterator[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


@dataclass(frozen=True)
class FinetunedLM:
    """A fine-tuned causal LM and what its training did (from :func:`finetune_lm`).

    Attributes:
        model: The trained model: a ``peft.PeftModel`` for LoRA, else the transformers model.
        method: ``"lora"`` or ``"full"``.
        losses: The training loss of every step.
        steps: Optimiser steps.
        tokens: Input tokens read (padding excluded), summed over the steps.
        seconds: Wall time of the training loop.
        trainable_parameters: Number of trained parameters.
    """

    model: nn.Module
    method: str
    losses: tuple[float, ...]
    steps: int
    tokens: int
    seconds: float
    trainable_parameters: int

    @property
    def tokens_per_second(self) -> float:
        """Training throughput."""
        return self.tokens / self.seconds if self.seconds > 0 else math.nan

    def task_vector(
        self, base: nn.Module | None = None, *, dtype: torch.dtype = torch.float32
    ) -> TaskVector:
        """The update as a :class:`weightspace.TaskVector`, keyed like the base model.

        For LoRA, the dense ``alpha / r * B A`` of every adapted weight, read through
        :meth:`weightspace.TaskVector.from_lora` (``base`` is not needed); for full
        fine-tuning, ``model - base`` (pass the untouched base model).

        Args:
            base: The base model (full fine-tuning only).
            dtype: Dtype of the deltas.

        Returns:
            The task vector.

        Raises:
            WeightspaceValueError: if ``base`` is missing for full fine-tuning.
        """
        from weightspace._task_vector import TaskVector

        if self.method == "lora":
            import weightspace._lora  # noqa: F401  (registers TaskVector.from_lora)

            peft = _peft()
            # only the adapters: full embedding copies are not an update (and PEFT's check for
            # a resized vocabulary would look for the base model's config.json)
            state = peft.get_peft_model_state_dict(self.model, save_embedding_layers=False)
            wrapped: Any = self.model
            config = wrapped.peft_config["default"]
            return TaskVector.from_lora(dict(state), config=config.to_dict(), dtype=dtype)
        if base is None:
            raise WeightspaceValueError(
                "`base` is required for a fully fine-tuned model: pass the model it started from"
            )
        return TaskVector.from_models(base=hf_model(base), finetuned=self.model, dtype=dtype)

    def save_adapter(self, folder: str | Path) -> Path:
        """Write a LoRA adapter in PEFT's format (``adapter_config.json``, safetensors).

        Args:
            folder: The folder to write (created if needed).

        Returns:
            The folder.

        Raises:
            WeightspaceValueError: if the model was fully fine-tuned.
        """
        if self.method != "lora":
            raise WeightspaceValueError(
                "`save_adapter` needs a LoRA model; save a fully fine-tuned model's "
                "state_dict() with weightspace.io.save_state_dict"
            )
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), save_embedding_layers=False)  # type: ignore[operator]
        return path


def finetune_lm(
    model: nn.Module,
    data: TokenBlocks,
    *,
    method: Method = "lora",
    rank: int = 16,
    alpha: float | None = None,
    target_modules: Sequence[str] | str = ("q_proj", "v_proj"),
    dropout: float = 0.0,
    lr: float | None = None,
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw",
    weight_decay: float = 0.0,
    batch_size: int = 8,
    epochs: int = 1,
    max_steps: int | None = None,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    copy_model: bool = True,
    progress: bool = False,
) -> FinetunedLM:
    """Fine-tune a causal LM on token blocks with LoRA or on all its weights, seeded.

    Training runs on :class:`weightspace.train.Trainer` with :func:`causal_lm_loss`: batches
    of ``batch_size`` rows in the order of :func:`weightspace.train.batches` with
    ``shuffle=True, seed=seed`` (a fresh permutation each epoch), for ``epochs`` passes or
    exactly ``max_steps`` steps (crossing epochs as needed), whichever ``max_steps`` says when
    given. Two calls with the same arguments give the same weights.

    Args:
        model: A transformers causal LM or a :class:`weightspace.models.ChatModel`.
        data: The training rows (:func:`pack_texts`, :func:`chunk_texts`,
            :func:`sft_blocks`).
        method: ``"lora"`` (PEFT adapters, :func:`add_lora`) or ``"full"``.
        rank: LoRA rank.
        alpha: LoRA scale numerator; default ``2 * rank``.
        target_modules: LoRA target modules (or ``"all-linear"``).
        dropout: LoRA dropout.
        lr: Learning rate; default ``2e-4`` for LoRA and ``5e-5`` for full fine-tuning.
        optimizer: ``"adamw"`` (default), ``"adam"`` or ``"sgd"``.
        weight_decay: The optimiser's weight decay.
        batch_size: Rows per step.
        epochs: Passes over ``data`` (ignored when ``max_steps`` is given).
        max_steps: Exact number of steps.
        max_grad_norm: Clip the gradient norm (``None``: no clipping).
        seed: Seed of the LoRA initialisation and of the order of the rows.
        copy_model: Train a deep copy and leave ``model`` untouched (else it is trained in
            place, adapters inserted into it for LoRA).
        progress: Show a progress bar.

    Returns:
        :class:`FinetunedLM` (the model in eval mode, the per-step losses, the throughput).

    Raises:
        WeightspaceValueError: on a bad argument (the message names it).
    """
    if not isinstance(data, TokenBlocks):
        raise WeightspaceValueError(
            f"`data` must be TokenBlocks (pack_texts, chunk_texts, sft_blocks), got "
            f"{type(data).__name__}"
        )
    if method not in ("lora", "full"):
        raise WeightspaceValueError(f"`method` must be 'lora' or 'full', got {method!r}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise WeightspaceValueError(f"`max_steps` must be an int >= 1 or None, got {max_steps!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise WeightspaceValueError(f"`epochs` must be an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    from weightspace import train

    net = hf_model(model)
    if copy_model:
        net = copy.deepcopy(net)
    if method == "lora":
        net = add_lora(
            net, rank=rank, alpha=alpha, target_modules=target_modules, dropout=dropout, seed=seed
        )
        lr = 2e-4 if lr is None else lr
    else:
        for p in net.parameters():
            p.requires_grad_(True)
        lr = 5e-5 if lr is None else lr
    total = max_steps if max_steps is not None else epochs * math.ceil(len(data) / batch_size)

    def stream() -> Iterator[Any]:
        done, epoch = 0, 0
        while True:
            for batch in train.batches(
                data, batch_size=batch_size, shuffle=True, seed=seed, epoch=epoch
            ):
                yield batch
                done += 1
                if done == total:
                    return
            epoch += 1

    losses: list[float] = []
    tokens = [0]

    def loss(m: nn.Module, batch: Any) -> Tensor:
        value = causal_lm_loss(m, batch)
        losses.append(float(value.detach()))
        tokens[0] += int(_unpack(batch)[1].sum())
        return value

    trainer = train.Trainer(
        net,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        seed=seed,
        loss=loss,
    )
    n_train = _count(p for _, p in trainer.params)
    start = time.perf_counter()
    history = trainer.fit(stream(), epochs=1, progress=progress)
    seconds = time.perf_counter() - start
    net.eval()
    logger.info(
        "%s fine-tuning: %d steps, %d tokens in %.1f s, final loss %.4f",
        method,
        history.steps,
        tokens[0],
        seconds,
        losses[-1],
    )
    return FinetunedLM(
        model=net,
        method=method,
        losses=tuple(losses),
        steps=history.steps,
        tokens=tokens[0],
        seconds=seconds,
        trainable_parameters=n_train,
    )


def char_tokenizer(alphabet: str) -> Any:
    """A character-level transformers tokenizer over ``alphabet`` (for tests and examples).

    Ids: 0 ``<pad>``, 1 ``<s>`` (BOS), 2 ``</s>`` (EOS), then one per character of
    ``alphabet`` in order, plus the characters of the chat template's role names; its chat
    template writes ``<s>role:content</s>`` per message and ``<s>assistant:`` as the
    generation prompt. Characters outside the vocabulary map to ``<pad>``.
    """
    tokenizers = require_module("tokenizers", pip="tokenizers", extra="hf")
    transformers = require_module("transformers", pip="transformers", extra="hf")
    chars = list(dict.fromkeys(alphabet + "userystmaitn:"))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="<pad>")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(r"[\s\S]"), behavior="isolated"
    )
    tok.decoder = tokenizers.decoders.Fuse()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}:{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}"
    )
    return fast
