from __future__ import annotations

import collections
from pathlib import Path

import pytest

from weightspace import MissingSourceError, WeightspaceValueError
from weightspace.data import (
    HARMFUL_SOURCES,
    LabelledPrompt,
    benign_instructions,
    harmful_prompts,
    split_prompts,
)


def test_harmful_prompt_counts_by_source_and_category() -> None:
    prompts = harmful_prompts()
    by_source = collections.Counter(p.source for p in prompts)
    # Do-Not-Answer ships 939 prompts with one exact duplicate (in information_hazard).
    assert by_source == {"donotanswer": 938, "harmbench": 200, "strongreject": 313}
    assert set(HARMFUL_SOURCES) == set(by_source)
    assert all(p.harmful and p.reference is None for p in prompts)
    dna = collections.Counter(p.category for p in prompts if p.source == "donotanswer")
    assert len(dna) == 5 and dna["information_hazard"] == 247
    sr = collections.Counter(p.category for p in prompts if p.source == "strongreject")
    assert sr["Non-violent crimes"] == 59 and sum(sr.values()) == 313
    assert len({p.item for p in prompts}) == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)


def test_harmful_prompts_one_source_and_errors() -> None:
    hb = harmful_prompts(["harmbench"])
    assert len(hb) == 200 and {p.category for p in hb} == {"harmbench"}
    assert hb[0].item == "harmbench:0"
    with pytest.raises(WeightspaceValueError, match=r"`sources` must name prompt sets"):
        harmful_prompts(["advbench"])
    with pytest.raises(WeightspaceValueError, match="wrap it in a list"):
        harmful_prompts("harmbench")


def test_benign_instructions_are_reproducible_and_grounded() -> None:
    a = benign_instructions(50, seed=3)
    b = benign_instructions(50, seed=3)
    assert a == b and len(a) == 50
    assert benign_instructions(50, seed=4) != a
    for p in a:
        assert not p.harmful and p.source == "wordnet"
        assert p.category.split(".")[0] in ("noun", "verb")
        assert p.reference
        word = p.text.split('"')[1]
        assert word.isalpha() and word.islower() and len(word) >= 4
        if p.text.startswith("What does"):
            assert p.reference.startswith(f'The word "{word}" means ')
        if p.text.startswith("Use the word"):
            assert word in p.reference


def test_benign_instructions_from_a_small_wordnet_folder(tmp_path: Path) -> None:
    lines = [
        "  1 This software and database is being provided",
        "00001740 03 n 01 entity 0 000 | that which is perceived to exist",
        "02084071 05 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis; "
        '"the dog barked all night"',
        "02084072 05 n 01 Rex 0 000 | a name",
    ]
    (tmp_path / "data.noun").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = benign_instructions(path=tmp_path, pos=["noun"], seed=0)
    # "dog" is too short, "Rex" capitalised: only "entity" (noun.Tops) is kept.
    assert [(p.category, p.item) for p in out] == [("noun.Tops", "noun:00001740")]
    assert out[0].reference in (
        'The word "entity" means that which is perceived to exist.',
        "Entity: that which is perceived to exist.",
    )
    with pytest.raises(MissingSourceError, match="wordnet-base"):
        benign_instructions(path=tmp_path, pos=["verb"])
    with pytest.raises(WeightspaceValueError, match=r"`n`=5 exceeds the 1 benign"):
        benign_instructions(5, path=tmp_path, pos=["noun"])
    with pytest.raises(WeightspaceValueError, match="`pos` must be a list"):
        benign_instructions(pos="noun")


def _prompts() -> list[LabelledPrompt]:
    return [
        LabelledPrompt(f"q{i}", "st"[i // 4], "abc"[i % 3], False, None, str(i // 2))
        for i in range(8)
    ]


def test_split_by_category_and_source_keeps_groups_apart() -> None:
    ps = _prompts()
    train, test = split_prompts(ps, by="category", test=["c"])
    assert [p.text for p in test] == ["q2", "q5"]
    assert [p.text for p in train] == ["q0", "q1", "q3", "q4", "q6", "q7"]
    train, test = split_prompts(ps, by="source", test=["t"])
    assert [p.text for p in test] == ["q4", "q5", "q6", "q7"]
    train, test = split_prompts(ps, by="item", test=0.5, seed=0)
    assert len(test) == 4 and {p.item for p in train}.isdisjoint({p.item for p in test})
    assert split_prompts(ps, by="item", test=0.5, seed=0) == (train, test)


def test_split_errors() -> None:
    ps = _prompts()
    with pytest.raises(WeightspaceValueError, match="no prompt has: \\['z'\\]"):
        split_prompts(ps, by="category", test=["z"])
    with pytest.raises(WeightspaceValueError, match="empty side"):
        split_prompts(ps, by="source", test=["s", "t"])
    with pytest.raises(WeightspaceValueError, match=r"`test` must be a fraction in \(0, 1\)"):
        split_prompts(ps, test=1.5)
    with pytest.raises(WeightspaceValueError, match="`by` must be"):
        split_prompts(ps, by="topic")  # type: ignore[arg-type]
