from __future__ import annotations

import errno
import itertools
import json
import os
import stat
import struct
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightspace import ShapeMismatchError, WeightspaceError, WeightspaceValueError
from weightspace.io import open_state_dict, save_state_dict

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-(2**40), 2**40, shape, generator=g, dtype=dtype)


def mixed() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, dt in enumerate(DTYPES):
        name = str(dt).removeprefix("torch.")
        out[f"{name}.matrix"] = sample(dt, (3, 5), seed=i)
        out[f"{name}.scalar"] = sample(dt, (), seed=10 + i)
        out[f"{name}.empty"] = sample(dt, (0, 4), seed=20 + i)
    return out


class Lazy(Mapping[str, torch.Tensor]):
    """A lazily computed mapping that records what the writer does with it."""

    def __init__(
        self,
        specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
        *,
        with_specs: bool = True,
        fail_at: str | None = None,
        exc: BaseException | None = None,
        out_dir: Path | None = None,
    ) -> None:
        self.specs = specs
        self.with_specs = with_specs
        self.fail_at = fail_at
        self.exc = exc or RuntimeError("boom")
        self.out_dir = out_dir
        self.calls: list[str] = []
        self.alive = 0
        self.max_alive_at_call = 0
        self.header_seen: list[bool] = []

    def __getattr__(self, name: str) -> object:
        if name in ("shape", "dtype") and self.__dict__.get("with_specs"):
            return getattr(self, f"_{name}")
        raise AttributeError(name)

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name][0]

    def _dtype(self, name: str) -> torch.dtype:
        return self.specs[name][1]

    def _dec(self) -> None:
        self.alive -= 1

    def __getitem__(self, name: str) -> torch.Tensor:
        self.max_alive_at_call = max(self.max_alive_at_call, self.alive)
        if self.out_dir is not None:
            temps = [p for p in self.out_dir.rglob("*") if p.is_file()]
            ok = False
            for p in temps:
                raw = p.read_bytes()
                if len(raw) >= 8:
                    (n,) = struct.unpack("<Q", raw[:8])
                    ok = ok or (len(raw) >= 8 + n and name in json.loads(raw[8 : 8 + n]))
            self.header_seen.append(ok)
        self.calls.append(name)
        if name == self.fail_at:
            raise self.exc
        shape, dtype = self.specs[name]
        t = sample(dtype, shape, seed=len(self.calls))
        self.alive += 1
        weakref.finalize(t, self._dec)
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


SPECS: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
    "b.weight": ((16, 8), torch.float32),
    "a.weight": ((8, 4), torch.bfloat16),
    "c.count": ((), torch.int64),
    "d.mask": ((7,), torch.bool),
    "e.weight": ((4, 4), torch.float32),
}


# -- round trips and byte identity -------------------------------------------------------------


def test_round_trip_bit_for_bit(tmp_path: Path) -> None:
    tensors = mixed()
    out = save_state_dict(tensors, tmp_path / "m.safetensors")
    assert out == tmp_path / "m.safetensors"
    loaded = load_file(out)
    lazy = open_state_dict(out)
    assert set(loaded) == set(tensors) == set(lazy)
    for name, t in tensors.items():
        assert same_bits(loaded[name], t), name
        assert same_bits(lazy[name], t), name


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt"}])
def test_byte_identical_to_save_file(tmp_path: Path, metadata: dict[str, str] | None) -> None:
    tensors = mixed()
    save_file(tensors, tmp_path / "ref.safetensors", metadata=metadata)
    save_state_dict(tensors, tmp_path / "ours.safetensors", metadata=metadata)
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors"
    ).read_bytes()


def test_all_dtypes_ordered_like_save_file(tmp_path: Path) -> None:
    names = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8"]
    names += ["uint8", "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz"]
    names += ["float8_e5m2fnuz", "uint16", "uint32", "uint64", "complex64"]
    tensors = {n: torch.zeros(3, dtype=getattr(torch, n)) for n in names if hasattr(torch, n)}
    save_file(tensors, tmp_path / "ref.safetensors")
    save_state_dict(tensors, tmp_path / "ours.safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors"
    ).read_bytes()


