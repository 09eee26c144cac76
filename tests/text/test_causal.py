"""Causal LM support: token blocks, the masked loss, metrics of known distributions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from weightspace import WeightspaceValueError
from weightspace.text import (
    IGNORE_INDEX,
    LMEvaluation,
    TokenBlocks,
    bits_per_byte,
    causal_lm_loss,
    char_tokenizer,
    chunk_texts,
    evaluate_lm,
    fertility,
    pack_texts,
    perplexity,
    prompt_ids,
    sft_blocks,
)

pytest.importorskip("transformers")

TOK = char_tokenizer("abc ")  # ids: <pad> 0, <s> 1, </s> 2, a 3, b 4, c 5, ' ' 6, ...


class FixedDistribution(torch.nn.Module):
    """A 'language model' whose next-token distribution is always ``probs``."""

    def __init__(self, probs: Tensor) -> None:
        super().__init__()
        self.register_buffer("log_probs", probs.log())

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.log_probs.expand(*input_ids.shape, -1).clone()


def _probs(values: dict[int, float]) -> Tensor:
    p = torch.zeros(len(TOK), dtype=torch.float64)
    for i, v in values.items():
        p[i] = v
    return p / p.sum()


# ---- token blocks -------------------------------------------------------------------------


def test_pack_texts_concatenates_with_separators_and_drops_the_remainder() -> None:
    blocks = pack_texts(["abc", "ba", "cab"], TOK, block_size=4)
    assert blocks.input_ids.tolist() == [[3, 4, 5, 2], [4, 3, 2, 5]]
    assert blocks.labels.tolist() == blocks.input_ids.tolist()
    assert blocks.attention_mask.tolist() == [[1] * 4] * 2
    assert blocks.documents.tolist() == [-1, -1]
    kept = pack_texts(["abc", "ba", "cab"], TOK, block_size=4, drop_last=False)
    assert kept.input_ids.tolist()[-1] == [3, 4, 2, 0]
    assert kept.labels.tolist()[-1] == [3, 4, 2, IGNORE_INDEX]
    assert kept.tokens == 11 and len(kept) == 3


def test_pack_texts_refuses_a_corpus_shorter_than_a_block() -> None:
    with pytest.raises(WeightspaceValueError, match=r"fewer than `block_size`=64"):
        pack_texts(["ab"], TOK, block_size=64)
    with pytest.raises(WeightspaceValueError, match="wrap one in a list"):
        pack_texts("abc", TOK, block_size=2)
    with pytest.raises(WeightspaceValueError, match=r"`block_size` must be an int >= 2, got 1"):
        pack_texts(["abc"], TOK, block_size=1)


def test_chunk_texts_predicts_every_token_once_across_windows() -> None:
    blocks = chunk_texts(["abcab", "c"], TOK, block_size=4)
    assert blocks.input_ids.tolist() == [[1, 3, 4, 5], [5, 3, 4, 2], [1, 5, 2, 0]]
    assert blocks.labels.tolist() == [
        [IGNORE_INDEX, 3, 4, 5],
        [IGNORE_INDEX, 3, 4, 2],
        [IGNORE_INDEX, 5, 2, IGNORE_INDEX],
    ]
    assert blocks.documents.tolist() == [0, 0, 1]
    # 5 + 1 characters, each followed by the end token: 8 targets
    assert blocks.target_tokens == 8
    no_end = chunk_texts(["abcab"], TOK, block_size=100, include_end=False)
    assert no_end.input_ids.tolist() == [[1, 3, 4, 5, 3, 4]]


def test_token_blocks_check_shapes() -> None:
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(WeightspaceValueError, match=r"`labels` has shape \(2, 4\)"):
        TokenBlocks(ids, ids, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(WeightspaceValueError, match=r"`documents` must hold one index per row"):
        TokenBlocks(ids, ids, ids, torch.zeros(3, dtype=torch.long))


# ---- prompts and the response-only loss ---------------------------------------------------


def test_prompt_ids_use_the_chat_template_and_a_system_message() -> None:
    assert TOK.decode(prompt_ids(TOK, "ab")) == "<s>user:ab</s><s>assistant:"
    with_system = TOK.decode(prompt_ids(TOK, "ab", system="c"))
    assert with_system == "<s>system:c</s><s>user:ab</s><s>assistant:"
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert TOK.decode(prompt_ids(TOK, conversation)).endswith("<s>assistant:b</s><s>assistant:")
    assert prompt_ids(TOK, "ab", chat_template=False) == [1, 3, 4]
    with pytest.raises(WeightspaceValueError, match="`system` is given but a prompt"):
        prompt_ids(TOK, [{"role": "system", "content": "a"}], system="b")
    with pytest.raises(WeightspaceValueError, match="must be a string when `chat_template=False`"):
        prompt_ids(TOK, conversation, chat_template=False)


def test_sft_blocks_mask_the_prompt_tokens() -> None:
    rows = sft_blocks([("ab", "cc"), ("a", "b")], TOK)
    head0, head1 = len(prompt_ids(TOK, "ab")), len(prompt_ids(TOK, "a"))
    assert rows.labels[0, :head0].tolist() == [IGNORE_INDEX] * head0
    assert rows.labels[0, head0:].tolist() == [5, 5, 2]
    assert rows.labels[1, head1 : head1 + 2].tolist() == [4, 2]
    assert rows.target_tokens == 5
    assert rows.documents.tolist() == [0, 1]
    truncated = sft_blocks([("ab", "ccc")], TOK, chat_template=False, max_length=5)
    assert truncated.input_ids.tolist() == [[1, 3, 4, 5, 5]]
    with pytest.raises(WeightspaceValueError, match=r"leaving no room for the response"):
        sft_blocks([("abcabc", "a")], TOK, max_length=8)
    with pytest.raises(WeightspaceValueError, match=r"`pairs\[0\]` must be a \(prompt, response\)"):
        sft_blocks([("ab",)], TOK)  # type: ignore[list-item]


def test_causal_lm_loss_counts_only_response_tokens() -> None:
    """The loss is the mean over response tokens: prompt tokens change nothing."""
    probs = _probs({2: 1, 3: 2, 4: 3, 5: 4, 6: 1})
    model = FixedDistribution(probs)
    rows = sft_blocks([("ab", "cc"), ("abcab", "b")], TOK)
    loss = causal_lm_loss(model, (rows.input_ids, rows.attention_mask, rows.labels))
    # response tokens: c c </s>, b </s>
    expected = -(2 * probs[5].log() + 2 * probs[2].log() + probs[4].log()) / 5
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    # another prompt of the same length: same loss; the mapping form reads the same
    other = sft_blocks([("ca", "cc"), ("bbbbb", "b")], TOK)
    batch = {
        "input_ids": other.input_ids,
        "attention_mask": other.attention_mask,
        "labels": other.labels,
    }
    assert float(causal_lm_loss(model, batch)) == pytest.approx(float(loss), abs=1e-6)


def test_causal_lm_loss_refuses_batches_without_targets() -> None:
    ids = torch.ones(1, 3, dtype=torch.long)
    labels = torch.full((1, 3), IGNORE_INDEX)
    with pytest.raises(WeightspaceValueError, match="no target token"):
        causal_lm_loss(FixedDistribution(_probs({3: 1})), (ids, ids, labels))
    with pytest.raises(WeightspaceValueError, match=r"\(input_ids, attention_mask, labels\)"):
        causal_lm_loss(FixedDistribution(_probs({3: 1})), (ids, ids))


# ---- metrics of known distributions -------------------------------------------------------


def test_bits_per_character_of_a_uniform_distribution() -> None:
    uniform = FixedDistribution(torch.full((8,), 1 / 8, dtype=torch.float64))
    ev = evaluate_lm(uniform, TOK, ["abab", "ca"], include_end=False)
    assert ev.bits_per_character == pytest.approx(3.0)
    assert ev.tokens == 6 and ev.perplexity == pytest.approx(8.0)
    # with the end token: 8 predictions of 3 bits over 6 characters
    ev_end = evaluate_lm(uniform, TOK, ["abab", "ca"])
    assert ev_end.bits_per_character == pytest.approx(8 * 3 / 6)
    assert ev_end.text_tokens == (5, 3)


def test_bits_per_character_and_byte_of_a_known_distribution() -> None:
    probs = _probs({2: 1, 3: 4, 4: 2, 5: 1})  # </s> 1/8, a 1/2, b 1/4, c 1/8
    model = FixedDistribution(probs)
    ev = evaluate_lm(model, TOK, ["aab", "c"])
    bits = (1 + 1 + 2 + 3) + (3 + 3)  # a a b </s> | c </s>
    assert ev.bits_per_character == pytest.approx(bits / 4)
    assert ev.bits_per_token == pytest.approx(bits / 6)
    assert ev.nats == pytest.approx(bits * math.log(2))
    # an unknown character is one token but two bytes in UTF-8: 'é'
    ev2 = evaluate_lm(model, TOK, ["aé"], include_end=False)
    assert ev2.text_bytes == (3,) and ev2.text_characters == (2,)
    assert ev2.bits_per_byte == pytest.approx(ev2.bits_per_character * 2 / 3)
    assert bits_per_byte(model, TOK, ["aé"], include_end=False) == ev2.bits_per_byte


@given(
    weights=st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4),
    text=st.text(alphabet="abc", min_size=1, max_size=12),
    max_length=st.integers(2, 6),
)
def test_code_length_is_the_sum_of_token_surprisals(
    weights: list[float], text: str, max_length: int
) -> None:
    """For a fixed distribution the windows do not matter: bits = sum of -log2 p."""
    probs = _probs({2: weights[0], 3: weights[1], 4: weights[2], 5: weights[3]})
    ev = evaluate_lm(FixedDistribution(probs), TOK, [text], max_length=max_length)
    ids = [3 + "abc".index(c) for c in text] + [2]
    expected = -sum(math.log2(float(probs[i])) for i in ids)
    assert ev.tokens == len(ids)
    assert ev.bits_per_token * ev.tokens == pytest.approx(expected, rel=1e-6)
    assert ev.bits_per_character * len(text) == pytest.approx(expected, rel=1e-6)


def test_lm_evaluation_properties() -> None:
    ev = LMEvaluation((2 * math.log(2), 6 * math.log(2)), (2, 2), (4, 4), (4, 8))
    assert ev.perplexity == pytest.approx(4.0)
    assert ev.bits_per_character == pytest.approx(1.0)
    assert ev.bits_per_byte == pytest.approx(8 / 12)


def test_fertility_counts_tokens_per_word() -> None:
    assert fertility(TOK, ["ab ba", "a"]) == 2.0
    with pytest.raises(WeightspaceValueError, match="holds no word"):
        fertility(TOK, ["  "])


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=len(TOK),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: torch.nn.Module = transformers.LlamaForCausalLM(config).eval()
    return model


def test_perplexity_is_exp_of_the_mean_token_loss(tiny_llama: torch.nn.Module) -> None:
    texts = ["abc ab", "cab", "a b c abba", "c"]
    blocks = chunk_texts(texts, TOK, block_size=64)
    with torch.no_grad():
        loss = causal_lm_loss(tiny_llama, (blocks.input_ids, blocks.attention_mask, blocks.labels))
    ev = evaluate_lm(tiny_llama, TOK, texts, batch_size=3)
    assert ev.perplexity == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert perplexity(tiny_llama, TOK, texts, batch_size=1) == pytest.approx(ev.perplexity, 1e-5)
    assert ev.tokens == blocks.target_tokens == 24
    # windows of 4 tokens: the same tokens are predicted, with less context
    short = evaluate_lm(tiny_llama, TOK, texts, max_length=4)
    assert short.text_tokens == ev.text_tokens
    assert short.nats != pytest.approx(ev.nats, rel=1e-6)
    assert not tiny_llama.training


def test_token_nll_shifts_the_labels_not_the_logits(tiny_llama: torch.nn.Module) -> None:
    """The cheaper loss path (no copy of the logits) gives the textbook values and gradients."""
    import torch.nn.functional as F

    from weightspace.text._causal import token_nll

    blocks = chunk_texts(["abc ab", "cab", "a b c abba"], TOK, block_size=64)
    labels = blocks.labels.clone()
    labels[0, 1:3] = IGNORE_INDEX  # a masked prompt, besides the right padding
    batch = (blocks.input_ids, blocks.attention_mask, labels)
    nll, used = token_nll(tiny_llama, batch)
    grad = torch.autograd.grad(nll.sum(), list(tiny_llama.parameters()))
    # reference: drop the last position's logits, take log-probabilities of the next label
    logits = tiny_llama(input_ids=blocks.input_ids, attention_mask=blocks.attention_mask).logits
    target = labels[:, 1:]
    want_used = target != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = -logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    want = torch.where(want_used, picked, torch.zeros_like(picked))
    want_grad = torch.autograd.grad(want.sum(), list(tiny_llama.parameters()))
    assert torch.equal(used, want_used)
    assert int(used.sum()) == blocks.target_tokens - 2
    torch.testing.assert_close(nll, want, rtol=1e-6, atol=1e-6)
    assert bool((nll[~used] == 0).all())
    for g, w in zip(grad, want_grad, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
