"""The fused, chunked path of run_merge against the generic lazy path, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.io import open_state_dict, save_state_dict
from weightspace.merge import MergeConfig, ModelSpec, _core, _engine, run_merge

SHAPES = {
    "embed.weight": (37, 11),
    "layers.0.weight": (16, 16),
    "layers.0.bias": (16,),
    "norm.weight": (11,),
    "scalar": (),
}


def _checkpoints(
    tmp_path: Path,
    n: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    model_dtype: torch.dtype | None = None,
    quantum: float | None = None,
) -> tuple[Path, list[Path]]:
    """A random base and ``n`` fine-tunes; ``quantum`` rounds the deltas (many ties)."""
    gen = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=gen).to(dtype) for k, s in SHAPES.items()}
    base["steps"] = torch.tensor(3)
    base_path = save_state_dict(base, tmp_path / "base.safetensors")
    models = []
    for i in range(n):
        sd: dict[str, torch.Tensor] = {}
        for k, v in base.items():
            if not v.is_floating_point():
                sd[k] = v + i
                continue
            delta = 0.05 * torch.randn(v.shape, generator=gen)
            if quantum is not None:
                delta = torch.round(delta / quantum) * quantum
            sd[k] = (v.double() + delta.double()).to(model_dtype or dtype)
        if i == 1:
            models.append(save_state_dict(sd, tmp_path / f"ft{i}", max_shard_size=300))
        else:
            models.append(save_state_dict(sd, tmp_path / f"ft{i}.safetensors"))
    return base_path, models


def _run(config: MergeConfig, out: Path, fast: bool, chunk: int = 13) -> dict[str, torch.Tensor]:
    saved = _engine.ENABLED, _engine.CHUNK_ELEMENTS
    _engine.ENABLED, _engine.CHUNK_ELEMENTS = fast, chunk
    try:
        run_merge(config, out, overwrite=True, progress=False)
    finally:
        _engine.ENABLED, _engine.CHUNK_ELEMENTS = saved
    sd = open_state_dict(out)
    return {k: sd[k] for k in sd}


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.float64:
        return t.view(torch.int64)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16)
    return t


def _assert_same(fast: dict[str, torch.Tensor], generic: dict[str, torch.Tensor]) -> None:
    assert list(fast) == list(generic)
    for name in generic:
        assert fast[name].dtype == generic[name].dtype, name
        assert torch.equal(_bits(fast[name]), _bits(generic[name])), name


def _compare(tmp_path: Path, config: MergeConfig, chunk: int = 13) -> None:
    fast = _run(config, tmp_path / "fast.safetensors", True, chunk)
    generic = _run(config, tmp_path / "generic.safetensors", False)
    _assert_same(fast, generic)
    a = (tmp_path / "fast.safetensors").read_bytes()
    b = (tmp_path / "generic.safetensors").read_bytes()
    assert a == b


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("task_arithmetic", {}, {}),
    ("task_arithmetic", {"scale": 0.3}, {}),
    ("task_arithmetic", {"scale": 0.7}, {"weight": [0.5, -1.0, 2.0, 1.0]}),
    ("average", {}, {}),
    ("ties", {"density": 0.5}, {}),
    ("ties", {"density": 0.2, "scale": 1.5}, {"weight": [0.5, 1.0, 2.0, 1.0]}),
    ("ties", {"density": 0.3, "majority": "count"}, {}),
    ("ties", {}, {"density": [0.2, 1.0, 0.5, 0.7]}),
    ("magnitude_prune", {"density": 0.4, "scale": 0.8}, {}),
    ("magnitude_prune", {}, {"density": [0.1, 0.9, 0.5, 1.0], "weight": [1.0, 0.5, 1.0, 2.0]}),
    ("dare", {"drop_rate": 0.6, "seed": 3}, {}),
    ("dare", {"drop_rate": 0.5, "rescale": False, "scale": 0.5}, {"seed": [1, 2, 3, 4]}),
    ("dare", {"drop_rate": 0.0}, {}),
    ("dare_ties", {"drop_rate": 0.3, "seed": 1}, {"weight": [1.0, 0.5, 1.5, 1.0]}),
    ("dare_ties", {"drop_rate": 0.7, "majority": "count"}, {}),
    ("dare", {"drop_rate": 0.5, "seed": 2}, {"weight": [-1.0, 0.5, 2.0, -0.5]}),
    (
        "dare_ties",
        {"drop_rate": 0.4, "seed": 5, "rescale": False},
        {"weight": [-1.0, 1.0, 2.0, 1.0]},
    ),
    ("consensus", {"k": 2, "lambdas": 0.5, "scale": 0.9}, {}),
]


def _config_for(
    base: Path, models: list[Path], method: str, params: dict[str, Any], per: dict[str, Any]
) -> MergeConfig:
    n = len(models)
    specs = [
        ModelSpec(
            m,
            weight=per.get("weight", [1.0] * 4)[i],
            density=per["density"][i] if "density" in per else None,
            seed=per["seed"][i] if "seed" in per else None,
        )
        for i, m in enumerate(models)
    ]
    if method == "consensus":
        params = {**params, "k": min(params.get("k", 2), n)}
    return MergeConfig(base=base, models=tuple(specs), method=method, parameters=params)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize(("method", "params", "per"), CASES)
def test_fast_path_matches_generic(
    tmp_path: Path, n: int, method: str, params: dict[str, Any], per: dict[str, Any]
) -> None:
    base, models = _checkpoints(tmp_path, n, seed=n, quantum=2.0**-7)
    per = {k: v[:n] for k, v in per.items()}
    _compare(tmp_path, _config_for(base, models, method, params, per))


@pytest.mark.parametrize(
    ("dtype", "model_dtype", "out"),
    [
        (torch.float32, None, None),
        (torch.float16, None, "bfloat16"),
        (torch.float64, None, None),
        (torch.float64, torch.float32, "float32"),
        (torch.bfloat16, torch.float32, "float16"),
        (torch.float32, torch.float64, None),
    ],
)
@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare"])
def test_fast_path_dtypes(
    tmp_path: Path,
    dtype: torch.dtype,
    model_dtype: torch.dtype | None,
    out: str | None,
    method: str,
) -> None:
    base, models = _checkpoints(tmp_path, 3, dtype=dtype, model_dtype=model_dtype)
    params = {"ties": {"density": 0.4}, "dare": {"drop_rate": 0.5}}.get(method, {"scale": 0.4})
    config = MergeConfig(
        base=base,
        models=tuple(models),
        method=method,  # type: ignore[arg-type]
        parameters=params,
        dtype=out,  # type: ignore[arg-type]
    )
    _compare(tmp_path, config)


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 17])
def test_chunk_sizes(tmp_path: Path, chunk: int) -> None:
    base, models = _checkpoints(tmp_path, 3, quantum=2.0**-6)
    config = MergeConfig(
        base=base, models=tuple(models), method="ties", parameters={"density": 0.5}
    )
    _compare(tmp_path, config, chunk)


def test_select_copies_the_rest(tmp_path: Path) -> None:
    base, models = _checkpoints(tmp_path, 3)
    config = MergeConfig(
        base=base,
        models=tuple(models),
        method="ties",
        parameters={"density": 0.3},
        exclude=["norm"],
        dtype="float32",
    )
    _compare(tmp_path, config)


def test_sharded_output_and_report(tmp_path: Path) -> None:
    base, models = _checkpoints(tmp_path, 3)
    config = MergeConfig(
        base=base, models=tuple(models), method="task_arithmetic", max_shard_size=600
    )
    report = run_merge(config, tmp_path / "out", progress=False)
    saved = _engine.ENABLED
    _engine.ENABLED = False
    try:
        generic = run_merge(config, tmp_path / "out2", progress=False)
    finally:
        _engine.ENABLED = saved
    assert report.bytes_read == generic.bytes_read
    assert report.bytes_written == generic.bytes_written
    a, b = open_state_dict(tmp_path / "out"), open_state_dict(tmp_path / "out2")
    _assert_same({k: a[k] for k in a}, {k: b[k] for k in b})


def test_threads_restored(tmp_path: Path) -> None:
    base, models = _checkpoints(tmp_path, 2)
    before = torch.get_num_threads()
    run_merge(MergeConfig(base=base, models=tuple(models)), tmp_path / "o.safetensors")
    assert torch.get_num_threads() == before


def test_pickled_model_uses_the_generic_path(tmp_path: Path) -> None:
    base, models = _checkpoints(tmp_path, 2, dtype=torch.float32)
    torch.save(dict(open_state_dict(models[0]).items()), tmp_path / "ft0.pt")
    config = MergeConfig(
        base=base,
        models=(tmp_path / "ft0.pt", models[1]),
        method="ties",
        parameters={"density": 0.5},
    )
    _compare(tmp_path, config)


@pytest.mark.parametrize("where", ["base", "model", "overflow"])
@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare"])
@pytest.mark.parametrize("check", [True, False])
def test_non_finite_same_outcome(tmp_path: Path, where: str, method: str, check: bool) -> None:
    """Bad values: the fused path gives the generic path's error (or output), chunk or not."""
    base, models = _checkpoints(tmp_path, 3, dtype=torch.float32)
    if where == "overflow":
        models = models[:1]
        target = base
        value = 3.0e38
    else:
        target = base if where == "base" else models[2]
        value = float("nan")
    sd = open_state_dict(target)
    tensors = {k: sd[k].clone() for k in sd}
    tensors["layers.0.weight"].view(-1)[200] = value
    save_state_dict(tensors, target, overwrite=True)
    params = {"ties": {"density": 0.5, "scale": 2.0}, "dare": {"drop_rate": 0.5, "scale": 2.0}}
    config = MergeConfig(
        base=base,
        models=tuple(models),
        method=method,  # type: ignore[arg-type]
        parameters=params.get(method, {"scale": 2.0}),
        check_finite=check,
    )
    outcomes = []
    for fast in (True, False):
        try:
            outcomes.append(_run(config, tmp_path / f"o{fast}.safetensors", fast, 17))
        except WeightspaceValueError as exc:
            outcomes.append(str(exc))
    if isinstance(outcomes[1], str):
        assert outcomes[0] == outcomes[1]
        assert not (tmp_path / "oTrue.safetensors").exists()
    else:
        assert not isinstance(outcomes[0], str)
        _assert_same(outcomes[0], outcomes[1])


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_large_finite_values_take_the_lazy_path_with_the_same_bits(
    tmp_path: Path, method: str
) -> None:
    """Finite bf16 values whose float32 sum overflows: no error, the lazy path's bits."""
    base, models = _checkpoints(tmp_path, 3, quantum=2.0**-7)
    for path in [base, *models]:
        sd = open_state_dict(path)
        tensors = {k: sd[k].clone() for k in sd}
        big = tensors["layers.0.weight"].view(-1)
        big[:40] = 2.5e38  # finite in bf16, in every input; 40 of them overflow a float32 sum
        assert bool(torch.isfinite(big).all())
        assert not bool(torch.isfinite(big.sum(dtype=torch.float32)))
        save_state_dict(
            tensors, path, overwrite=True, max_shard_size=300 if path.is_dir() else None
        )
    params = {"density": 0.5} if method == "ties" else {}
    config = MergeConfig(
        base=base,
        models=tuple(models),
        method=method,  # type: ignore[arg-type]
        parameters=params,
        check_finite=True,
    )
    _compare(tmp_path, config, chunk=64)
    out = open_state_dict(tmp_path / "fast.safetensors")["layers.0.weight"].view(-1)
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out[:40], torch.full((40,), 2.5e38, dtype=torch.bfloat16))


