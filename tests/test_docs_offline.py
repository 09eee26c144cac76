"""The built documentation reads offline: MathJax is bundled, the gallery's titles are siblings."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_bundle_mathjax() -> None:
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert "sphinx-mathjax-offline" in conf["extensions"]
    assert "sphinx.ext.mathjax" in conf["extensions"]


def test_a_built_page_loads_mathjax_from_its_own_static_folder(tmp_path: Path) -> None:
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("sphinx-mathjax-offline is not installed (the docs extra)")
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["sphinx.ext.mathjax", "sphinx-mathjax-offline"]\n')
    page = "Title\n=====\n\nA formula: :math:`\\theta_0 - \\lambda\\tau`.\n"
    (src / "index.rst").write_text(page)
    out = tmp_path / "html"
    app = Sphinx(
        str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None, warning=None
    )
    app.build()
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-chtml.js"' in html
    assert "cdn.jsdelivr" not in html and "https://" not in html.split("<body")[0]
    assert (out / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000


def test_every_example_folder_title_is_a_top_level_title() -> None:
    """The gallery index puts the folders' README titles one after another: a title with
    another underline than the first one nests under the previous project in the ToC."""
    for readme in sorted((ROOT / "examples").glob("*/README.rst")):
        title, underline = readme.read_text(encoding="utf-8").splitlines()[:2]
        assert set(underline) == {"="} and len(underline) >= len(title), readme
