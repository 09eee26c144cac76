"""Sentences from Debian packages (WordNet glosses, fortunes) and the split by document."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightspace import MissingSourceError, WeightspaceValueError
from weightspace.text import Sentence, fortunes, split_by_document, wordnet_glosses


def test_wordnet_parsing_on_a_small_file(tmp_path: Path) -> None:
    header = "  1 This software and database is being provided\n"
    noun = (
        header + "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000"
        ' | a member of the genus Canis; domesticated by man; "the dog barked all night"  \n'
    )
    (tmp_path / "data.noun").write_text(noun)
    for pos in ("verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(header)
    got = wordnet_glosses(path=tmp_path, min_chars=5)
    assert got == [
        Sentence("a member of the genus Canis; domesticated by man", "noun:02084071", "definition"),
        Sentence("the dog barked all night", "noun:02084071", "example"),
    ]
    assert wordnet_glosses(path=tmp_path, min_chars=30) == got[:1]


def test_fortunes_parsing(tmp_path: Path) -> None:
    (tmp_path / "wisdom").write_text(
        "A clash of doctrine is not a disaster.\n%\nAnother one,\nover two lines.\n"
        "\t\t-- Someone\n%\n\tAn indented poem line\n%\nshort\n%\n"
    )
    got = fortunes(files=["wisdom"], path=tmp_path, min_chars=10)
    assert [(s.text, s.document) for s in got] == [
        ("A clash of doctrine is not a disaster.", "wisdom:0"),
        ("Another one, over two lines.", "wisdom:1"),
    ]
    with pytest.raises(MissingSourceError, match="apt-get install -y fortunes"):
        fortunes(files=["nothere"], path=tmp_path)


def test_split_by_document_keeps_documents_whole() -> None:
    sents = [Sentence(f"s{i}", f"d{i % 7}", "definition") for i in range(70)]
    parts = split_by_document(sents, (0.6, 0.2, 0.2), seed=3)
    docs = [{s.document for s in p} for p in parts]
    assert [len(d) for d in docs] == [4, 2, 1]  # round(0.6 * 7), round(0.8 * 7) - 4, rest
    assert not (docs[0] & docs[1]) and not (docs[0] & docs[2]) and not (docs[1] & docs[2])
    assert sorted(s.text for p in parts for s in p) == sorted(s.text for s in sents)
    assert parts == split_by_document(sents, (0.6, 0.2, 0.2), seed=3)
    assert parts != split_by_document(sents, (0.6, 0.2, 0.2), seed=4)
    with pytest.raises(WeightspaceValueError, match="`fractions` must be positive and sum to 1"):
        split_by_document(sents, (0.5, 0.6))


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="wordnet-base")
def test_the_installed_wordnet() -> None:
    sents = wordnet_glosses()
    assert 130_000 < len(sents) < 140_000
    assert sents[1] == Sentence(
        "an entity that has physical existence", "noun:00001930", "definition"
    )
    assert all(20 <= len(s.text) <= 120 for s in sents)