@pytest.mark.parametrize("method", ["dare", "dare_ties"])
def test_dare_zeros_keep_their_sign(tmp_path: Path, method: str) -> None:
    """Base entries of -0.0 under dropped deltas: the fused DARE terms give the lazy bits."""
    base, models = _checkpoints(tmp_path, 3, quantum=2.0**-7)
    for i, path in enumerate([base, *models]):
        sd = open_state_dict(path)
        tensors = {k: sd[k].clone() for k in sd}
        row = tensors["layers.0.weight"][0]
        row[:] = -0.0 if i == 0 else -(2.0**-7) * (torch.arange(16) % 3)
        save_state_dict(
            tensors, path, overwrite=True, max_shard_size=300 if path.is_dir() else None
        )
    config = MergeConfig(
        base=base,
        models=tuple(models),
        method=method,  # type: ignore[arg-type]
        parameters={"drop_rate": 0.5, "seed": 0},
    )
    _compare(tmp_path, config, chunk=7)
    out = open_state_dict(tmp_path / "fast.safetensors")["layers.0.weight"][0]
    zeros = out == 0
    # Every zero is +0.0 (-0.0 base + dropped terms of +0.0), also where negative deltas
    # were dropped (entries 1, 2, 4, 5, ...: a product by a 0 mask alone would give -0.0).
    assert not bool(torch.signbit(out[zeros]).any())
    assert bool((zeros & (torch.arange(16) % 3 != 0)).any())