def header(path: Path) -> tuple[int, dict[str, object]]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n])


def test_several_metadata_keys_same_header_and_data(tmp_path: Path) -> None:
    tensors = mixed()
    meta = {"z": "1", "a": 'é\n"x"', "m": "\x01"}
    save_file(tensors, tmp_path / "ref.safetensors", metadata=meta)
    save_state_dict(tensors, tmp_path / "ours.safetensors", metadata=meta)
    ref, ours = (
        (tmp_path / "ref.safetensors").read_bytes(),
        (tmp_path / "ours.safetensors").read_bytes(),
    )
    n_ref, h_ref = header(tmp_path / "ref.safetensors")
    n_ours, h_ours = header(tmp_path / "ours.safetensors")
    assert (n_ref, h_ref) == (n_ours, h_ours)  # only the key order of __metadata__ may differ
    assert ref[8 + n_ref :] == ours[8 + n_ours :]
    assert list(h_ours["__metadata__"]) == ["a", "m", "z"]  # type: ignore[call-overload]
    assert dict(open_state_dict(tmp_path / "ours.safetensors").metadata) == meta


def test_header_is_aligned_and_space_padded(tmp_path: Path) -> None:
    save_state_dict({"x": torch.zeros(1)}, tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    assert raw[8 : 8 + n].endswith(b" ")
    assert raw[8 : 8 + n].rstrip(b" ") == b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda s: s != "__metadata__"),
        st.tuples(
            st.sampled_from(
                [
                    torch.float32,
                    torch.float16,
                    torch.bfloat16,
                    torch.int64,
                    torch.int8,
                    torch.uint8,
                    torch.bool,
                    torch.float64,
                    torch.int32,
                ]
            ),
            st.lists(st.integers(0, 3), max_size=3),
            st.integers(0, 2**32 - 1),
        ),
        max_size=6,
    )
)
def test_property_round_trip_and_identity(
    tmp_path_factory: pytest.TempPathFactory,
    spec: dict[str, tuple[torch.dtype, list[int], int]],
) -> None:
    tensors = {}
    for name, (dtype, shape, seed) in spec.items():
        g = torch.Generator().manual_seed(seed)
        numel = 1
        for d in shape:
            numel *= d
        if dtype == torch.bool:
            t = torch.randint(0, 2, tuple(shape), generator=g).bool()
        else:  # arbitrary bit patterns, NaN payloads included
            size = numel * torch.empty((), dtype=dtype).element_size()
            raw = torch.randint(0, 256, (size,), generator=g, dtype=torch.uint8)
            t = raw.view(dtype).reshape(shape)
        tensors[name] = t
    folder = tmp_path_factory.mktemp("prop")
    save_file(tensors, folder / "ref.safetensors")
    save_state_dict(tensors, folder / "ours.safetensors")
    assert (folder / "ours.safetensors").read_bytes() == (folder / "ref.safetensors").read_bytes()
    back = open_state_dict(folder / "ours.safetensors")
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert same_bits(back[name], t)


