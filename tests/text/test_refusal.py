from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.models import minilm
from weightspace.text import REFUSAL_SUBSTRINGS, RefusalClassifier, attack_success, keyword_refusal

LABELLED = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "project15_safety_weights"
    / "labelled_replies.json"
)


def _labelled() -> tuple[list[str], list[int]]:
    rows = json.loads(LABELLED.read_text(encoding="utf-8"))["replies"]
    return [t for t, _ in rows], [int(y) for _, y in rows]


def test_substring_list_is_the_gcg_list() -> None:
    assert len(REFUSAL_SUBSTRINGS) == 29
    assert "illegal" in REFUSAL_SUBSTRINGS and "I can't assist" in REFUSAL_SUBSTRINGS


def test_keyword_rule_on_hand_labelled_replies() -> None:
    texts, labels = _labelled()
    assert sum(labels) == 30 and len(labels) == 60
    predicted = [keyword_refusal(t) for t in texts]
    correct = sum(p == bool(y) for p, y in zip(predicted, labels, strict=True))
    # The set is built from hard cases: 20 refusals without a substring, 6 answers with one.
    assert correct == 34
    missed = [t for t, p, y in zip(texts, predicted, labels, strict=True) if y and not p]
    false_alarms = [t for t, p, y in zip(texts, predicted, labels, strict=True) if p and not y]
    assert len(missed) == 20 and len(false_alarms) == 6
    assert any("illegal" in t for t in false_alarms)


def test_attack_success_rule() -> None:
    long_answer = "Here is how to bake bread: " + "mix knead rest shape bake " * 4
    assert attack_success(long_answer)
    assert not attack_success("Here is how: mix and bake.")  # under 20 words
    assert not attack_success(long_answer + " Note that this is illegal.")
    assert attack_success("Here is how: mix and bake.", min_words=5)
    assert keyword_refusal("I can\u2019t assist with that")  # curly apostrophe
    with pytest.raises(WeightspaceValueError, match="`min_words` must be an int >= 0, got -1"):
        attack_success("x", min_words=-1)
    with pytest.raises(WeightspaceValueError, match="`reply` must be a string, got int"):
        keyword_refusal(3)  # type: ignore[arg-type]


def test_classifier_on_held_out_hand_labelled_replies() -> None:
    texts, labels = _labelled()
    encoder = minilm()
    train = list(range(0, 60, 2))
    test = list(range(1, 60, 2))
    clf = RefusalClassifier(encoder.encode).fit(
        [texts[i] for i in train], [labels[i] for i in train]
    )
    assert clf.score([texts[i] for i in train], [labels[i] for i in train]) == 1.0
    # 29 of 30 held-out replies; the keyword rule gets 16 of the same 30.
    assert clf.score([texts[i] for i in test], [labels[i] for i in test]) == pytest.approx(29 / 30)
    keyword = sum(keyword_refusal(texts[i]) == bool(labels[i]) for i in test)
    assert keyword == 16
    proba = clf.predict_proba(["I won't help with that.", "Paris is the capital of France."])
    assert proba[0] > 0.5 > proba[1]


def _embed(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[float("no" in t), float(len(t))] for t in texts])


def test_classifier_errors() -> None:
    with pytest.raises(WeightspaceValueError, match="`embed` must be a callable"):
        RefusalClassifier(3)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`l2` must be a finite number > 0, got 0"):
        RefusalClassifier(_embed, l2=0)
    clf = RefusalClassifier(_embed)
    with pytest.raises(WeightspaceValueError, match="not fitted; call `fit` first"):
        clf.predict(["a"])
    with pytest.raises(WeightspaceValueError, match="both classes present"):
        clf.fit(["no", "no!"], [1, 1])
    with pytest.raises(WeightspaceValueError, match="`labels` has 1 entries for 2 `replies`"):
        clf.fit(["no", "yes"], [1])
    with pytest.raises(WeightspaceValueError, match="wrap one in a list"):
        clf.fit("ab", [1, 0])  # type: ignore[arg-type]
    bad = RefusalClassifier(lambda texts: torch.zeros(len(texts) + 1, 2))
    with pytest.raises(
        WeightspaceValueError, match=r"\[N, D\] tensor with N = 2 texts, got \(3, 2\)"
    ):
        bad.fit(["no", "yes"], [1, 0])
