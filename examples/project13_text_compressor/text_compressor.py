"""
A lossy text compressor from sentence embeddings
================================================

A sentence is stored as the quantised all-MiniLM-L6-v2 embedding of it (384 numbers) and read
back by a decoder that inverts the encoder. The decoder is a small causal transformer trained
here from scratch (through :mod:`weightspace.train`) on WordNet definitions and usage examples
(Debian ``wordnet-base``), conditioned on the embedding through four soft prefix tokens.
Correction follows vec2text (Morris et al., EMNLP 2023) in spirit only: candidates are sampled,
re-embedded with MiniLM and reranked by cosine to the received embedding, for a few steps.

The embedding is quantised with :mod:`weightspace.text`'s quantisers, fitted on the training
split: scalar quantisation at 8/4/2/1 bits per coordinate, PCA truncation and product
quantisation, with Huffman coding of the codes. Every rate is scored on the same held-out
sentences (split by WordNet synset) with BLEU, chrF, token F1, exact match and the cosine of
the re-embedded reconstruction, and set against lossless references on the same sentences:
gzip, bz2 and lzma, and SmolLM2-135M as an arithmetic coder. Fortune cookies (Debian
``fortunes``) are an out-of-domain check.

``python text_compressor.py --jobs 3`` runs the full study (three seeds, in three processes:
25 minutes of one CPU core, plus about 5 to embed the sentences and run SmolLM2 the first
time; it writes ``results/``), ``python text_compressor.py --quick`` a smoke run of well
under a minute. MiniLM embeddings and SmolLM2's code lengths are cached (``--cache``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightspace import models, report, text, train

HERE = Path(__file__).resolve().parent
LOSSLESS = ("gzip", "bz2", "lzma")


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    train_sentences: int  # drawn from the training split
    test_sentences: int  # drawn from the test split
    ood_sentences: int  # fortunes
    vocab: int
    max_tokens: int
    width: int
    layers: int
    heads: int
    prefix: int
    epochs: int
    batch_size: int
    lr: float
    rates: tuple[str, ...]
    corrected: tuple[str, ...]  # rates with correction steps
    steps: int
    samples: int
    smollm2: bool
    out: Path


ALL_RATES = (
    "float32", "sq8", "sq4", "sq2", "sq1", "pca128x8", "pca64x8", "pca32x8", "pca16x8",
    "pq48x8", "pq24x8", "pq12x8", "pq6x8",
)  # fmt: skip

FULL = Config(
    seeds=(0, 1, 2),
    train_sentences=24000,
    test_sentences=300,
    ood_sentences=150,
    vocab=8000,
    max_tokens=32,
    width=192,
    layers=2,
    heads=4,
    prefix=4,
    epochs=2,
    batch_size=32,
    lr=2e-3,
    rates=ALL_RATES,
    corrected=("float32", "pq12x8"),
    steps=3,
    samples=3,
    smollm2=True,
    out=HERE / "results",
)
QUICK = Config(
    seeds=(0,),
    train_sentences=300,
    test_sentences=24,
    ood_sentences=8,
    vocab=600,
    max_tokens=24,
    width=48,
    layers=1,
    heads=2,
    prefix=2,
    epochs=2,
    batch_size=32,
    lr=3e-3,
    rates=("float32", "sq4", "sq1", "pca16x8", "pq6x8"),
    corrected=("float32",),
    steps=1,
    samples=1,
    smollm2=False,
    out=HERE / "results",
)


# ---- data ------------------------------------------------------------------------------------


def corpus(cfg: Config) -> dict[str, Any]:
    """WordNet glosses split by synset (fixed split), and a sample of fortunes."""
    sentences = text.wordnet_glosses(min_chars=20, max_chars=100)
    train_split, val_split, test_split = text.split_by_document(
        sentences, (0.9, 0.05, 0.05), seed=0
    )
    g = torch.Generator().manual_seed(0)

    def draw(items: list[text.Sentence], n: int) -> list[text.Sentence]:
        idx = torch.randperm(len(items), generator=g)[:n].sort().values.tolist()
        return [items[i] for i in idx]

    fortunes = text.fortunes(min_chars=20, max_chars=100)
    ood = draw(fortunes, cfg.ood_sentences)
    return {
        "train": draw(train_split, cfg.train_sentences),
        "test": draw(test_split, cfg.test_sentences),
        "ood": ood,
        "sizes": {
            "sentences": len(sentences),
            "synsets": len({s.document for s in sentences}),
            "train_split": len(train_split),
            "val_split": len(val_split),
            "test_split": len(test_split),
            "fortunes": len(fortunes),
            "definitions": sum(s.kind == "definition" for s in sentences),
            "examples": sum(s.kind == "example" for s in sentences),
        },
    }


def cache_folder(path: Path | None) -> Path:
    if path is None:
        root = os.environ.get("WEIGHTSPACE_CACHE") or Path.home() / ".cache" / "weightspace"
        path = Path(root) / "project13"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(folder: Path, name: str, texts: Sequence[str], compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` once per list of texts, kept as a tensor file named by their hash."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = folder / f"{name}-{key}.pt"
    if path.exists():
        value: Tensor = torch.load(path, weights_only=True)
        return value
    value = compute()
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


# ---- quantisers --------------------------------------------------------------------------------


PQ_TRAIN = 8192  # product codebooks are fitted on this many training embeddings (k-means cost)


def fit_quantizer(name: str, seed: int, train_emb: Tensor) -> text.EmbeddingQuantizer:
    """The code ``name`` fitted on the training embeddings (a seeded sample of them for PQ)."""
    q = make_quantizer(name, seed)
    if isinstance(q, text.ProductQuantizer) and len(train_emb) > PQ_TRAIN:
        g = torch.Generator().manual_seed(seed)
        train_emb = train_emb[torch.randperm(len(train_emb), generator=g)[:PQ_TRAIN]]
    return q.fit(train_emb)


def make_quantizer(name: str, seed: int) -> text.EmbeddingQuantizer:
    """``float32``, ``sqB`` (B bits per coordinate), ``pcaKxB`` and ``pqMxB``."""
    if name == "float32":
        return text.ScalarQuantizer(32)
    if name.startswith("sq"):
        return text.ScalarQuantizer(int(name[2:]), clip=0.001, centres="mean")
    k, b = (int(v) for v in name.lstrip("pcaq").split("x"))
    if name.startswith("pca"):
        return text.PCAQuantizer(k, b, clip=0.001, centres="mean")
    return text.ProductQuantizer(k, b, iterations=10, seed=seed)


def family(name: str) -> str:
    for prefix, label in (("sq", "scalar"), ("pca", "PCA"), ("pq", "product")):
        if name.startswith(prefix):
            return label
    return "float32"


# ---- one seed ----------------------------------------------------------------------------------


class Samples:
    """(embedding, token ids) pairs, batched with the padding trimmed to the longest row."""

    def __init__(self, emb: Tensor, ids: Tensor) -> None:
        self.emb, self.ids = emb, ids

    def __len__(self) -> int:
        return len(self.emb)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.emb[i], self.ids[i]

    @staticmethod
    def collate(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        emb = torch.stack([e for e, _ in items])
        ids = torch.stack([t for _, t in items])
        width = int((ids != text.Vocabulary.PAD).sum(dim=1).max())
        return emb, ids[:, :width]


def scores(hyps: list[str], refs: list[str], re_emb: Tensor, target: Tensor) -> dict[str, float]:
    refs_l = [r.lower() for r in refs]
    return {
        "bleu": text.bleu(hyps, refs_l),
        "chrf": text.chrf(hyps, refs_l),
        "token_f1": sum(text.token_f1(h, r) for h, r in zip(hyps, refs_l, strict=True)) / len(hyps),
        "exact": sum(text.exact_match(h, r) for h, r in zip(hyps, refs_l, strict=True)) / len(hyps),
        "cosine": float((F.normalize(re_emb, dim=1) * target).sum(1).mean()),
    }


def run_seed(
    cfg: Config,
    seed: int,
    data: dict[str, Any],
    emb: dict[str, Tensor],
    encoder: models.SentenceEncoder,
    vocab: text.Vocabulary,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    train_texts = [s.text for s in data["train"]]
    test_texts = [s.text for s in data["test"]]
    ood_texts = [s.text for s in data["ood"]]
    ids = vocab.encode(train_texts, max_length=cfg.max_tokens)
    torch.manual_seed(seed)
    decoder = text.EmbeddingDecoder(
        len(vocab),
        encoder.dim,
        prefix=cfg.prefix,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.heads,
        max_length=cfg.max_tokens,
        dropout=0.0,
    )
    history = train.fit_(
        decoder,
        Samples(emb["train"], ids),
        collate_fn=Samples.collate,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        loss=text.decoder_loss,
        max_grad_norm=1.0,
        seed=seed,
    )
    t_train = time.perf_counter() - t_start

    def embed(texts: list[str]) -> Tensor:
        return encoder.encode(texts, batch_size=64)

    rates: dict[str, Any] = {}
    correction: dict[str, Any] = {}
    hyps_by_rate: dict[str, list[str]] = {}
    chars = sum(len(t) for t in test_texts) / len(test_texts)
    for name in cfg.rates:
        q = fit_quantizer(name, seed, emb["train"])
        codes = q.encode(emb["test"])
        received = q.decode(codes)
        entry: dict[str, Any] = {
            "bits": q.bits_per_vector,
            "side_bits": q.side_bits,
            "bits_per_char": q.bits_per_vector / chars,
            "embedding_cosine": float((F.normalize(received, dim=1) * emb["test"]).sum(1).mean()),
        }
        if max(q.levels) <= 2**16:
            coder = text.HuffmanCoder(q.levels).fit(q.encode(emb["train"]))
            coded = coder.code_lengths(codes).double()
            assert torch.equal(coder.decode(coder.encode(codes[:4])), codes[:4])
            entry["huffman_bits"] = float(coded.mean())
            entry["huffman_bits_per_char"] = float(coded.mean()) / chars
        steps = cfg.steps if name in cfg.corrected else 0
        inv = text.invert(
            decoder,
            vocab,
            embed,
            received,
            steps=steps,
            samples=cfg.samples,
            seed=seed,
        )
        # Score each step against the true embedding (the receiver only saw ``received``).
        per_step = [
            scores(hyps, test_texts, inv.embeddings[s], emb["test"])
            for s, hyps in enumerate(inv.texts)
        ]
        entry.update(per_step[0])
        hyps_by_rate[name] = inv.texts[0]
        rates[name] = entry
        if steps:
            correction[name] = {
                "steps": per_step,
                "candidates": inv.candidates,
                "received_cosine": inv.cosines.mean(dim=1).tolist(),
            }
            hyps_by_rate[f"{name}+corrected"] = inv.final
    # Out of domain: the decoder on fortunes, at float32 and at 4 bits.
    ood: dict[str, Any] = {}
    for name in ("float32", "sq4"):
        q = fit_quantizer(name, seed, emb["train"])
        inv = text.invert(decoder, vocab, embed, q.round_trip(emb["ood"]))
        hyps = inv.final
        ood[name] = scores(hyps, ood_texts, inv.embeddings[-1], emb["ood"])
        if seed == cfg.seeds[0]:
            hyps_by_rate[f"ood_{name}"] = hyps
    return {
        "seed": seed,
        "losses": list(history.losses),
        "train_seconds": t_train,
        "seconds": time.perf_counter() - t_start,
        "parameters": sum(p.numel() for p in decoder.parameters()),
        "rates": rates,
        "correction": correction,
        "ood": ood,
        "hypotheses": hyps_by_rate,
    }


# ---- lossless references -----------------------------------------------------------------------


def lossless(cfg: Config, texts: list[str], folder: Path) -> dict[str, dict[str, float]]:
    chars = sum(len(t) for t in texts)
    out: dict[str, dict[str, float]] = {}
    for method in LOSSLESS:
        each = [text.compressed_bits(t, method) for t in texts]
        joint = text.compressed_bits("\n".join(texts), method)
        out[method] = {
            "bits": sum(each) / len(texts),
            "bits_per_char": sum(each) / chars,
            "joint_bits_per_char": joint / chars,
        }
    out["raw UTF-8"] = {
        "bits": 8 * sum(len(t.encode()) for t in texts) / len(texts),
        "bits_per_char": 8 * sum(len(t.encode()) for t in texts) / chars,
        "joint_bits_per_char": 8 * sum(len(t.encode()) for t in texts) / chars,
    }
    if cfg.smollm2:

        def compute() -> Tensor:
            chat = models.smollm2()
            # Plain text, not a chat: the document separator opens and closes each sentence.
            sep = chat.tokenizer.convert_tokens_to_ids("<|endoftext|>")
            return text.lm_code_lengths(
                chat, chat.tokenizer, texts, start_id=sep, end_id=sep, batch_size=16
            )

        bits = cached(folder, "smollm2-bits", texts, compute)
        out["SmolLM2-135M"] = {
            "bits": float(bits.mean()),
            "bits_per_char": float(bits.sum()) / chars,
            "joint_bits_per_char": float(bits.sum()) / chars,
        }
    return out


# ---- summaries, tables and figures -------------------------------------------------------------

METRICS = ("embedding_cosine", "cosine", "bleu", "chrf", "token_f1", "exact")


def summary(values: Sequence[float]) -> report.Summary:
    return report.summarize(list(values))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std, 95 % t half-width and per-seed values of every reported number."""

    def pack(values: list[float]) -> dict[str, Any]:
        s = summary(values)
        return {"mean": s.mean, "std": s.std, "ci95": s.half_width, "values": list(s.values)}

    out: dict[str, Any] = {"rates": {}, "correction": {}, "ood": {}}
    for name in runs[0]["rates"]:
        keys = [k for k in runs[0]["rates"][name] if isinstance(runs[0]["rates"][name][k], float)]
        out["rates"][name] = {k: pack([r["rates"][name][k] for r in runs]) for k in keys}
    for name in runs[0]["correction"]:
        steps = len(runs[0]["correction"][name]["steps"])
        out["correction"][name] = [
            {k: pack([r["correction"][name]["steps"][s][k] for r in runs]) for k in METRICS[1:]}
            for s in range(steps)
        ]
    for name in runs[0]["ood"]:
        out["ood"][name] = {k: pack([r["ood"][name][k] for r in runs]) for k in METRICS[1:]}
    out["final_loss"] = pack([r["losses"][-1] for r in runs])
    return out