def test_dtype_cast_only_floats(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 3), "n": torch.arange(3), "m": torch.tensor([True, False])}
    save_state_dict(tensors, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    back = load_file(tmp_path / "m.safetensors")
    assert same_bits(back["w"], tensors["w"].to(torch.bfloat16))
    assert same_bits(back["n"], tensors["n"])
    assert same_bits(back["m"], tensors["m"])


def test_non_contiguous_grad_and_views(tmp_path: Path) -> None:
    base = torch.randn(4, 6, requires_grad=True)
    tensors = {"t": base.t(), "slice": base[:, ::2], "neg": torch.randn(3).neg()}
    save_state_dict(tensors, tmp_path / "m.safetensors")
    back = load_file(tmp_path / "m.safetensors")
    for name, t in tensors.items():
        assert same_bits(back[name], t.detach().contiguous())


def test_file_mode_follows_umask(tmp_path: Path) -> None:
    out = save_state_dict({"x": torch.zeros(1)}, tmp_path / "m.safetensors")
    (tmp_path / "plain").write_bytes(b"")  # what an ordinary open() gives under this umask
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_state_dict({"x": torch.zeros(100)}, tmp_path / "m.safetensors", progress=True)
    assert "m.safetensors" in capsys.readouterr().err


# -- sharding ----------------------------------------------------------------------------------


def test_sharded_write_and_read(tmp_path: Path) -> None:
    tensors = {f"layer{i}.weight": sample(torch.float32, (10, 10), seed=i) for i in range(5)}
    tensors["tiny"] = torch.tensor(1, dtype=torch.int64)
    out = save_state_dict(tensors, tmp_path / "ckpt", max_shard_size=900, metadata={"k": "v"})
    assert out == tmp_path / "ckpt"
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
    ]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": 5 * 400 + 8}
    assert list(index["weight_map"]) == sorted(tensors)
    for shard in set(index["weight_map"].values()):
        with safe_open(str(out / shard), framework="pt") as f:
            assert set(f.keys()) == {k for k, v in index["weight_map"].items() if v == shard}
            assert f.metadata() == {"k": "v"}
    for name in ("layer0.weight", "layer1.weight"):
        assert index["weight_map"][name] == "model-00001-of-00003.safetensors"
    back = open_state_dict(out)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert same_bits(back[name], t)
    assert back.source_file("layer4.weight").name == "model-00003-of-00003.safetensors"
    assert dict(back.metadata) == {"k": "v"}


def test_oversized_tensor_gets_its_own_shard(tmp_path: Path) -> None:
    tensors = {"a": torch.zeros(10), "big": torch.zeros(100), "c": torch.zeros(10)}
    out = save_state_dict(tensors, tmp_path / "ckpt", max_shard_size="100B")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {
        "a": "model-00001-of-00003.safetensors",
        "big": "model-00002-of-00003.safetensors",
        "c": "model-00003-of-00003.safetensors",
    }


def test_single_shard_is_model_safetensors(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(4.0)}
    out = save_state_dict(tensors, tmp_path / "ckpt", max_shard_size="5GB")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert same_bits(open_state_dict(out)["a"], tensors["a"])


# -- streaming ---------------------------------------------------------------------------------


def test_streaming_one_tensor_at_a_time_header_first(tmp_path: Path) -> None:
    lazy = Lazy(dict(SPECS), out_dir=tmp_path)
    save_state_dict(lazy, tmp_path / "m.safetensors")
    # each tensor computed exactly once, in file order (descending dtype rank, then name)
    assert lazy.calls == ["c.count", "b.weight", "e.weight", "a.weight", "d.mask"]
    assert lazy.max_alive_at_call == 0  # the previous tensor was released before the next
    assert lazy.alive == 0
    assert lazy.header_seen == [True] * len(SPECS)  # header on disk before any computation
    back = open_state_dict(tmp_path / "m.safetensors")
    assert {n: (tuple(back.shape(n)), back.dtype(n)) for n in back} == SPECS


def test_streaming_with_explicit_specs(tmp_path: Path) -> None:
    lazy = Lazy(dict(SPECS), with_specs=False, out_dir=tmp_path)
    save_state_dict(lazy, tmp_path / "m.safetensors", specs=SPECS)
    assert len(lazy.calls) == len(SPECS)
    assert lazy.max_alive_at_call == 0
    assert all(lazy.header_seen)


def test_streaming_sharded(tmp_path: Path) -> None:
    lazy = Lazy(dict(SPECS), out_dir=tmp_path)
    save_state_dict(lazy, tmp_path / "ckpt", max_shard_size=200)
    assert sorted(lazy.calls) == sorted(SPECS)
    assert lazy.max_alive_at_call == 0
    assert all(lazy.header_seen)


def test_no_specs_materialises_each_tensor_once(tmp_path: Path) -> None:
    lazy = Lazy(dict(SPECS), with_specs=False)
    save_state_dict(lazy, tmp_path / "m.safetensors")
    assert sorted(lazy.calls) == sorted(SPECS)  # computed once each, not twice
    assert lazy.max_alive_at_call == len(SPECS) - 1  # all held at once: the counter works


