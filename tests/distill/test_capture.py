"""Feature capture through forward hooks, chosen with the selection grammar."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from weightspace import WeightspaceValueError, distill


class Pair(nn.Module):
    """Returns a tuple, as recurrent layers and some blocks do."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2, x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.pair = Pair()
        self.head = nn.Linear(2, 1)

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        x, _ = self.pair(x)
        return self.head(x)  # type: ignore[no-any-return]


def test_regex_and_suffix_selection_and_tuple_outputs() -> None:
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(3, 2)
    with distill.FeatureCapture(net, r"blocks\.\d+") as cap:
        net(x)
    assert cap.names == ("blocks.0", "blocks.1")
    torch.testing.assert_close(cap.features["blocks.0"], net.blocks[0](x), rtol=0, atol=0)
    with distill.FeatureCapture(net, ["pair"]) as cap:
        net(x)
    expected = net.blocks[1](net.blocks[0](x)) * 2  # the first element of the tuple
    torch.testing.assert_close(cap.features["pair"], expected, rtol=0, atol=0)
    assert cap.features["pair"].requires_grad  # the student keeps its graph
    with distill.FeatureCapture(net, ["pair"], detach=True) as cap:
        net(x)
    assert not cap.features["pair"].requires_grad


def test_hooks_are_removed_even_on_error() -> None:
    net = Net()
    with pytest.raises(RuntimeError), distill.FeatureCapture(net, ["head"]):
        net(torch.zeros(3, 5))  # wrong width: the forward fails
    assert all(not m._forward_hooks for m in net.modules())


def test_unknown_names_and_non_tensor_outputs_are_errors() -> None:
    net = Net()
    with pytest.raises(WeightspaceValueError, match="nope"):
        distill.FeatureCapture(net, ["nope"])
    with pytest.raises(WeightspaceValueError, match="`model` must be an nn.Module, got int"):
        distill.FeatureCapture(3, ["head"])  # type: ignore[arg-type]

    class Dicty(nn.Module):
        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"x": x}

    outer = nn.Sequential(Dicty())
    with (
        pytest.raises(WeightspaceValueError, match="returned dict; features must be tensors"),
        distill.FeatureCapture(outer, ["0"]),
    ):
        outer(torch.zeros(1))
    assert distill.FeatureCapture(net, None).names == ()


def test_layer_names_resolve_to_one_module() -> None:
    student = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    teacher = Net()
    with pytest.raises(WeightspaceValueError, match="`teacher_layer`='nothing'"):
        distill.Distiller(student, teacher, [distill.Hint("0", "nothing")])
    with pytest.raises(WeightspaceValueError, match="must name one submodule, but it matches 2"):
        distill.Distiller(student, teacher, [distill.Hint("0", r"blocks\.\d")])


def test_hint_connectors_sized_from_the_shapes() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    hint = distill.Hint.for_models(student, teacher, "1", "1", torch.zeros(2, 1, 5, 5))
    assert isinstance(hint.connector, nn.Conv2d)
    assert hint.connector.weight.shape == (8, 4, 1, 1) and hint.connector.bias is None
    same = distill.Hint.for_models(student, student, "0", "0", torch.zeros(1, 1, 5, 5))
    assert isinstance(same.connector, nn.Identity)
    pooled = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2))
    with pytest.raises(WeightspaceValueError, match="differ beyond the channels"):
        distill.Hint.for_models(student, pooled, "1", "1", torch.zeros(1, 1, 4, 4))
    assert isinstance(distill.connector(3, 5, spatial_dims=1), nn.Conv1d)
    with pytest.raises(WeightspaceValueError, match="`spatial_dims` must be 0, 1, 2 or 3, got 4"):
        distill.connector(3, 5, spatial_dims=4)


def test_hint_term_through_a_connector_by_hand() -> None:
    conn = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conn.weight.copy_(2 * torch.eye(2))
    term = distill.Hint("a", "b", conn)
    term.student_layers, term.teacher_layers = ("a",), ("b",)
    s = distill.Outputs(None, {"a": torch.tensor([[1.0, 2.0]])})
    t = distill.Outputs(None, {"b": torch.tensor([[3.0, 3.0]])})
    assert term(s, t, None).item() == pytest.approx(((2 - 3) ** 2 + (4 - 3) ** 2) / 2)
