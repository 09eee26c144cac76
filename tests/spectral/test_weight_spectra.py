"""weight_spectra: per-layer eigenbases, serial and split across two torchrun ranks."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError, spectral


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip


def test_each_layer_is_the_eigenbasis_of_its_covariances() -> None:
    model = net()
    spectra = spectral.weight_spectra(model)
    assert list(spectra) == ["0.weight", "2.weight", "5.weight"]
    for name, s in spectra.items():
        cov = spectral.weight_covariances(model.state_dict()[name])
        for basis, c in ((s.spatial, cov.spatial), (s.channel, cov.channel)):
            np.testing.assert_allclose(
                c @ basis.vectors, basis.vectors * basis.values, rtol=1e-9, atol=1e-12
            )
            assert np.all(np.diff(basis.values) <= 1e-12)  # largest first
    assert spectra["2.weight"].spatial.values.shape == (25,)
    assert spectra["5.weight"].spatial.values.shape == (1,)
    short = spectral.weight_spectra(model, targets=["2"], k=4)
    assert list(short) == ["2.weight"] and short["2.weight"].channel.values.shape == (4,)


def test_errors() -> None:
    with pytest.raises(WeightspaceValueError, match="no 2-D or 4-D"):
        spectral.weight_spectra({"bias": torch.ones(3)})
    with pytest.raises(WeightspaceValueError, match="selects no 2-D or 4-D"):
        spectral.weight_spectra(net(), targets=r".*bias")
    with pytest.raises(WeightspaceValueError, match="`k`"):
        spectral.weight_spectra(net(), k=0)


CHILD = textwrap.dedent(
    """
    import pickle, sys, torch, torch.distributed as dist
    from torch import nn
    from weightspace import spectral

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(8, 8, 3) for _ in range(5)], nn.Flatten(), nn.Linear(8, 4))
    spectra = spectral.weight_spectra(model)
    if dist.get_rank() == 0:
        pickle.dump({n: (s.spatial.vectors, s.spatial.values, s.channel.vectors,
                         s.channel.values) for n, s in spectra.items()}, open(sys.argv[1], "wb"))
    dist.destroy_process_group()
    """
)


def test_two_ranks_return_the_serial_spectra(tmp_path: Path, torchrun: Callable[..., Any]) -> None:
    import pickle

    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    done = torchrun([str(script), str(tmp_path / "out.pkl")])
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "out.pkl", "rb") as f:
        ddp = pickle.load(f)  # written by the test itself
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(8, 8, 3) for _ in range(5)], nn.Flatten(), nn.Linear(8, 4))
    serial = spectral.weight_spectra(model)
    assert list(ddp) == list(serial)
    for name, s in serial.items():
        for got, want in zip(
            ddp[name],
            (s.spatial.vectors, s.spatial.values, s.channel.vectors, s.channel.values),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