def test_kth_largest_with_count_matches() -> None:
    gen = torch.Generator().manual_seed(0)
    for numel, k in [(1000, 1), (1000, 999), (4096, 2048), (777, 300)]:
        x = (torch.randn(numel, generator=gen) * 8).round().abs()
        for block in (7, 100, numel):
            value, above = _core.kth_largest_with_count(x, k, block)
            assert torch.equal(value, _core._kth_largest(x, k))
            assert above == int((x > value).sum())


@pytest.mark.parametrize("n", [3, 4, 5])
def test_fused_kernels_match(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    deltas = [
        torch.randn(999, generator=gen) * 2.0 ** torch.randint(-40, 40, (999,), generator=gen)
        for _ in range(n)
    ]
    weights = [0.5, -1.5, 2.0, 1.0, 0.25][:n]
    for w in (None, weights):
        got = _core.fused_sum([d.clone() for d in deltas], w)
        assert torch.equal(got, _core.ordered_sum(deltas, w))
    masks = [torch.rand(999, generator=gen) > 0.4 for _ in range(n)]
    expected = _core.ties_merge(deltas, keep_masks=masks, weights=weights, majority="total")
    values = [d * m * w for d, m, w in zip(deltas, masks, weights, strict=True)]
    bufs = [torch.empty(999, dtype=torch.float64) for _ in range(2)]
    bufs += [torch.empty(999) for _ in range(3)]
    got = _core.fused_ties(values, *bufs)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