def _at(runs: list[dict[str, Any]], *keys: str | int, scale: float = 1.0) -> report.Summary:
    """The summary over seeds of ``run[k1][k2]...`` (times ``scale``)."""
    values = []
    for r in runs:
        v: Any = r
        for k in keys:
            v = v[k]
        values.append(scale * float(v))
    return summary(values)


def tables(result: dict[str, Any]) -> str:
    """The Markdown tables of the report, from results.json alone."""
    runs = result["runs"]
    sizes = result["corpus"]
    parts = ["### Corpus", ""]
    parts.append(
        report.markdown_table(
            ["set", "sentences", "mean characters", "source"],
            [
                ["WordNet glosses (20-100 characters)", sizes["sentences"], "", "wordnet-base"],
                ["training split (90 % of synsets)", sizes["train_split"], "", ""],
                ["test split (5 % of synsets)", sizes["test_split"], "", ""],
                ["used for training", result["used"]["train"], result["chars"]["train"], ""],
                ["used for testing", result["used"]["test"], result["chars"]["test"], ""],
                [
                    "fortunes (out of domain)",
                    result["used"]["ood"],
                    result["chars"]["ood"],
                    "fortunes",
                ],
            ],
            formats=[None, None, ".1f", None],
        )
    )
    parts += ["", "### Rate and distortion on the test sentences (greedy decoding)", ""]
    rows = []
    for name in runs[0]["rates"]:
        r0 = runs[0]["rates"][name]
        huff = _at(runs, "rates", name, "huffman_bits_per_char") if "huffman_bits" in r0 else None
        rows.append(
            [
                name,
                r0["bits"],
                r0["bits_per_char"],
                huff,
                _at(runs, "rates", name, "embedding_cosine"),
                _at(runs, "rates", name, "cosine"),
                _at(runs, "rates", name, "bleu"),
                _at(runs, "rates", name, "chrf"),
                _at(runs, "rates", name, "token_f1"),
                _at(runs, "rates", name, "exact", scale=100),
            ]
        )
    parts.append(
        report.markdown_table(
            [
                "code",
                "bits",
                "bits/char",
                "Huffman bits/char",
                "embedding cos",
                "re-embedded cos",
                "BLEU",
                "chrF",
                "token F1",
                "exact %",
            ],
            rows,
            formats=[None, None, ".2f", ".2f", ".3f", ".3f", ".1f", ".1f", ".3f", ".1f"],
        )
    )
    parts += ["", "### Lossless references on the same test sentences", ""]
    rows = [
        [m, v["bits"], v["bits_per_char"], v["joint_bits_per_char"]]
        for m, v in result["lossless"].items()
    ]
    parts.append(
        report.markdown_table(
            [
                "method",
                "bits per sentence",
                "bits/char, each sentence alone",
                "bits/char, whole set as one stream",
            ],
            rows,
            formats=[None, ".1f", ".2f", ".2f"],
        )
    )
    parts += ["", "### Correction steps (sample, re-embed, rerank)", ""]
    rows = []
    for name in runs[0]["correction"]:
        steps = len(runs[0]["correction"][name]["steps"])
        for s in range(steps):
            rows.append(
                [
                    name,
                    s,
                    _at(runs, "correction", name, "received_cosine", s),
                    _at(runs, "correction", name, "steps", s, "cosine"),
                    _at(runs, "correction", name, "steps", s, "bleu"),
                    _at(runs, "correction", name, "steps", s, "chrf"),
                    _at(runs, "correction", name, "steps", s, "token_f1"),
                ]
            )
    parts.append(
        report.markdown_table(
            ["code", "step", "cos to received", "cos to original", "BLEU", "chrF", "token F1"],
            rows,
            formats=[None, None, ".3f", ".3f", ".1f", ".1f", ".3f"],
        )
    )
    parts += ["", "### Out of domain: fortunes", ""]
    rows = [
        [
            name,
            _at(runs, "ood", name, "cosine"),
            _at(runs, "ood", name, "bleu"),
            _at(runs, "ood", name, "chrf"),
            _at(runs, "ood", name, "token_f1"),
        ]
        for name in runs[0]["ood"]
    ]
    parts.append(
        report.markdown_table(
            ["code", "re-embedded cos", "BLEU", "chrF", "token F1"],
            rows,
            formats=[None, ".3f", ".1f", ".1f", ".3f"],
        )
    )
    parts += ["", "### Training", ""]
    parts.append(
        report.markdown_table(
            ["decoder parameters", "final training loss (nats/token)", "per seed"],
            [
                [
                    runs[0]["parameters"],
                    _at(runs, "losses", -1),
                    ", ".join(f"{r['losses'][-1]:.3f}" for r in runs),
                ]
            ],
        )
    )
    for title, key in (
        ("Meaning kept, wording not (float32, seed %d)", "meaning"),
        ("Failures (float32, seed %d)", "failures"),
        ("One sentence at every rate (seed %d)", "ladder"),
    ):
        parts += ["", "### " + title % runs[0]["seed"], ""]
        rows = [[e["label"], e["text"], e["cosine"], e["token_f1"]] for e in result[key]]
        parts.append(
            report.markdown_table(
                ["", "text", "re-embedded cos", "token F1"],
                rows,
                formats=[None, None, ".3f", ".2f"],
            )
        )
    return "\n".join(parts) + "\n"


