"""Molecular graphs with real measurements, built from the data files that rdkit ships.

:func:`molecules` returns a :class:`MoleculeDataset`, a sequence of
:class:`torch_geometric.data.Data` graphs (one per molecule) with atom and bond features and
float regression targets. Two sources come with the ``rdkit`` wheel:

* ``"nci"``: the first 5,000 molecules of the NCI open database (4,991 of them parse), with
  their topological polar surface area (TPSA) computed by Ertl's reference program
  (``RDDataDir/NCI/first_5K.smi`` and ``first_5k.tpsa.csv``);
* ``"chembl"``: 1,017 inhibitors from the ChEMBL assay CHEMBL2321810 with their measured
  pIC50 (``RDContribDir/FreeWilson/data/CHEMBL2321810.smi`` and ``CHEMBL2321810_act.csv``).

Any of the descriptors in :attr:`MoleculeDataset.computed_targets` (computed by rdkit) can be
added as further targets, which gives more graph regression tasks on the same molecules.

rdkit and torch_geometric are optional (``pip install 'weightspace[graph]'``); they are imported
when :func:`molecules` is called, not when :mod:`weightspace.data` is imported. Featurised
graphs and computed targets are cached as checked ``.safetensors`` files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from weightspace._cache import cache_dir, cached_file, file_digest
from weightspace._errors import MissingSourceError, WeightspaceError, WeightspaceValueError
from weightspace._optional import require_module

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = ["MoleculeDataset", "molecules"]

logger = logging.getLogger(__name__)

#: Version of the layout of the cached files; bump it to force a rebuild.
_FORMAT_VERSION = 1

Source = Literal["nci", "chembl"]

# ---- features ------------------------------------------------------------------------------

_ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "As", "Se", "Br", "I")
_HYBRIDIZATIONS = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
_CHARGES = (-1, 0, 1)
_BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
_MAX_DEGREE = 5
_MAX_HS = 4

_ATOM_FEATURES: tuple[str, ...] = (
    *(f"element={e}" for e in _ELEMENTS),
    "element=other",
    *(f"degree={d}" for d in range(_MAX_DEGREE)),
    f"degree>={_MAX_DEGREE}",
    *(f"formal_charge={c:+d}" if c else "formal_charge=0" for c in _CHARGES),
    "formal_charge=other",
    *(f"num_hs={h}" for h in range(_MAX_HS)),
    f"num_hs>={_MAX_HS}",
    *(f"hybridization={h}" for h in _HYBRIDIZATIONS),
    "hybridization=other",
    "is_aromatic",
    "is_in_ring",
)
_BOND_FEATURES: tuple[str, ...] = (
    *(f"bond_type={t.lower()}" for t in _BOND_TYPES),
    "bond_type=other",
    "is_conjugated",
    "is_in_ring",
)

# Column offsets of the one-hot blocks in the atom features.
_ELEMENT_AT = 0
_DEGREE_AT = _ELEMENT_AT + len(_ELEMENTS) + 1
_CHARGE_AT = _DEGREE_AT + _MAX_DEGREE + 1
_HS_AT = _CHARGE_AT + len(_CHARGES) + 1
_HYBRID_AT = _HS_AT + _MAX_HS + 1
_AROMATIC_AT = _HYBRID_AT + len(_HYBRIDIZATIONS) + 1
_RING_AT = _AROMATIC_AT + 1
assert len(_ATOM_FEATURES) == _RING_AT + 1

# ---- targets -------------------------------------------------------------------------------

_MEASURED_TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "nci": "tpsa",
        "chembl": "pic50",
    }
)
_MEASURED_DESCRIPTIONS = {
    "tpsa": "topological polar surface area in Å² from Ertl's reference program (NCI only)",
    "pic50": "measured pIC50 = -log10(IC50 / M) in ChEMBL assay CHEMBL2321810 (ChEMBL only)",
}
_COMPUTED_TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "logp": "Wildman-Crippen logP (rdkit.Chem.Crippen.MolLogP)",
        "mr": "Wildman-Crippen molar refractivity (rdkit.Chem.Crippen.MolMR)",
        "tpsa_rdkit": "topological polar surface area in Å² (rdMolDescriptors.CalcTPSA)",
        "mol_weight": "average molecular weight in g/mol (rdkit.Chem.Descriptors.MolWt)",
        "heavy_atoms": "number of heavy (non-hydrogen) atoms",
        "heteroatoms": "number of atoms other than C and H (CalcNumHeteroatoms)",
        "hbd": "number of hydrogen-bond donors (rdMolDescriptors.CalcNumHBD)",
        "hba": "number of hydrogen-bond acceptors (rdMolDescriptors.CalcNumHBA)",
        "rotatable_bonds": "number of rotatable bonds (CalcNumRotatableBonds)",
        "rings": "number of rings in the smallest set of smallest rings (CalcNumRings)",
        "aromatic_rings": "number of aromatic rings (CalcNumAromaticRings)",
        "fraction_csp3": "fraction of carbons that are sp3 (CalcFractionCSP3)",
        "qed": "quantitative estimate of drug-likeness in [0, 1] (rdkit.Chem.QED.qed; slow)",
    }
)

# ---- source files --------------------------------------------------------------------------

_SOURCE_FILES = {
    "nci": ("first_5K.smi", "first_5k.tpsa.csv"),
    "chembl": ("CHEMBL2321810.smi", "CHEMBL2321810_act.csv"),
}


def _rdkit() -> ModuleType:
    return require_module("rdkit", pip="rdkit", extra="graph")


def _default_folder(source: str) -> Path:
    rdkit = _rdkit()
    config = importlib.import_module("rdkit.RDConfig")
    if source == "nci":
        folder = Path(config.RDDataDir) / "NCI"
    else:
        folder = Path(config.RDContribDir) / "FreeWilson" / "data"
    missing = [name for name in _SOURCE_FILES[source] if not (folder / name).is_file()]
    if missing:
        raise MissingSourceError(
            f"the rdkit installation {Path(str(rdkit.__file__)).parent} lacks the data files "
            f"{missing} (looked in {folder}); reinstall it with "
            "`pip install --force-reinstall rdkit`, or pass `path=` a folder holding "
            f"{list(_SOURCE_FILES[source])}"
        )
    return folder


# --------------------------------------------------------------------------------------------
# Reading the sources
# --------------------------------------------------------------------------------------------


def _read_nci(folder: Path) -> tuple[list[str], list[str], list[float]]:
    smi_file, csv_file = (folder / n for n in _SOURCE_FILES["nci"])
    smiles: list[str] = []
    ids: list[str] = []
    for line in smi_file.read_text().splitlines():
        if line.strip():
            fields = line.split()
            smiles.append(fields[0])
            ids.append(fields[1] if len(fields) > 1 else str(len(ids) + 1))
    rows = [
        line.rsplit(",", 1)
        for line in csv_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if len(rows) != len(smiles) or any(
        len(r) != 2 or r[0] != s for r, s in zip(rows, smiles, strict=True)
    ):
        raise WeightspaceError(
            f"{smi_file} and {csv_file} do not list the same molecules in the same order; "
            "pass `path=` a folder with matching copies of both files"
        )
    return smiles, ids, [float(r[1]) for r in rows]


def _read_chembl(folder: Path) -> tuple[list[str], list[str], list[float]]:
    smi_file, csv_file = (folder / n for n in _SOURCE_FILES["chembl"])
    activity: dict[str, float] = {}
    for line in csv_file.read_text().splitlines()[1:]:
        if line.strip():
            name, value = line.split(",")
            activity[name.strip()] = float(value)
    smiles: list[str] = []
    ids: list[str] = []
    values: list[float] = []
    for line in smi_file.read_text().splitlines():
        if not line.strip():
            continue
        smi, name = line.split()[:2]
        if name not in activity:
            logger.warning(
                "molecule %s of %s has no activity in %s; skipped", name, smi_file, csv_file
            )
            continue
        smiles.append(smi)
        ids.append(name)
        values.append(activity[name])
    return smiles, ids, values


# --------------------------------------------------------------------------------------------
# Featurisation
# --------------------------------------------------------------------------------------------


def _one_hot_index(value: Any, choices: Sequence[Any]) -> int:
    try:
        return list(choices).index(value)
    except ValueError:
        return len(choices)


def _featurise(
    smiles: Sequence[str], ids: Sequence[str], measured: Sequence[float], *, progress: bool
) -> dict[str, Tensor]:
    _rdkit()
    chem = importlib.import_module("rdkit.Chem")
    rdbase = importlib.import_module("rdkit.rdBase")
    tqdm = importlib.import_module("tqdm.auto").tqdm

    atom_codes: list[tuple[int, int, int, int, int, int, int]] = []
    bond_codes: list[tuple[int, int, int, int, int]] = []
    node_ptr, edge_ptr = [0], [0]
    kept_smiles: list[str] = []
    kept_ids: list[str] = []
    kept_values: list[float] = []
    skipped = 0
    block = rdbase.BlockLogs()  # rdkit logs parse failures to stderr; we count them instead
    try:
        for smi, name, value in tqdm(
            list(zip(smiles, ids, measured, strict=True)),
            desc="featurising molecules",
            unit="mol",
            disable=not progress,
        ):
            mol = chem.MolFromSmiles(smi)
            if mol is None or mol.GetNumAtoms() == 0:
                skipped += 1
                continue
            for atom in mol.GetAtoms():
                atom_codes.append(
                    (
                        _one_hot_index(atom.GetSymbol(), _ELEMENTS),
                        min(atom.GetDegree(), _MAX_DEGREE),
                        _one_hot_index(atom.GetFormalCharge(), _CHARGES),
                        min(atom.GetTotalNumHs(), _MAX_HS),
                        _one_hot_index(str(atom.GetHybridization()), _HYBRIDIZATIONS),
                        int(atom.GetIsAromatic()),
                        int(atom.IsInRing()),
                    )
                )
            for bond in mol.GetBonds():
                bond_codes.append(
                    (
                        bond.GetBeginAtomIdx(),
                        bond.GetEndAtomIdx(),
                        _one_hot_index(str(bond.GetBondType()), _BOND_TYPES),
                        int(bond.GetIsConjugated()),
                        int(bond.IsInRing()),
                    )
                )
            node_ptr.append(node_ptr[-1] + mol.GetNumAtoms())
            edge_ptr.append(edge_ptr[-1] + 2 * mol.GetNumBonds())
            kept_smiles.append(smi)
            kept_ids.append(name)
            kept_values.append(value)
    finally:
        del block
    if skipped:
        logger.info("skipped %d of %d molecules that rdkit cannot parse", skipped, len(smiles))

    atoms = np.asarray(atom_codes, dtype=np.int64).reshape(-1, 7)
    x = np.zeros((len(atoms), len(_ATOM_FEATURES)), dtype=np.uint8)
    rows = np.arange(len(atoms))
    x[rows, _ELEMENT_AT + atoms[:, 0]] = 1
    x[rows, _DEGREE_AT + atoms[:, 1]] = 1
    x[rows, _CHARGE_AT + atoms[:, 2]] = 1
    x[rows, _HS_AT + atoms[:, 3]] = 1
    x[rows, _HYBRID_AT + atoms[:, 4]] = 1
    x[:, _AROMATIC_AT] = atoms[:, 5]
    x[:, _RING_AT] = atoms[:, 6]

    bonds = np.asarray(bond_codes, dtype=np.int64).reshape(-1, 5)
    one_way = np.zeros((len(bonds), len(_BOND_FEATURES)), dtype=np.uint8)
    one_way[np.arange(len(bonds)), bonds[:, 2]] = 1
    one_way[:, len(_BOND_TYPES) + 1] = bonds[:, 3]
    one_way[:, len(_BOND_TYPES) + 2] = bonds[:, 4]
    # Each bond appears twice, i -> j then j -> i, with the same features; the bonds of one
    # molecule are contiguous, so edge_ptr (2 per bond) delimits its edges.
    edge_index = np.stack([bonds[:, :2], bonds[:, 1::-1]], axis=1).reshape(-1, 2).T
    edge_attr = np.repeat(one_way, 2, axis=0)
    return {
        "x": torch.from_numpy(x),
        "edge_index": torch.from_numpy(np.ascontiguousarray(edge_index)),
        "edge_attr": torch.from_numpy(edge_attr),
        "node_ptr": torch.tensor(node_ptr, dtype=torch.int64),
        "edge_ptr": torch.tensor(edge_ptr, dtype=torch.int64),
        "measured": torch.tensor(kept_values, dtype=torch.float64),
        "smiles": _encode_strings(kept_smiles),
        "ids": _encode_strings(kept_ids),
    }


def _encode_strings(strings: Sequence[str]) -> Tensor:
    data = "\n".join(strings).encode()
    return torch.tensor(list(data), dtype=torch.uint8)


def _decode_strings(tensor: Tensor) -> tuple[str, ...]:
    return tuple(bytes(tensor.to(torch.uint8).numpy()).decode().split("\n"))


def _descriptor_functions() -> dict[str, Any]:
    _rdkit()
    crippen = importlib.import_module("rdkit.Chem.Crippen")
    descriptors = importlib.import_module("rdkit.Chem.Descriptors")
    rd = importlib.import_module("rdkit.Chem.rdMolDescriptors")
    qed = importlib.import_module("rdkit.Chem.QED")
    return {
        "logp": crippen.MolLogP,
        "mr": crippen.MolMR,
        "tpsa_rdkit": rd.CalcTPSA,
        "mol_weight": descriptors.MolWt,
        "heavy_atoms": lambda m: m.GetNumHeavyAtoms(),
        "heteroatoms": rd.CalcNumHeteroatoms,
        "hbd": rd.CalcNumHBD,
        "hba": rd.CalcNumHBA,
        "rotatable_bonds": rd.CalcNumRotatableBonds,
        "rings": rd.CalcNumRings,
        "aromatic_rings": rd.CalcNumAromaticRings,
        "fraction_csp3": rd.CalcFractionCSP3,
        "qed": qed.qed,
    }


def _parse_all(smiles: Sequence[str], *, progress: bool) -> list[Any]:
    chem = importlib.import_module("rdkit.Chem")
    rdbase = importlib.import_module("rdkit.rdBase")
    tqdm = importlib.import_module("tqdm.auto").tqdm
    block = rdbase.BlockLogs()
    try:
        return [
            chem.MolFromSmiles(smi)
            for smi in tqdm(smiles, desc="parsing molecules", unit="mol", disable=not progress)
        ]
    finally:
        del block


def _compute_target(name: str, mols: Sequence[Any], *, progress: bool) -> Tensor:
    tqdm = importlib.import_module("tqdm.auto").tqdm
    fn = _descriptor_functions()[name]
    values = [
        float(fn(mol))
        for mol in tqdm(mols, desc=f"computing {name}", unit="mol", disable=not progress)
    ]
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Store:
    """Concatenated graphs of a whole source; molecule ``i`` owns ``x[node_ptr[i]:...]``."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor
    y: Tensor
    smiles: tuple[str, ...]
    ids: tuple[str, ...]


