"""`weightspace merge` output, byte for byte, against digests recorded before a refactor.

Each case writes a config, runs the command line on a fixed set of small checkpoints and
hashes what it wrote. The digests in ``GOLDEN`` were computed with the code of commit
``deb29f5`` (before ``merge/_config.py`` was split by responsibility), those of ``slerp``,
``model_stock``, ``breadcrumbs``, ``breadcrumbs_ties``, ``della``, ``della_linear`` and
``passthrough`` when these methods were added, by running this file as a script
(``PYTHONHASHSEED=0 .venv/bin/python tests/merge/test_merge_golden.py``), which prints the
table; any change to what ``weightspace merge`` writes fails this test.

A digest covers every byte of every file written, except two things that depend on the
machine rather than on the merge: the fixture folder, removed from the input paths recorded in
the header, and the library version. The header is hashed as written (key order and all),
without its trailing padding (whose length follows the folder's path length).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import tempfile
import typing
from pathlib import Path

import pytest
import torch

from weightspace._cli import main
from weightspace._version import __version__
from weightspace.io import save_state_dict
from weightspace.merge import MergeConfig

#: A chunk of the fused path holds 2**17 entries: "q.weight" spans two chunks, and its
#: deltas take a few values only, so the TIES trims have many ties at the threshold.
SHAPES = {
    "embed.weight": (37, 11),
    "q.weight": (400, 400),
    "layers.0.weight": (16, 16),
    "layers.0.bias": (16,),
    "head.weight": (5, 16),
}

_MODELS = "models:\n  - ft0.safetensors\n  - ft1\n  - ft2.safetensors\n"
_WEIGHTED = (
    "models:\n  - {path: ft0.safetensors, weight: 0.7}\n  - {path: ft1, weight: 1.3}\n"
    "  - {path: ft2.safetensors, weight: -0.4}\n"
)
_BASE = "base: base.safetensors\n"

#: name -> (config text, whether the output is a sharded folder).
CASES: dict[str, tuple[str, bool]] = {
    "task_arithmetic": (
        _BASE + _WEIGHTED + "method: task_arithmetic\nparameters: {scale: 0.3}\n",
        False,
    ),
    "task_arithmetic_one": (
        _BASE + "models: [ft0.safetensors]\nmethod: task_arithmetic\n",
        False,
    ),
    "average": (_BASE + _MODELS + "method: average\n", False),
    "ties": (
        _BASE + _WEIGHTED + "method: ties\nparameters: {density: 0.3, scale: 0.9}\n",
        False,
    ),
    "ties_count": (
        _BASE + _MODELS + "method: ties\nparameters: {density: 0.5, majority: count}\n",
        False,
    ),
    "ties_two": (
        _BASE + "models: [ft0.safetensors, ft1]\nmethod: ties\nparameters: {density: 0.2}\n",
        False,
    ),
    "ties_per_model": (
        _BASE
        + "models:\n  - {path: ft0.safetensors, density: 0.2}\n  - {path: ft1, density: 1.0}\n"
        "  - {path: ft2.safetensors, density: 0.6}\nmethod: ties\n",
        False,
    ),
    "dare": (
        _BASE + _WEIGHTED + "method: dare\nparameters: {drop_rate: 0.7, seed: 5, scale: 0.8}\n",
        False,
    ),
    "dare_seeds": (
        _BASE + "models:\n  - {path: ft0.safetensors, seed: 3}\n  - {path: ft1, seed: 9}\n"
        "  - {path: ft2.safetensors, seed: 1}\nmethod: dare\n"
        "parameters: {drop_rate: 0.5, rescale: false}\n",
        False,
    ),
    "dare_ties": (
        _BASE + _MODELS + "method: dare_ties\nparameters: {drop_rate: 0.6, seed: 2}\n",
        False,
    ),
    "magnitude_prune": (
        _BASE + _WEIGHTED + "method: magnitude_prune\nparameters: {density: 0.4, scale: 1.1}\n",
        False,
    ),
    "consensus": (
        _BASE + _MODELS + "method: consensus\nparameters: {k: 2, lambdas: [0.3, 0.5, 0.4]}\n",
        False,
    ),
    "ties_bf16_sharded": (
        _BASE + _MODELS + "method: ties\nparameters: {density: 0.5}\nselect: [layers, q]\n"
        "exclude: [layers.0.bias]\ndtype: bfloat16\nmax_shard_size: 200kB\n",
        True,
    ),
    "mergekit_dare_ties": (
        "merge_method: dare_ties\nbase_model: base.safetensors\nmodels:\n"
        "  - model: ft0.safetensors\n    parameters: {weight: 0.5, density: 0.5}\n"
        "  - model: ft1\n    parameters: {weight: 1.0, density: 0.5}\n"
        "parameters: {lambda: 0.9}\nrandom_seed: 4\ndtype: float16\n",
        False,
    ),
    "slerp": (
        _BASE + "models: [ft0.safetensors]\nmethod: slerp\n"
        "parameters:\n  t: [{filter: q, value: 0.3}, {value: [0.2, 0.9]}]\n",
        False,
    ),
    "model_stock": (_BASE + _MODELS + "method: model_stock\n", False),
    "breadcrumbs": (
        _BASE + _WEIGHTED + "method: breadcrumbs\n"
        "parameters: {density: 0.6, gamma: 0.05, scale: 0.9}\n",
        False,
    ),
    "breadcrumbs_ties": (
        _BASE + _MODELS + "method: breadcrumbs_ties\n"
        "parameters: {density: 0.5, gamma: 0.02, normalize: true, rescale: true}\n",
        False,
    ),
    "della": (
        _BASE + _MODELS + "method: della\nparameters: {density: 0.5, epsilon: 0.1, seed: 7}\n",
        False,
    ),
    "della_linear": (
        _BASE + _WEIGHTED + "method: della_linear\n"
        "parameters: {density: 0.6, epsilon: 0.2, seed: 1}\n",
        False,
    ),
    "passthrough": (
        _BASE + "models: [ft0.safetensors, ft1]\nmethod: passthrough\n"
        "parameters: {slices: [{model: 0, layers: [0, 1]}, {model: 1, layers: [0, 1]}]}\n"
        "dtype: bfloat16\n",
        False,
    ),
    "mergekit_linear": (
        "merge_method: linear\nmodels:\n"
        "  - model: base.safetensors\n    parameters: {weight: 1.0}\n"
        "  - model: ft0.safetensors\n    parameters: {weight: 3.0}\n",
        False,
    ),
}

#: The digests of the outputs of ``CASES`` (see the module notes for how they were obtained).
GOLDEN: dict[str, str] = {
    "average": "ba64196fd025835fef31d99e0c84de92990330d93cfe10d35a2196ced411781a",
    "breadcrumbs": "545a9c72608e327918a3ce05aee858c5e4b6fa66ac02e0932cce304c4fe32fa0",
    "breadcrumbs_ties": "94e02ae9e1014c9b253ea649399e3baf32544c3973c64f994ba31c17d2232736",
    "consensus": "398c46b3b8cbf725eafdd6fe5b02e716c666855cd16a9fc1c2044fd7e400750a",
    "dare": "c966cba97ea82b525918f9202d7668d54e79a4bf168993ab31b72a3bc94a6e1b",
    "dare_seeds": "679d8e88d9331af69c430a06853f2c581b57e251e9e9fb68509c1cd9ddfa8fbc",
    "dare_ties": "aefeec680025326e8da46acc2270124473f7ac683c5d41bc82fd3d9ecf53d2bb",
    "della": "a83a9988329a36b90da4d2ef7f3f7738fece8a7e2f3d415f3b5a0f96a6cbe408",
    "della_linear": "32bb1952697c5a869f4389c4a6f9423ee3465e88f0a7590d36615d44df8863e4",
    "magnitude_prune": "c0af84b327f7092eb96b1a1950dd5a1df486b3d4ac7acec8e6d49d6bd4942bda",
    "mergekit_dare_ties": "016f4afad99749ed6c25febdfe5c3832acb07b5d1d1375fefc7198df3cefb80d",
    "passthrough": "cc4f688141f3a8b6b14699a11b88f379c0e4e5ee9b8c8225c36faf5e67ced38c",
    "mergekit_linear": "3063f8f5cdaa9fb4c33ff6e53cb5ceadc93b8c1f3ec4c4566a0d7e29e1f0ba0a",
    "model_stock": "d0b653f35f8dbf1327f880fbf39f90c34211676a4b311eb4ab8f9ca130f5e416",
    "slerp": "5cf94fda2b06ff850b54e6b5d654f511fc3837fb235a871f276c93e9bf3b9660",
    "task_arithmetic": "e1ad14944c5e70b6d9be19201ce28c000128910510d24b647f2613cab8a96b6f",
    "task_arithmetic_one": "4575f2323564a8edba51a12a307d1b6362234a7dbc01925c32155de1b8a49b48",
    "ties": "7d9154689ebf8db88249bdce4196c6fad4942baf72daa2f0c23f6e7e004b818e",
    "ties_bf16_sharded": "070375dca8bb64eab810f1e34f37869663380d00e7d73eb41f9b4e6dc3e31a28",
    "ties_count": "bbf80b624b6f292aeb5daebf4d7b7b4e87a4fa93e8ea2bca904d7040e5f1b916",
    "ties_per_model": "c2ac843da4c7e07a845589f509d230ac0d71a14f1020858e1e87c8abf196f727",
    "ties_two": "0f0162b8a927fd1381b49684a0794054be75a150b04bd530ef1cfd02876329ab",
}


def make_checkpoints(folder: Path) -> None:
    """A base (float32, bfloat16 and float64 tensors and an int counter) and three fine-tunes."""
    gen = torch.Generator().manual_seed(1234)
    base: dict[str, torch.Tensor] = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        dtype = (torch.float32, torch.float32, torch.bfloat16, torch.float64, torch.float32)[i]
        base[name] = torch.randn(shape, generator=gen).to(dtype)
    base["steps"] = torch.tensor(7)
    save_state_dict(base, folder / "base.safetensors")
    for t in range(3):
        sd: dict[str, torch.Tensor] = {}
        for name, value in base.items():
            if not value.is_floating_point():
                sd[name] = value + t
                continue
            delta = 0.05 * torch.randn(value.shape, generator=gen)
            if name == "q.weight":
                delta = torch.randint(-3, 4, value.shape, generator=gen) * 0.01
            sd[name] = (value.double() + delta.double()).to(value.dtype)
        if t == 1:
            save_state_dict(sd, folder / "ft1", max_shard_size=300_000)
        else:
            save_state_dict(sd, folder / f"ft{t}.safetensors")


def _file_digest(path: Path, folder: Path, digest: hashlib._Hash) -> None:
    data = path.read_bytes()
    if path.suffix != ".safetensors":  # the index JSON
        digest.update(data)
        return
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].decode("utf-8").rstrip(" ")
    header = header.replace(f"{folder}/", "").replace(json.dumps(__version__)[1:-1], "VERSION")
    digest.update(header.encode("utf-8"))
    digest.update(data[8 + n :])


def output_digest(out: Path, folder: Path) -> str:
    """SHA-256 of what the merge wrote to ``out`` (see the module notes)."""
    digest = hashlib.sha256()
    files = sorted(out.iterdir()) if out.is_dir() else [out]
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\x00")
        _file_digest(path, folder, digest)
    return digest.hexdigest()


def run_case(folder: Path, name: str) -> str:
    """Run ``weightspace merge`` on case ``name`` in ``folder``; the output's digest."""
    text, sharded = CASES[name]
    config = folder / f"{name}.yaml"
    config.write_text(text)
    out = folder / (name if sharded else f"{name}.safetensors")
    assert main(["merge", str(config), "-o", str(out), "--no-progress", "--threads", "1"]) == 0
    return output_digest(out, folder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden").resolve()
    make_checkpoints(path)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_merge_output_bytes_unchanged(
    folder: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_case(folder, name) == GOLDEN[name]
    assert capsys.readouterr().out.startswith("merged ")


def test_every_method_has_a_case() -> None:
    named = typing.get_args(typing.get_type_hints(MergeConfig)["method"])
    methods = {text.split("method: ")[1].split("\n")[0] for text, _ in CASES.values()}
    assert set(named) <= methods


if __name__ == "__main__":  # pragma: no cover - prints the table of GOLDEN
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        make_checkpoints(root)
        for case in sorted(CASES):
            sys.stdout.write(f'    "{case}": "{run_case(root, case)}",\n')