def examples(
    run: dict[str, Any], test: list[str], emb: Tensor, encoder: models.SentenceEncoder
) -> dict[str, list[dict[str, Any]]]:
    """Sentences whose meaning survives without their wording, failures, and one ladder."""
    hyps = run["hypotheses"]["float32"]
    re_emb = encoder.encode(hyps)
    cos = (F.normalize(re_emb, dim=1) * emb).sum(1).tolist()
    f1 = [text.token_f1(h, r.lower()) for h, r in zip(hyps, test, strict=True)]

    def pair(i: int) -> list[dict[str, Any]]:
        return [
            {"label": f"reference {i}", "text": test[i], "cosine": 1.0, "token_f1": 1.0},
            {"label": "decoded", "text": hyps[i], "cosine": cos[i], "token_f1": f1[i]},
        ]

    kept = sorted((i for i in range(len(test)) if f1[i] <= 0.5), key=lambda i: -cos[i])[:6]
    failed = sorted(range(len(test)), key=lambda i: cos[i])[:3]
    middle = sorted(range(len(test)), key=lambda i: cos[i])[len(test) // 2]
    ladder = [{"label": "reference", "text": test[middle], "cosine": 1.0, "token_f1": 1.0}]
    for name, texts in run["hypotheses"].items():
        if name.startswith("ood"):
            continue
        e = encoder.encode([texts[middle]])
        ladder.append(
            {
                "label": name,
                "text": texts[middle],
                "cosine": float((F.normalize(e, dim=1) * emb[middle]).sum()),
                "token_f1": text.token_f1(texts[middle], test[middle].lower()),
            }
        )
    return {
        "meaning": [x for i in kept for x in pair(i)],
        "failures": [x for i in failed for x in pair(i)],
        "ladder": ladder,
    }


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
                cell = cell.replace("*", r"\*").replace("`", r"\`") or r"\ "
                out.append(("   * - " if k == 0 else "     - ") + cell)
        out += ["", f".. table-end: {title}", ""]
    return "\n".join(out)


def figures(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    colours = {"float32": "black", "scalar": "tab:blue", "PCA": "tab:green", "product": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, metric, label in zip(
        axes,
        ("embedding_cosine", "cosine", "chrf"),
        ("cosine of received to original embedding", "cosine of re-embedded reconstruction",
         "chrF of reconstruction"),
        strict=True,
    ):  # fmt: skip
        for fam in colours:
            names = [n for n in runs[0]["rates"] if family(n) == fam]
            xs = [runs[0]["rates"][n]["bits_per_char"] for n in names]
            ss = [_at(runs, "rates", n, metric) for n in names]
            ax.errorbar(
                xs,
                [s.mean for s in ss],
                yerr=[0.0 if math.isnan(s.half_width) else s.half_width for s in ss],
                marker="o",
                color=colours[fam],
                label=fam + " (fixed rate)",
                capsize=3,
            )
            hx = [runs[0]["rates"][n].get("huffman_bits_per_char") for n in names]
            if fam != "float32" and all(h is not None for h in hx):
                hs = [_at(runs, "rates", n, "huffman_bits_per_char") for n in names]
                ax.plot(
                    [h.mean for h in hs],
                    [s.mean for s in ss],
                    linestyle=":",
                    marker="x",
                    color=colours[fam],
                    label=fam + " + Huffman",
                )
        top = 100.0 if metric == "chrf" else 1.0
        for k, (m, v) in enumerate(result["lossless"].items()):
            if m == "raw UTF-8":
                continue
            ax.axvline(v["bits_per_char"], color=f"C{k + 4}", linestyle="--", linewidth=1)
            ax.annotate(
                f"{m}: {v['bits_per_char']:.2f}",
                (v["bits_per_char"], top),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
            )
        ax.set_xscale("log")
        ax.set_xlabel("bits per character (log)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Lossy compression through MiniLM embeddings vs lossless references (dashed, "
        "each sentence alone); mean and 95 % interval over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "rate_distortion.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in runs[0]["correction"]:
        steps = list(range(len(runs[0]["correction"][name]["steps"])))
        for ax, metric in zip(axes, ("cosine", "bleu"), strict=True):
            ss = [_at(runs, "correction", name, "steps", s, metric) for s in steps]
            ax.errorbar(
                steps,
                [s.mean for s in ss],
                yerr=[0.0 if math.isnan(s.half_width) else s.half_width for s in ss],
                marker="o",
                capsize=3,
                label=name,
            )
            ax.set_xlabel("correction step")
            ax.set_ylabel({"cosine": "re-embedded cosine to original", "bleu": "BLEU"}[metric])
            ax.set_xticks(steps)
            ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "correction.png", dpi=110)
    plt.close(fig)


_SHARED: dict[str, Any] = {}


def _run_shared(seed: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_seed(
        _SHARED["cfg"], seed, _SHARED["data"], _SHARED["emb"], _SHARED["encoder"], _SHARED["vocab"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache folder")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    if args.out is not None:
        cfg.out = args.out
    cfg.out.mkdir(parents=True, exist_ok=True)
    folder = cache_folder(args.cache)

    start, cpu_start = time.perf_counter(), time.process_time()
    data = corpus(cfg)
    encoder = models.minilm()
    texts = {k: [s.text for s in data[k]] for k in ("train", "test", "ood")}
    emb = {
        k: cached(folder, f"minilm-{k}", v, lambda v=v: encoder.encode(v, batch_size=64))
        for k, v in texts.items()
    }
    vocab = text.Vocabulary.build(encoder.tokenizer, texts["train"], size=cfg.vocab)
    refs = lossless(cfg, texts["test"], folder)
    runs = []
    jobs = min(args.jobs, len(cfg.seeds))
    if jobs > 1:  # one process per seed, forked so that they share the data read-only
        _SHARED.update(cfg=cfg, data=data, emb=emb, encoder=encoder, vocab=vocab)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            runs = pool.map(_run_shared, cfg.seeds)
    else:
        runs = [run_seed(cfg, seed, data, emb, encoder, vocab) for seed in cfg.seeds]
    for r in runs:
        print(f"seed {r['seed']}: {r['seconds']:.0f} s", flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.pop("out")
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "corpus": data["sizes"],
        "used": {k: len(v) for k, v in texts.items()},
        "chars": {k: sum(map(len, v)) / len(v) for k, v in texts.items()},
        "vocabulary": {"size": len(vocab), "test_coverage": vocab.coverage(texts["test"])},
        "lossless": refs,
        "test_sentences": texts["test"],
        "summary": summarise(runs),
        "runs": runs,
    }
    result.update(examples(runs[0], texts["test"], emb["test"], encoder))
    result["seconds"] = time.perf_counter() - start
    children = os.times()
    result["cpu_seconds"] = (
        time.process_time() - cpu_start + children.children_user + children.children_system
    )
    result["jobs"] = jobs
    result["torch_threads"] = torch.get_num_threads()
    md = tables(result)
    figures(result, cfg.out)
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    (cfg.out / "tables.md").write_text(md)
    (cfg.out / "tables.rst").write_text(markdown_to_rst(md))
    print(md)
    print(
        f"total {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s CPU; wrote {cfg.out}"
    )


if __name__ == "__main__":
    main()
