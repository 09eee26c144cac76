"""LoRA and full fine-tuning of a causal LM on the shared trainer, and batched generation."""

from __future__ import annotations

import copy

import pytest
import torch

from weightspace import TaskVector, WeightspaceValueError
from weightspace.text import (
    add_lora,
    causal_lm_loss,
    char_tokenizer,
    evaluate_lm,
    finetune_lm,
    generate,
    pack_texts,
    sft_blocks,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TOK = char_tokenizer("abc ")
CORPUS = ["abc abc abc", "cab cab", "abcabc cba", "a b c"] * 8


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
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


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_finetuning_is_seeded_learns_and_leaves_the_base_untouched(
    base: torch.nn.Module,
) -> None:
    before = _state(base)
    data = pack_texts(CORPUS, TOK, block_size=8)
    run = finetune_lm(base, data, rank=4, lr=1e-2, batch_size=4, max_steps=12, seed=3)
    again = finetune_lm(base, data, rank=4, lr=1e-2, batch_size=4, max_steps=12, seed=3)
    assert run.losses == again.losses
    assert run.steps == 12 and len(run.losses) == 12
    # 37 blocks of 8 tokens: an epoch is 9 batches of 4 and one of 1, then 2 batches of 4
    assert len(data) == 37 and run.tokens == (9 * 4 + 1 + 2 * 4) * 8
    # adapters of rank 4 on q_proj and v_proj (16 x 16) of 2 layers: 2 * 2 * 4 * (16 + 16)
    assert run.trainable_parameters == 512
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    bpc_base = evaluate_lm(base, TOK, CORPUS[:4]).bits_per_character
    bpc_tuned = evaluate_lm(run.model, TOK, CORPUS[:4]).bits_per_character
    assert bpc_tuned < bpc_base - 0.1
    other_seed = finetune_lm(base, data, rank=4, lr=1e-2, batch_size=4, max_steps=12, seed=4)
    assert other_seed.losses != run.losses


def test_lora_task_vector_equals_the_merged_adapter(
    base: torch.nn.Module, tmp_path: object
) -> None:
    data = pack_texts(CORPUS, TOK, block_size=8)
    run = finetune_lm(base, data, rank=2, lr=1e-2, batch_size=4, max_steps=4, seed=0)
    tv = run.task_vector()
    merged = copy.deepcopy(run.model).merge_and_unload()
    delta = TaskVector.from_models(base=base, finetuned=merged, keys="intersection")
    assert sorted(tv) == sorted(k for k in delta if delta[k].abs().max() > 0)
    for key in tv:
        torch.testing.assert_close(tv[key], delta[key], atol=1e-6, rtol=1e-5)
    folder = run.save_adapter(tmp_path / "adapter")  # type: ignore[operator]
    from_disk = TaskVector.from_lora(folder)
    assert from_disk.cosine(tv) == pytest.approx(1.0, abs=1e-6)
    # the task vector applied to the base gives the adapted model's outputs
    ids = torch.tensor([[1, 3, 4, 5, 6, 3]])
    with torch.no_grad():
        expected = run.model(input_ids=ids).logits
        applied = tv.apply_to(base)(input_ids=ids).logits
    torch.testing.assert_close(applied, expected, atol=1e-5, rtol=1e-5)


def test_full_finetuning_trains_every_weight_and_needs_the_base_for_its_vector(
    base: torch.nn.Module,
) -> None:
    data = pack_texts(CORPUS, TOK, block_size=8)
    run = finetune_lm(base, data, method="full", lr=1e-3, batch_size=8, epochs=2, seed=0)
    assert run.steps == 2 * -(-len(data) // 8)
    assert run.trainable_parameters == sum(p.numel() for p in base.parameters())
    tv = run.task_vector(base)
    assert tv.norm() > 0
    with pytest.raises(WeightspaceValueError, match="`base` is required"):
        run.task_vector()
    with pytest.raises(WeightspaceValueError, match="`save_adapter` needs a LoRA model"):
        run.save_adapter("unused")


def test_sft_loss_matches_transformers_and_ignores_the_prompt(base: torch.nn.Module) -> None:
    """The response-only loss is transformers' own loss with the same labels."""
    rows = sft_blocks([("ab", "cc"), ("a b c", "ba")], TOK)
    batch = (rows.input_ids, rows.attention_mask, rows.labels)
    with torch.no_grad():
        ours = causal_lm_loss(base, batch)
        theirs = base(
            input_ids=rows.input_ids, attention_mask=rows.attention_mask, labels=rows.labels
        ).loss
        everything = rows.input_ids.masked_fill(rows.attention_mask == 0, -100)
        with_prompt = causal_lm_loss(base, (rows.input_ids, rows.attention_mask, everything))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    assert float(ours) != pytest.approx(float(with_prompt), rel=1e-3)
    # a step on these rows moves the response's loss down
    run = finetune_lm(base, rows, rank=4, lr=5e-2, batch_size=2, max_steps=10, seed=0)
    with torch.no_grad():
        after = causal_lm_loss(run.model, batch)
    assert float(after) < float(ours) - 0.1


def test_finetune_lm_checks_its_arguments(base: torch.nn.Module) -> None:
    data = pack_texts(CORPUS, TOK, block_size=8)
    with pytest.raises(WeightspaceValueError, match="`method` must be 'lora' or 'full'"):
        finetune_lm(base, data, method="dora")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`data` must be TokenBlocks"):
        finetune_lm(base, [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"`max_steps` must be an int >= 1"):
        finetune_lm(base, data, max_steps=0)
    with pytest.raises(WeightspaceValueError, match=r"`rank` must be an int >= 1, got 0"):
        add_lora(copy.deepcopy(base), rank=0)


def test_generate_is_deterministic_and_batching_does_not_change_replies(
    base: torch.nn.Module,
) -> None:
    data = pack_texts(CORPUS, TOK, block_size=8)
    run = finetune_lm(base, data, method="full", lr=3e-3, batch_size=4, max_steps=30, seed=0)
    prompts = ["ab", "abc abc", [{"role": "user", "content": "c"}], "b"]
    batched = generate(run.model, TOK, prompts, max_new_tokens=6, batch_size=4)
    one_by_one = [generate(run.model, TOK, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == one_by_one
    assert batched == generate(run.model, TOK, prompts, max_new_tokens=6, batch_size=3)
    assert all(len(r) <= 6 for r in batched)
    raw = generate(run.model, TOK, ["abc a"], max_new_tokens=4, chat_template=False)
    assert len(raw) == 1 and set(raw[0]) <= set("abc ")
    with pytest.raises(WeightspaceValueError, match="wrap one in a list"):
        generate(run.model, TOK, "ab")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"`max_new_tokens` must be an int >= 1"):
        generate(run.model, TOK, ["ab"], max_new_tokens=0)