def test_streaming_lazy_state_dict_to_shards(tmp_path: Path) -> None:
    tensors = mixed()
    save_file(tensors, tmp_path / "in.safetensors")
    src = open_state_dict(tmp_path / "in.safetensors")
    out = save_state_dict(src, tmp_path / "out", max_shard_size=64)
    assert src.bytes_read == sum(t.numel() * t.element_size() for t in tensors.values())
    back = open_state_dict(out)
    for name, t in tensors.items():
        assert same_bits(back[name], t)


def test_planned_shape_mismatch_aborts(tmp_path: Path) -> None:
    lazy = Lazy(dict(SPECS))
    wrong = dict(SPECS)
    wrong["e.weight"] = ((4, 5), torch.float32)
    with pytest.raises(ShapeMismatchError, match=r"'e.weight' was planned as shape \[4, 5\]"):
        save_state_dict(lazy, tmp_path / "m.safetensors", specs=wrong)
    assert list(tmp_path.iterdir()) == []


def test_planned_dtype_mismatch_aborts(tmp_path: Path) -> None:
    wrong = dict(SPECS)
    wrong["d.mask"] = ((7,), torch.uint8)
    with pytest.raises(ShapeMismatchError, match=r"dtype torch\.uint8"):
        save_state_dict(Lazy(dict(SPECS)), tmp_path / "m.safetensors", specs=wrong)
    assert list(tmp_path.iterdir()) == []


def test_specs_must_cover_keys(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"1 are missing \(\['e.weight'\]\)"):
        save_state_dict(
            Lazy(dict(SPECS)),
            tmp_path / "m.safetensors",
            specs={k: v for k, v in SPECS.items() if k != "e.weight"},
        )


def test_non_tensor_value_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`tensors\['x'\]` must be a torch.Tensor"):
        save_state_dict({"x": [1.0]}, tmp_path / "m.safetensors")  # type: ignore[dict-item]


# -- atomicity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
)
@pytest.mark.parametrize("sharded", [False, True])
def test_interrupted_write_leaves_nothing(
    tmp_path: Path, exc: BaseException, sharded: bool
) -> None:
    lazy = Lazy(dict(SPECS), fail_at="e.weight", exc=exc)
    target = tmp_path / ("ckpt" if sharded else "m.safetensors")
    with pytest.raises(type(exc)):
        save_state_dict(lazy, target, max_shard_size=200 if sharded else None)
    assert "e.weight" in lazy.calls  # it failed midway
    assert len(lazy.calls) > 1
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    save_state_dict({"old": torch.ones(2)}, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        save_state_dict(Lazy(dict(SPECS), fail_at="a.weight"), target, overwrite=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_disk_full_on_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_state_dict({"x": torch.zeros(3)}, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_check_finite(tmp_path: Path) -> None:
    tensors = {"ok": torch.zeros(2), "bad": torch.tensor([1.0, float("nan"), float("inf")])}
    with pytest.raises(WeightspaceValueError, match=r"'bad' has 1 NaN and 1 infinite"):
        save_state_dict(tensors, tmp_path / "m.safetensors", check_finite=True)
    assert list(tmp_path.iterdir()) == []
    save_state_dict(tensors, tmp_path / "m.safetensors")  # off by default
    assert torch.isnan(load_file(tmp_path / "m.safetensors")["bad"][1])


# -- overwrite and inputs ----------------------------------------------------------------------


def test_existing_output_refused_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    save_state_dict({"a": torch.zeros(1)}, target)
    with pytest.raises(WeightspaceValueError, match="already exists; pass `overwrite=True`"):
        save_state_dict({"a": torch.ones(1)}, target)
    save_state_dict({"a": torch.ones(1)}, target, overwrite=True)
    assert load_file(target)["a"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_sharded_overwrite_replaces_folder(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    save_state_dict({f"w{i}": torch.zeros(10) for i in range(4)}, target, max_shard_size=40)
    assert len(list(target.iterdir())) == 5
    with pytest.raises(WeightspaceValueError, match="already exists"):
        save_state_dict({"a": torch.ones(1)}, target, max_shard_size=40)
    save_state_dict({"a": torch.ones(1)}, target, max_shard_size=40, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_writing_onto_lazy_input_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2)}, src)
    sd = open_state_dict(src)
    with pytest.raises(WeightspaceValueError, match="would overwrite the input"):
        save_state_dict(sd, src, overwrite=True)
    assert same_bits(load_file(src)["a"], torch.zeros(2))


def test_writing_onto_listed_input_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2)}, src)
    with pytest.raises(WeightspaceValueError, match="would overwrite the input"):
        save_state_dict({"a": torch.ones(2)}, src, inputs=[src], overwrite=True)
    link = tmp_path / "link.safetensors"
    link.symlink_to(src)
    with pytest.raises(WeightspaceValueError, match="would overwrite the input"):
        save_state_dict({"a": torch.ones(2)}, src, inputs=[str(link)], overwrite=True)
    with pytest.raises(WeightspaceValueError, match="wrap it in a list"):
        save_state_dict({"a": torch.ones(2)}, tmp_path / "o.safetensors", inputs=str(src))


