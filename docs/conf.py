"""Sphinx configuration for the weightspace documentation."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import weightspace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent

project = "weightspace"
author = "The weightspace developers"
copyright = "2026, the weightspace developers"
release = weightspace.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    # MathJax 3 from the wheel, copied into _static/mathjax: formulas render offline.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip"]
html_theme = "alabaster"
html_title = f"weightspace {release}"

# autodoc / autosummary / napoleon (Google style) / typehints
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
typehints_use_rtype = False
typehints_defaults = "comma"
always_use_bars_union = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Shapes", "params_style")]

# The build machines have no network: the inventories are small local files written by
# docs/make_inventories.py and point at the projects' published pages.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "torch": ("https://docs.pytorch.org/docs/stable", "_inventories/torch.inv"),
    "numpy": ("https://numpy.org/doc/stable", "_inventories/numpy.inv"),
}
intersphinx_timeout = 1

# Examples: every script under examples/ is rendered; those named plot_*.py are executed.
sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(__init__|_common|conftest)\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "doc_module": ("weightspace",),
    "backreferences_dir": "api/generated/backreferences",
    "reference_url": {"weightspace": None},
    "matplotlib_animations": False,
    "plot_gallery": os.environ.get("WEIGHTSPACE_DOCS_PLOT_GALLERY", "True"),
}

# Third-party warnings that do not concern our docs.
warnings.filterwarnings("ignore", message=".*torch.jit.*")
warnings.filterwarnings("ignore", message=".*set_application.*")