class MoleculeDataset(Sequence["Data"]):
    r"""An immutable sequence of molecular graphs as :class:`torch_geometric.data.Data`.

    Item ``i`` is a ``Data`` with:

    - ``x``: ``float32`` atom features, the 0/1 columns :attr:`atom_feature_names`: a one-hot
      element over H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I and "other"; one-hot degree
      (0-4, >=5); one-hot formal charge (-1, 0, +1, other); one-hot total hydrogen count (0-3,
      >=4); one-hot hybridisation (SP, SP2, SP3, SP3D, SP3D2, other); aromatic; in a ring
      (38 columns).
    - ``edge_index``: ``int64`` bonds, each in both directions (``i -> j`` then ``j -> i``).
    - ``edge_attr``: ``float32`` bond features, the 0/1 columns :attr:`bond_feature_names`:
      one-hot type (single, double, triple, aromatic, other); conjugated; in a ring
      (7 columns).
    - ``y``: ``float32`` targets, in the order of :attr:`target_names`.
    - ``smiles``: the molecule's SMILES as given in the source.

    Hydrogens are implicit (only their count is a feature). The data set works with
    :class:`torch_geometric.loader.DataLoader` as it is. Indexing with a slice, :meth:`subset`
    and :meth:`split` return new data sets that share the stored tensors.

    Shapes:
        - x: :math:`(n_\text{atoms}, 38)`
        - edge_index: :math:`(2, 2 n_\text{bonds})`
        - edge_attr: :math:`(2 n_\text{bonds}, 7)`
        - y: :math:`(1, n_\text{targets})`

    Example:
        >>> ds = molecules("chembl", targets=("pic50", "logp"))
        >>> ds[0]
        Data(x=[30, 38], edge_index=[2, 66], edge_attr=[66, 7], y=[1, 2], smiles='O=S(=O)...')
        >>> train, val, test = ds.split((0.8, 0.1, 0.1), seed=0)
    """

    atom_feature_names: ClassVar[tuple[str, ...]] = _ATOM_FEATURES
    """Names of the columns of ``x``."""
    bond_feature_names: ClassVar[tuple[str, ...]] = _BOND_FEATURES
    """Names of the columns of ``edge_attr``."""
    computed_targets: ClassVar[Mapping[str, str]] = _COMPUTED_TARGETS
    """Targets rdkit computes for any source: name to description."""
    measured_targets: ClassVar[Mapping[str, str]] = _MEASURED_TARGETS
    """The measured target of each source: source to target name."""

    __slots__ = ("_data_cls", "_index", "_name", "_store", "_target_names")

    def __init__(
        self,
        store: _Store,
        index: Tensor,
        target_names: tuple[str, ...],
        *,
        name: str,
        data_cls: type[Data],
    ) -> None:
        self._store = store
        self._index = index
        self._target_names = target_names
        self._name = name
        self._data_cls = data_cls

    # ---- attributes ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The source of the molecules, such as ``"nci"``."""
        return self._name

    @property
    def target_names(self) -> tuple[str, ...]:
        """The names of the columns of ``y``."""
        return self._target_names

    @property
    def y(self) -> Tensor:
        """All targets as a ``float32`` tensor of shape ``[N, n_targets]`` (a copy)."""
        return self._store.y[self._index]

    @property
    def smiles(self) -> tuple[str, ...]:
        """The SMILES of the molecules, in order."""
        return tuple(self._store.smiles[int(i)] for i in self._index)

    @property
    def ids(self) -> tuple[str, ...]:
        """The source's identifiers of the molecules (NCI numbers, ChEMBL document ids)."""
        return tuple(self._store.ids[int(i)] for i in self._index)

    @property
    def num_node_features(self) -> int:
        """The number of atom features (columns of ``x``)."""
        return len(_ATOM_FEATURES)

    @property
    def num_edge_features(self) -> int:
        """The number of bond features (columns of ``edge_attr``)."""
        return len(_BOND_FEATURES)

    @property
    def num_targets(self) -> int:
        """The number of targets (columns of ``y``)."""
        return len(self._target_names)

    # ---- sequence protocol -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, index: int) -> Data: ...

    @overload
    def __getitem__(self, index: slice) -> MoleculeDataset: ...

    def __getitem__(self, index: int | slice) -> Data | MoleculeDataset:
        if isinstance(index, slice):
            return self._with_index(self._index[index])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"molecule index {index} is out of range for {n} molecules")
        s = self._store
        j = int(self._index[index])
        a0, a1 = int(s.node_ptr[j]), int(s.node_ptr[j + 1])
        e0, e1 = int(s.edge_ptr[j]), int(s.edge_ptr[j + 1])
        return self._data_cls(
            x=s.x[a0:a1],
            edge_index=s.edge_index[:, e0:e1],
            edge_attr=s.edge_attr[e0:e1],
            y=s.y[j : j + 1],
            smiles=s.smiles[j],
        )

    def __iter__(self) -> Iterator[Data]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"MoleculeDataset({self._name!r}, n={len(self)}, targets={list(self._target_names)})"

    # ---- derived data sets -----------------------------------------------------------------

    def _with_index(self, index: Tensor) -> MoleculeDataset:
        return MoleculeDataset(
            self._store, index, self._target_names, name=self._name, data_cls=self._data_cls
        )

    def subset(self, indices: Sequence[int] | Tensor) -> MoleculeDataset:
        """Return the molecules at some positions as a new data set.

        Args:
            indices: Positions in this data set, in the order wanted (may repeat), or a
                boolean mask of length ``len(self)``.

        Returns:
            A new data set sharing the stored tensors; ``self`` is unchanged.

        Raises:
            WeightspaceValueError: if an index is out of range or ``indices`` is not 1-D ints.
        """
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise WeightspaceValueError(
                    f"a boolean `indices` mask must have shape ({len(self)},), got "
                    f"{tuple(index.shape)}"
                )
            index = index.nonzero().squeeze(1)
        elif index.numel() == 0:
            index = torch.zeros(0, dtype=torch.int64)
        elif index.is_floating_point() or index.is_complex() or index.ndim != 1:
            raise WeightspaceValueError(
                f"`indices` must be a 1-D sequence of ints or a boolean mask, got a "
                f"{index.dtype} tensor of shape {list(index.shape)}"
            )
        index = index.to(torch.int64)
        bad = (index < -len(self)) | (index >= len(self))
        if bool(bad.any()):
            raise WeightspaceValueError(
                f"`indices` must lie in [{-len(self)}, {len(self)}), got "
                f"{index[bad][:5].tolist()}; the data set holds {len(self)} molecules"
            )
        return self._with_index(self._index[index])

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
    ) -> tuple[MoleculeDataset, ...]:
        """Split the molecules at random into disjoint parts.

        A random permutation (from a :class:`torch.Generator` seeded with ``seed``) is cut at
        ``round(n * cumsum(fractions))``; each part keeps the original order of its molecules.
        The result depends only on ``len(self)``, ``fractions`` and ``seed``.

        Args:
            fractions: Non-negative fractions that sum to 1, one per part.
            seed: Seed of the permutation.

        Returns:
            One data set per fraction; together they hold every molecule once.

        Raises:
            WeightspaceValueError: if ``fractions`` is empty, has a negative entry or does not
                sum to 1, or ``seed`` is not an int.

        Example:
            >>> train, val, test = molecules("nci").split((0.8, 0.1, 0.1))
            >>> len(train), len(val), len(test)
            (3993, 499, 499)
        """
        try:
            values = [float(f) for f in fractions]
        except (TypeError, ValueError):
            values = []
        if not values or any(not f >= 0.0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
            raise WeightspaceValueError(
                f"`fractions` must be non-negative numbers that sum to 1, got {fractions!r}; "
                "pass e.g. `(0.8, 0.1, 0.1)`"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise WeightspaceValueError(f"`seed` must be an int, got {seed!r}; pass e.g. `seed=0`")
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        bounds = [0, *(round(n * c) for c in np.cumsum(values))]
        bounds[-1] = n
        return tuple(
            self._with_index(self._index[order[a:b].sort().values])
            for a, b in itertools.pairwise(bounds)
        )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _check_targets(source: str, targets: Sequence[str] | None) -> tuple[str, ...]:
    valid = [_MEASURED_TARGETS[source], *_COMPUTED_TARGETS]
    if targets is None:
        return (_MEASURED_TARGETS[source],)
    if isinstance(targets, str):
        raise WeightspaceValueError(
            f"`targets` must be a sequence of target names, got the string {targets!r}; "
            f"pass `targets=({targets!r},)`"
        )
    names = tuple(targets)
    unknown = [t for t in names if t not in valid]
    if unknown or not names:
        other_source = "chembl" if source == "nci" else "nci"
        other = _MEASURED_TARGETS[other_source]
        hint = (
            f" (`{other}` is measured only for source={other_source!r})" if other in unknown else ""
        )
        raise WeightspaceValueError(
            f"`targets` must be a non-empty sequence of names from {valid} for "
            f"source={source!r}, got {list(names)}; unknown: {unknown}{hint}"
        )
    if len(set(names)) != len(names):
        raise WeightspaceValueError(
            f"`targets` lists a target twice: {list(names)}; pass each name once"
        )
    return names


def _rdkit_version() -> str:
    return str(getattr(_rdkit(), "__version__", "unknown"))


def molecules(
    source: Source = "nci",
    *,
    targets: Sequence[str] | None = None,
    path: str | Path | None = None,
    progress: bool = True,
) -> MoleculeDataset:
    """Load molecular graphs with measured (and optionally rdkit-computed) targets.

    Sources (both ship with the ``rdkit`` wheel):

    - ``"nci"``: 4,991 molecules from the NCI open database (the parsable ones of its first
      5,000); measured target ``"tpsa"``, the topological polar surface area (Å²) from
      Ertl's reference program.
    - ``"chembl"``: 1,017 ChEMBL inhibitors from assay CHEMBL2321810; measured target
      ``"pic50"`` (about 4.3 to 9.2).

    Further targets computed by rdkit (:attr:`MoleculeDataset.computed_targets`): ``"logp"``,
    ``"mr"``, ``"tpsa_rdkit"``, ``"mol_weight"``, ``"heavy_atoms"``, ``"heteroatoms"``,
    ``"hbd"``, ``"hba"``, ``"rotatable_bonds"``, ``"rings"``, ``"aromatic_rings"``,
    ``"fraction_csp3"``, ``"qed"``.

    The first call featurises the molecules (a few seconds for ``"nci"``) and computes the
    requested targets; both are cached, keyed on the rdkit version and the source files.

    Args:
        source: ``"nci"`` or ``"chembl"``.
        targets: Target names, the columns of ``y`` in this order. Default: the source's
            measured target, ``("tpsa",)`` for ``"nci"`` and ``("pic50",)`` for ``"chembl"``.
        path: A folder holding the source's files (``first_5K.smi`` and
            ``first_5k.tpsa.csv`` for ``"nci"``; ``CHEMBL2321810.smi`` and
            ``CHEMBL2321810_act.csv`` for ``"chembl"``). ``None`` uses rdkit's copies.
        progress: Show a progress bar while featurising and computing targets.

    Returns:
        A :class:`MoleculeDataset`.

    Raises:
        MissingSourceError: if rdkit or torch_geometric is not installed (the message names
            ``pip install 'weightspace[graph]'``).
        WeightspaceValueError: if ``source``, ``targets`` or ``path`` is invalid; an unknown
            target name is reported with the list of valid names.

    Example:
        >>> ds = molecules("nci", targets=("tpsa", "logp"), progress=False)
        >>> len(ds), ds.target_names, ds.num_node_features
        (4991, ('tpsa', 'logp'), 38)
    """
    if not isinstance(source, str) or source not in _SOURCE_FILES:
        raise WeightspaceValueError(
            f"`source` must be one of {list(_SOURCE_FILES)}, got {source!r}; pass one of those"
        )
    names = _check_targets(source, targets)
    if path is None:
        folder = _default_folder(source)
        key = "rdkit"
    else:
        _rdkit()
        if not isinstance(path, (str, Path)) or not Path(path).expanduser().is_dir():
            raise WeightspaceValueError(
                f"`path` must be an existing folder holding {list(_SOURCE_FILES[source])}, got "
                f"{path!r}; pass that folder, or `path=None` for rdkit's copies"
            )
        folder = Path(path).expanduser().resolve()
        missing = [n for n in _SOURCE_FILES[source] if not (folder / n).is_file()]
        if missing:
            raise WeightspaceValueError(
                f"`path` {str(folder)!r} lacks the files {missing}; pass a folder holding "
                f"{list(_SOURCE_FILES[source])}"
            )
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    pyg_data = require_module("torch_geometric.data", pip="torch-geometric", extra="graph")

    files = [folder / n for n in _SOURCE_FILES[source]]
    version = _rdkit_version()
    meta = {
        "format_version": _FORMAT_VERSION,
        "rdkit": version,
        "sources": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    }
    folder_cache = cache_dir("molecules")

    def build_graphs(tmp: Path) -> None:
        logger.info("featurising the %s molecules from %s", source, folder)
        reader = _read_nci if source == "nci" else _read_chembl
        arrays = _featurise(*reader(folder), progress=progress)
        save_file(arrays, str(tmp), metadata={"format_version": str(_FORMAT_VERSION)})

    graphs_path = cached_file(
        folder_cache / f"{source}-{key}-graphs.safetensors", build_graphs, meta=meta
    )
    with safe_open(str(graphs_path), framework="pt") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    smiles = _decode_strings(arrays["smiles"])
    graphs_digest = file_digest(graphs_path)

    columns: list[Tensor] = []
    parsed: list[list[Any]] = []  # molecules parsed once, shared by the targets being built
    for name in names:
        if name == _MEASURED_TARGETS[source]:
            columns.append(arrays["measured"])
            continue

        def build_target(tmp: Path, name: str = name) -> None:
            logger.info("computing the target %s of the %s molecules", name, source)
            if not parsed:
                parsed.append(_parse_all(smiles, progress=progress))
            values = _compute_target(name, parsed[0], progress=progress)
            save_file({"values": values}, str(tmp))

        target_path = cached_file(
            folder_cache / f"{source}-{key}-{name}.safetensors",
            build_target,
            meta={"format_version": _FORMAT_VERSION, "rdkit": version, "graphs": graphs_digest},
        )
        with safe_open(str(target_path), framework="pt") as f:
            columns.append(f.get_tensor("values"))

    store = _Store(
        x=arrays["x"].to(torch.float32),
        edge_index=arrays["edge_index"],
        edge_attr=arrays["edge_attr"].to(torch.float32),
        node_ptr=arrays["node_ptr"],
        edge_ptr=arrays["edge_ptr"],
        y=torch.stack(columns, dim=1).to(torch.float32),
        smiles=smiles,
        ids=_decode_strings(arrays["ids"]),
    )
    index = torch.arange(len(smiles), dtype=torch.int64)
    return MoleculeDataset(store, index, names, name=source, data_cls=pyg_data.Data)
