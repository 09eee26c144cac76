from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import weightspace.data._molecules as molecules_module
from weightspace import MissingSourceError, WeightspaceValueError
from weightspace.data import MoleculeDataset, molecules

pytestmark = [
    # torch_geometric warns on import that torch.jit.script is deprecated (a FutureWarning on
    # torch >= 2.10; pyproject only ignores the DeprecationWarning form).
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

NCI_TARGETS = ("tpsa", "tpsa_rdkit", "logp", "hbd")


@pytest.fixture(scope="module", autouse=True)
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # One cache for the module: the molecules are featurised once, not once per test.
    root = tmp_path_factory.mktemp("weightspace-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEIGHTSPACE_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def nci() -> MoleculeDataset:
    return molecules("nci", targets=NCI_TARGETS, progress=False)


@pytest.fixture(scope="module")
def chembl() -> MoleculeDataset:
    return molecules("chembl", progress=False)


def test_import_does_not_load_optional_packages() -> None:
    code = (
        "import sys, weightspace.data; "
        "print(sorted(m for m in ('rdkit', 'torch_geometric', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_nci_counts_and_measured_tpsa(nci: MoleculeDataset) -> None:
    assert len(nci) == 4991  # 8 of the first 4,999 NCI SMILES do not parse
    assert nci.target_names == NCI_TARGETS
    assert nci.y.shape == (4991, 4)
    tpsa, tpsa_rdkit = nci.y[:, 0], nci.y[:, 1]
    # Ertl's reference program and rdkit agree for all but a handful of molecules
    close = (tpsa - tpsa_rdkit).abs() < 0.01
    assert close.float().mean().item() > 0.995
    assert float(tpsa.min()) == 0.0
    hbd = nci.y[:, 3]
    assert torch.equal(hbd, hbd.round())
    assert float(hbd.min()) == 0.0
    assert float(hbd.max()) < 30


def test_nci_first_molecule(nci: MoleculeDataset) -> None:
    data = nci[0]
    # 2-methyl-1,4-benzoquinone: 7 carbons, 2 oxygens, 9 bonds
    assert data.smiles == "CC1=CC(=O)C=CC1=O"
    assert nci.ids[0] == "1"
    assert data.x.shape == (9, 38)
    assert data.edge_index.shape == (2, 18)
    assert data.edge_attr.shape == (18, 7)
    assert data.y.shape == (1, 4)
    assert data.y[0, 0].item() == pytest.approx(34.14, abs=1e-4)
    names = MoleculeDataset.atom_feature_names
    carbons = data.x[:, names.index("element=C")].sum().item()
    oxygens = data.x[:, names.index("element=O")].sum().item()
    assert (carbons, oxygens) == (7, 2)
    assert data.x[:, names.index("is_aromatic")].sum().item() == 0
    assert data.x[:, names.index("is_in_ring")].sum().item() == 6
    bonds = MoleculeDataset.bond_feature_names
    assert data.edge_attr[:, bonds.index("bond_type=double")].sum().item() == 2 * 4


def test_graph_structure_is_consistent(chembl: MoleculeDataset) -> None:
    names = MoleculeDataset.atom_feature_names
    blocks = [
        [i for i, n in enumerate(names) if n.startswith(prefix)]
        for prefix in ("element", "degree", "formal_charge", "num_hs", "hybridization")
    ]
    bond_types = [i for i, n in enumerate(MoleculeDataset.bond_feature_names) if "type" in n]
    for i in (0, 17, 500, len(chembl) - 1):
        data = chembl[i]
        for block in blocks:  # every one-hot block has exactly one 1 per atom
            assert torch.equal(data.x[:, block].sum(1), torch.ones(len(data.x)))
        assert torch.equal(data.edge_attr[:, bond_types].sum(1), torch.ones(len(data.edge_attr)))
        # both directions of each bond, with the same features
        src, dst = data.edge_index
        assert torch.equal(src[0::2], dst[1::2])
        assert torch.equal(src[1::2], dst[0::2])
        assert torch.equal(data.edge_attr[0::2], data.edge_attr[1::2])
        assert int(data.edge_index.max()) < len(data.x)
        # degree feature agrees with the edges
        degree = torch.bincount(src, minlength=len(data.x)).clamp(max=5)
        onehot = data.x[:, blocks[1]].argmax(1)
        assert torch.equal(onehot, degree)


def test_chembl_pic50(chembl: MoleculeDataset) -> None:
    assert len(chembl) == 1017
    assert chembl.target_names == ("pic50",)
    assert chembl.y.min().item() == pytest.approx(4.27)
    assert chembl.y.max().item() == pytest.approx(9.22)
    assert chembl.y.mean().item() == pytest.approx(6.5509, abs=1e-3)
    assert chembl.ids[0] == "1520012"
    assert chembl[0].y.item() == pytest.approx(5.48)


def test_second_load_reads_the_cache(
    chembl: MoleculeDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the molecules were featurised again although the cache is valid")

    monkeypatch.setattr(molecules_module, "_featurise", fail)
    again = molecules("chembl", progress=False)
    assert torch.equal(again.y, chembl.y)
    assert again.smiles == chembl.smiles


def test_corrupted_cache_is_rebuilt(
    chembl: MoleculeDataset, cache_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached = cache_root / "molecules" / "chembl-rdkit-graphs.safetensors"
    data = bytearray(cached.read_bytes())
    data[-100:-50] = bytes(255 - b for b in data[-100:-50])
    cached.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="weightspace"):
        rebuilt = molecules("chembl", progress=False)
    assert any("is corrupted" in r.getMessage() for r in caplog.records)
    assert torch.equal(rebuilt.y, chembl.y)
    for i in (0, 1016):
        assert torch.equal(rebuilt[i].x, chembl[i].x)
        assert torch.equal(rebuilt[i].edge_index, chembl[i].edge_index)


def test_split_is_deterministic(chembl: MoleculeDataset) -> None:
    train, val, test = chembl.split((0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (814, 101, 102)
    ids = [set(part.ids) for part in (train, val, test)]
    assert sum(len(part) for part in ids) == 1017
    assert len(ids[0] | ids[1] | ids[2]) == 1017
    again = chembl.split((0.8, 0.1, 0.1), seed=0)
    assert [p.ids for p in again] == [p.ids for p in (train, val, test)]
    other = chembl.split((0.8, 0.1, 0.1), seed=1)
    assert other[0].ids != train.ids
    # nested use: splitting a split
    a, b = train.split((0.5, 0.5), seed=3)
    assert set(a.ids) | set(b.ids) == ids[0]


def test_split_errors(chembl: MoleculeDataset) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`fractions` must .* sum to 1, got \(0.5"):
        chembl.split((0.5, 0.4))
    with pytest.raises(WeightspaceValueError, match=r"`fractions`"):
        chembl.split((1.2, -0.2))
    with pytest.raises(WeightspaceValueError, match=r"`seed` must be an int, got 0.5"):
        chembl.split(seed=0.5)  # type: ignore[arg-type]


def test_subset_slice_and_loader(chembl: MoleculeDataset) -> None:
    first = chembl[:10]
    assert isinstance(first, MoleculeDataset)
    assert first.ids == chembl.ids[:10]
    picked = chembl.subset([5, 2])
    assert picked.smiles == (chembl.smiles[5], chembl.smiles[2])
    assert torch.equal(picked[1].x, chembl[2].x)
    assert chembl[-1].smiles == chembl.smiles[-1]
    with pytest.raises(IndexError):
        chembl[1017]
    with pytest.raises(WeightspaceValueError, match=r"`indices` must lie in \[-1017, 1017\)"):
        chembl.subset([2000])

    from torch_geometric.loader import DataLoader

    batch = next(iter(DataLoader(first, batch_size=4)))
    assert batch.num_graphs == 4
    assert batch.y.shape == (4, 1)
    assert batch.x.shape[1] == 38
    assert batch.x.shape[0] == sum(chembl[i].num_nodes for i in range(4))


def test_unknown_target_lists_the_valid_names() -> None:
    with pytest.raises(WeightspaceValueError) as info:
        molecules("nci", targets=("tpsa", "solubility"), progress=False)
    message = str(info.value)
    assert "`targets`" in message
    assert "['solubility']" in message
    assert "'logp'" in message
    assert "'qed'" in message
    with pytest.raises(WeightspaceValueError, match=r"measured only for source='chembl'"):
        molecules("nci", targets=("pic50",), progress=False)
    with pytest.raises(WeightspaceValueError, match=r"pass `targets=\('logp',\)`"):
        molecules("nci", targets="logp", progress=False)
    with pytest.raises(WeightspaceValueError, match=r"lists a target twice"):
        molecules("nci", targets=("logp", "logp"), progress=False)
    with pytest.raises(WeightspaceValueError, match=r"`source` must be one of \['nci', 'chembl'\]"):
        molecules("qm9", progress=False)  # type: ignore[arg-type]


def test_user_folder(chembl: MoleculeDataset, tmp_path: Path) -> None:
    source = molecules_module._default_folder("chembl")
    lines = (source / "CHEMBL2321810.smi").read_text().splitlines()
    (tmp_path / "CHEMBL2321810.smi").write_text("\n".join(lines[:50]) + "\n")
    (tmp_path / "CHEMBL2321810_act.csv").write_text((source / "CHEMBL2321810_act.csv").read_text())
    small = molecules("chembl", targets=("pic50", "heavy_atoms"), path=tmp_path, progress=False)
    assert len(small) == 50
    assert torch.equal(small.y[:, 0], chembl.y[:50, 0])
    assert small.y[0, 1].item() == chembl[0].num_nodes
    (tmp_path / "CHEMBL2321810_act.csv").unlink()
    with pytest.raises(WeightspaceValueError, match=r"lacks the files \['CHEMBL2321810_act.csv'\]"):
        molecules("chembl", path=tmp_path, progress=False)


def test_missing_rdkit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(MissingSourceError, match=r"`pip install rdkit`.*weightspace\[graph\]"):
        molecules("nci", progress=False)


def test_missing_torch_geometric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    with pytest.raises(MissingSourceError, match=r"`pip install torch-geometric`"):
        molecules("chembl", progress=False)
