"""The memory-lean attribution path equals the plain one exactly.

``iter_snip``/``iter_wanda`` yield the scores of ``snip``/``wanda`` one parameter at a time;
``top_ranking`` keeps the best ``k`` of them; its masks must be ``top_k``'s entry for entry,
ties included (scores drawn from a few integers make many ties).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from weightspace import WeightspaceValueError, saliency, text


def _equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def _tiny_llama() -> tuple[nn.Module, list[Tensor]]:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (6, 12), generator=g)
    return model, [ids[i : i + 1] for i in range(6)]


@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    levels=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_ranking_masks_equal_top_k_with_ties(
    sizes: list[int], levels: int, seed: int, data: st.DataObject
) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = {
        f"p{i}": torch.randint(0, levels, (n,), generator=g).to(torch.float32)
        for i, n in enumerate(sizes)
    }
    total = sum(sizes)
    keep = data.draw(st.integers(0, total))
    count = data.draw(st.integers(0, keep))
    lazy = top_ranking_of_iter(scores, keep)
    assert lazy.kept == keep and lazy.total == total
    assert _equal(lazy.mask(k=count), saliency.top_k(scores, k=count))
    assert _equal(
        saliency.top_ranking(scores, k=keep).mask(k=count), saliency.top_k(scores, k=count)
    )


def top_ranking_of_iter(scores: dict[str, Tensor], keep: int) -> saliency.Ranking:
    """A ranking read from a one-shot generator (as iter_snip gives)."""

    def gen() -> Iterator[tuple[str, Tensor]]:
        yield from scores.items()

    return saliency.top_ranking(gen(), k=keep)


def test_ranking_of_many_tensors_merges_in_batches() -> None:
    # k smaller than one tensor and than the whole: several merges, the bar in use.
    g = torch.Generator().manual_seed(3)
    scores = {f"w{i}": torch.rand(50, 40, generator=g).round(decimals=2) for i in range(6)}
    r = saliency.top_ranking(scores, k=700)
    for c in (0, 1, 699, 700):
        assert _equal(r.mask(k=c), saliency.top_k(scores, k=c))
    assert _equal(
        saliency.top_ranking(scores, fraction=0.05).mask(fraction=0.05),
        saliency.top_k(scores, fraction=0.05),
    )
    assert r.count(0.05) == 600
    assert r.values.tolist() == sorted(r.values.tolist(), reverse=True)


def test_lean_scores_and_masks_equal_plain_on_a_small_language_model() -> None:
    model, seqs = _tiny_llama()
    rows = text.sft_blocks(
        [("what is a cat", "a small animal"), ("name a colour", "red"), ("count", "one two")],
        text.char_tokenizer("abcdefghijklmnopqrstuvwxyz "),
        max_length=40,
    )
    model.resize_token_embeddings(max(40, int(rows.input_ids.max()) + 1))
    names = [n for n, _ in model.named_parameters() if n.endswith("proj.weight")]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    plain_snip = saliency.snip(model, rows, loss=text.causal_lm_loss, batch_size=2)
    lazy_snip = dict(saliency.iter_snip(model, rows, loss=text.causal_lm_loss, batch_size=2))
    assert _equal(lazy_snip, plain_snip)
    plain_wanda = saliency.wanda(model, iter(seqs), batch_size=1)
    assert _equal(dict(saliency.iter_wanda(model, iter(seqs), batch_size=1)), plain_wanda)
    total = sum(s.numel() for s in plain_snip.values())
    for plain, lazy in (
        (plain_snip, saliency.iter_snip(model, rows, loss=text.causal_lm_loss, batch_size=2)),
        (plain_wanda, saliency.iter_wanda(model, iter(seqs), batch_size=1)),
    ):
        ranking = saliency.top_ranking(lazy, fraction=0.2, total=total)
        for p in (0.01, 0.1, 0.2):
            assert _equal(ranking.mask(fraction=p), saliency.top_k(plain, fraction=p))
    # The set difference from rankings equals the plain one.
    p, q = 0.05, 0.1
    plain_diff = saliency.difference(
        saliency.top_k(plain_snip, fraction=p), saliency.top_k(plain_wanda, fraction=q)
    )
    lean_diff = saliency.difference(
        saliency.top_ranking(plain_snip, fraction=p).mask(fraction=p),
        saliency.top_ranking(plain_wanda, fraction=q).mask(fraction=q),
    )
    assert _equal(lean_diff, plain_diff)
    assert saliency.mask_stats(lean_diff).selected > 0


def test_iterators_compute_nothing_until_read() -> None:
    net = nn.Linear(3, 2)
    bad = saliency.iter_snip(net, "not data")  # no error yet: nothing ran
    with pytest.raises(WeightspaceValueError):
        next(bad)
    assert [n for n, _ in saliency.iter_wanda(net, torch.randn(4, 3))] == ["weight", "bias"]


def test_ranking_errors_name_the_argument() -> None:
    s = {"w": torch.tensor([1.0, 2.0, 3.0])}
    with pytest.raises(WeightspaceValueError, match="ranking kept 1"):
        saliency.top_ranking(s, k=1).mask(k=2)
    with pytest.raises(WeightspaceValueError, match="`fraction` needs the number of entries"):
        saliency.top_ranking(iter(s.items()), fraction=0.5)
    with pytest.raises(WeightspaceValueError, match="`total` is 5 but the scores held 3"):
        saliency.top_ranking(iter(s.items()), fraction=0.5, total=5)
    with pytest.raises(WeightspaceValueError, match="`k` is 4 but there are only 3"):
        saliency.top_ranking(iter(s.items()), k=4)
    with pytest.raises(WeightspaceValueError, match="holds NaN"):
        saliency.top_ranking({"w": torch.tensor([float("nan")])}, k=1)
    with pytest.raises(WeightspaceValueError, match="floating-point"):
        saliency.top_ranking({"w": torch.tensor([1, 2])}, k=1)
    with pytest.raises(WeightspaceValueError, match="twice"):
        saliency.top_ranking(iter([("w", s["w"]), ("w", s["w"])]), k=1)
    with pytest.raises(WeightspaceValueError, match="is empty"):
        saliency.top_ranking(iter([]), k=0)
    with pytest.raises(WeightspaceValueError, match="iterable of"):
        saliency.top_ranking("w", k=1)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`k` must be a non-negative int"):
        saliency.top_ranking(s, k=-1)
