"""Write the small intersphinx inventories that let the docs link to Python, PyTorch and NumPy.

The docs are built where the network is closed, so intersphinx cannot fetch the projects' own
``objects.inv``. This script writes Sphinx (v2) inventories for the external names that our
signatures and docstrings use, pointing at the projects' published pages. Run it again when
the API starts to mention a new external name:

    python docs/make_inventories.py
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).parent / "_inventories"

# name -> (role, page relative to the project's root URL)
PYTHON = {
    **{
        f"collections.abc.{n}": ("class", "library/collections.abc.html")
        for n in ("Mapping", "Sequence", "Callable", "Iterator", "Iterable", "MutableMapping")
    },
    **{
        f"typing.{n}": ("data", "library/typing.html")
        for n in ("Any", "Literal", "Optional", "Union", "Protocol", "TypeVar")
    },
    "pathlib.Path": ("class", "library/pathlib.html"),
    "os.PathLike": ("class", "library/os.html"),
    "logging.Logger": ("class", "library/logging.html"),
    "argparse.ArgumentParser": ("class", "library/argparse.html"),
    **{
        n: ("class", "library/stdtypes.html")
        for n in ("str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "set")
    },
    **{
        n: ("exception", "library/exceptions.html")
        for n in (
            "Exception",
            "ValueError",
            "ImportError",
            "FileNotFoundError",
            "OSError",
            "TypeError",
            "KeyError",
        )
    },
    "None": ("data", "library/constants.html"),
    "dataclasses.dataclass": ("function", "library/dataclasses.html"),
}

TORCH = {
    "torch.Tensor": ("class", "tensors.html"),
    "torch.dtype": ("class", "tensor_attributes.html"),
    "torch.device": ("class", "tensor_attributes.html"),
    "torch.Generator": ("class", "generated/torch.Generator.html"),
    "torch.Size": ("class", "size.html"),
    "torch.nn.Module": ("class", "generated/torch.nn.Module.html"),
    "torch.nn.Linear": ("class", "generated/torch.nn.Linear.html"),
    "torch.nn.Conv2d": ("class", "generated/torch.nn.Conv2d.html"),
    "torch.nn.Parameter": ("class", "generated/torch.nn.parameter.Parameter.html"),
    "torch.utils.data.Dataset": ("class", "data.html"),
    "torch.utils.data.DataLoader": ("class", "data.html"),
    "torch.load": ("function", "generated/torch.load.html"),
    "torch.save": ("function", "generated/torch.save.html"),
}

NUMPY = {
    "numpy.ndarray": ("class", "reference/generated/numpy.ndarray.html"),
    "numpy.dtype": ("class", "reference/generated/numpy.dtype.html"),
    "numpy.random.Generator": ("class", "reference/random/generator.html"),
}


def write(path: Path, project: str, version: str, entries: dict[str, tuple[str, str]]) -> None:
    """Write one inventory file in Sphinx's v2 format."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = [f"{name} py:{role} 1 {page}#$ -\n" for name, (role, page) in sorted(entries.items())]
    path.write_bytes(header.encode() + zlib.compress("".join(lines).encode()))


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    write(HERE / "python.inv", "Python", "3", PYTHON)
    write(HERE / "torch.inv", "PyTorch", "stable", TORCH)
    write(HERE / "numpy.inv", "NumPy", "stable", NUMPY)
    print(f"wrote 3 inventories to {HERE}")
