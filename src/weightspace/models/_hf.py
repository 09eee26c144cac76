"""Helpers for the loaders built on Hugging Face transformers (imported only when called)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

from weightspace._optional import require_module

__all__ = ["quiet_progress", "require_transformers"]


def require_transformers() -> ModuleType:
    """Import transformers, or say how to install it.

    Returns:
        The ``transformers`` module.

    Raises:
        MissingSourceError: if transformers is not installed.
    """
    return require_module("transformers", pip="transformers", extra="hf")


@contextlib.contextmanager
def quiet_progress(progress: bool) -> Iterator[None]:
    """Show or hide transformers' progress bars inside the block, then restore the setting.

    Args:
        progress: Whether transformers may draw its progress bars.

    Yields:
        Nothing.
    """
    hf_logging = require_module("transformers.utils.logging", pip="transformers", extra="hf")
    was_enabled = bool(hf_logging.is_progress_bar_enabled())
    # The GGUF converter draws its bar with a bare `tqdm.auto.tqdm`, which the switch above
    # does not reach; hide it by swapping in a disabled tqdm for the duration of the block.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None and not progress:
        with contextlib.suppress(ImportError):
            gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original_tqdm = getattr(gguf_utils, "tqdm", None)
    if progress:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
        if original_tqdm is not None:
            gguf_utils.tqdm = functools.partial(original_tqdm, disable=True)  # type: ignore[union-attr]
    try:
        yield
    finally:
        if original_tqdm is not None:
            gguf_utils.tqdm = original_tqdm  # type: ignore[union-attr]
        if was_enabled:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