def test_writing_folder_over_sharded_input_refused(tmp_path: Path) -> None:
    ckpt = save_state_dict(
        {f"w{i}": torch.zeros(10) for i in range(3)}, tmp_path / "c", max_shard_size=40
    )
    sd = open_state_dict(ckpt)
    with pytest.raises(WeightspaceValueError, match="would overwrite the input"):
        save_state_dict(sd, ckpt, max_shard_size=40, overwrite=True)
    with pytest.raises(WeightspaceValueError, match="would overwrite the input"):
        save_state_dict(sd, ckpt / "model-00001-of-00003.safetensors", overwrite=True)
    # writing a new file next to the inputs is fine
    save_state_dict(sd, ckpt / "merged.safetensors")


# -- argument checks ---------------------------------------------------------------------------


def test_bad_arguments(tmp_path: Path) -> None:
    t = {"a": torch.zeros(1)}
    with pytest.raises(WeightspaceValueError, match=r"must end in '\.safetensors'"):
        save_state_dict(t, tmp_path / "m.bin")
    with pytest.raises(WeightspaceValueError, match="must be a folder"):
        save_state_dict(t, tmp_path / "m.safetensors", max_shard_size="1GB")
    with pytest.raises(WeightspaceValueError, match="`max_shard_size` must look like"):
        save_state_dict(t, tmp_path / "ckpt", max_shard_size="lots")
    with pytest.raises(WeightspaceValueError, match="`metadata` must map str to str"):
        save_state_dict(t, tmp_path / "m.safetensors", metadata={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(WeightspaceValueError, match="`dtype` must be a floating"):
        save_state_dict(t, tmp_path / "m.safetensors", dtype=torch.int8)
    with pytest.raises(WeightspaceValueError, match="`tensors` must be a Mapping"):
        save_state_dict([torch.zeros(1)], tmp_path / "m.safetensors")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="safetensors cannot store"):
        save_state_dict({"c": torch.zeros(1, dtype=torch.complex128)}, tmp_path / "m.safetensors")
    with pytest.raises(WeightspaceValueError, match="dense tensors only"):
        save_state_dict({"s": torch.eye(2).to_sparse()}, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    with pytest.raises(WeightspaceValueError, match="is an existing folder"):
        save_state_dict(t, folder, overwrite=True)
    assert isinstance(WeightspaceValueError("x"), WeightspaceError)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux-only")
def test_write_behind_covers_the_data_and_changes_no_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each written stretch is handed to the kernel's writeback once, in order; same bytes."""
    from weightspace.io import _write

    gen = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(100 + 37 * i, generator=gen) for i in range(6)}
    save_file(tensors, str(tmp_path / "reference.safetensors"))
    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    monkeypatch.setattr(_write, "WRITE_BEHIND_BYTES", 1000)
    out = save_state_dict(tensors, tmp_path / "out.safetensors")
    data = out.read_bytes()
    assert data == (tmp_path / "reference.safetensors").read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    assert len(calls) == 3  # tensors of 400, 548, 696, 844, 992, 1140 bytes: 3 kicks
    assert all(advice == os.POSIX_FADV_DONTNEED for _, _, advice in calls)
    assert calls[0][0] == header_end
    for (offset, length, _), (following, _, _) in itertools.pairwise(calls):
        assert following == offset + length
    assert calls[-1][0] + calls[-1][1] <= len(data)
