"""Small networks for the alignment tests: an MLP, a residual CNN with batch norm, transformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import align


class MLP(nn.Module):
    def __init__(self, h1: int = 6, h2: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, h1)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(h1, h2)
        self.out = nn.Linear(h2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.gelu(self.fc2(self.drop(torch.relu(self.fc1(x))))))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResCNN(nn.Module):
    """stem -> residual block -> strided conv -> flatten -> two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.block = Block(4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.block(x)
        x = F.relu(self.down(x))
        return self.head(F.relu(self.fc(torch.flatten(x, 1))))


class Transformer(nn.Module):
    """Input projection + positional embedding, one pre-norm block with nn.MultiheadAttention."""

    def __init__(self, d: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.inp = nn.Linear(5, d)
        self.pos = nn.Parameter(torch.zeros(6, d))
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x) + self.pos
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(self.ln(x).mean(1))


class Attention(nn.Module):
    """Hand-written attention with q/k/v/o linear layers; ``heads > 1`` splits into heads."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        if self.heads == 1:
            scores = self.q(x) @ self.k(x).transpose(-2, -1) / d**0.5
            return self.o(scores.softmax(-1) @ self.v(x))
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).reshape(b, t, d))


class TokenTransformer(nn.Module):
    def __init__(self, heads: int, d: int = 8, hidden: int = 12, vocab: int = 11) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.n1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.n2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.emb(ids)
        x = x + self.attn(self.n1(x))
        return self.head(x + self.mlp(self.n2(x)))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere (also norms and running statistics), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return model.eval()


def example_input(name: str, n: int = 2, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        return torch.randn(n, 4, generator=g)
    if name == "cnn":
        return torch.randn(n, 1, 8, 8, generator=g)
    if name == "transformer":
        return torch.randn(n, 6, 5, generator=g)
    return torch.randint(0, 11, (n, 5), generator=g)


MODELS = {
    "mlp": MLP,
    "cnn": ResCNN,
    "transformer": Transformer,
    "attention1": lambda: TokenTransformer(1),
    "attention2": lambda: TokenTransformer(2),
}


class Zoo:
    """The models above, with one derived spec per architecture (a spec depends only on it)."""

    names = tuple(MODELS)

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def make(self, name: str, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return randomize(MODELS[name](), seed)

    def input(self, name: str, n: int = 2, seed: int = 0) -> Tensor:
        return example_input(name, n, seed)

    def spec(self, name: str) -> align.PermutationSpec:
        if name not in self._specs:
            self._specs[name] = align.permutation_spec(self.make(name), self.input(name))
        spec = self._specs[name]
        assert isinstance(spec, align.PermutationSpec)
        return spec


@pytest.fixture(scope="session")
def zoo() -> Zoo:
    return Zoo()
