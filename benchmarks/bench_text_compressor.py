"""Throughput and rate of the embedding text compressor of project 13, beside gzip/bz2/lzma.

Run: .venv/bin/python benchmarks/bench_text_compressor.py [--threads 2] [--repeats 3]
     [--sentences 300] [--out benchmarks/results/text_compressor.md] [--quick]

On the test sentences of ``examples/project13_text_compressor`` (WordNet glosses, split by
synset), in one run on this machine with ``--threads`` torch threads:

* **encode** (sentences/s): MiniLM embedding, quantisation with each code of the example
  (fitted as in the example, on its training sentences) and Huffman coding of the codes to
  bytes;
* **decode** (sentences/s): Huffman decoding, dequantisation and greedy decoding with the
  example's decoder architecture (fresh weights: the time does not depend on them, so every
  sentence is written to the mean token length of the references), without and with the
  three correction steps of the full run (each re-embeds four candidates per step);
* **bits per character** of each code, at its fixed rate and Huffman-coded (the Huffman
  tables fitted on the training codes), beside gzip, bz2 and lzma, each sentence compressed
  alone (as :func:`weightspace.text.compressed_bits` does: lzma at preset 9 extreme, and at
  the default preset 6 for speed), with their compression and decompression throughput on
  the same sentences.

Times are the minimum over ``--repeats`` (the usual way to discount a shared machine's load).
"""

from __future__ import annotations

import argparse
import bz2
import importlib.util
import lzma
import platform
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from weightspace import models, report, text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project13_text_compressor" / "text_compressor.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_text_compressor", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def lossless_codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    lz = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]

    def deflate(b: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(b) + c.flush()

    lz6 = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
    return {
        "gzip": (deflate, lambda b: zlib.decompress(b, -15)),
        "bz2": (lambda b: bz2.compress(b, 9), bz2.decompress),
        "lzma": (
            lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=lz),
            lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=lz),
        ),
        # The same sizes for one sentence at the default preset: presets 7-9 and "extreme"
        # only enlarge the dictionary (allocated on every call), which a sentence never fills.
        "lzma -6": (
            lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=lz6),
            lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=lz6),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="the example's quick sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ex = load()
    cfg = ex.QUICK if args.quick else ex.FULL
    data = ex.corpus(cfg)
    train_texts = [s.text for s in data["train"]]
    texts = [s.text for s in data["test"]][: args.sentences]
    chars = sum(len(t) for t in texts)
    encoder = models.minilm()
    folder = ex.cache_folder(None)
    train_emb = ex.cached(
        folder, "minilm-train", train_texts, lambda: encoder.encode(train_texts, batch_size=64)
    )
    vocab = text.Vocabulary.build(encoder.tokenizer, train_texts, size=cfg.vocab)
    mean_tokens = round(float((vocab.encode(texts, max_length=64) > 0).sum()) / len(texts)) - 1
    torch.manual_seed(0)
    decoder = text.EmbeddingDecoder(
        len(vocab),
        encoder.dim,
        prefix=cfg.prefix,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.heads,
        max_length=cfg.max_tokens,
    ).eval()

    def embed(batch: list[str]) -> torch.Tensor:
        return encoder.encode(batch, batch_size=64)

    t_embed = best_time(lambda: embed(texts), args.repeats)
    emb = embed(texts)
    rows = []
    for name in cfg.rates:
        q = ex.fit_quantizer(name, 0, train_emb)
        coder = None
        if max(q.levels) <= 2**16:
            coder = text.HuffmanCoder(q.levels).fit(q.encode(train_emb))

        def encode(q: text.EmbeddingQuantizer = q, coder: text.HuffmanCoder | None = coder) -> Any:
            codes = q.encode(embed(texts))
            return coder.encode(codes) if coder is not None else codes

        def decode(
            payload: Any,
            q: text.EmbeddingQuantizer = q,
            coder: text.HuffmanCoder | None = coder,
            steps: int = 0,
        ) -> list[str]:
            codes = coder.decode(payload) if coder is not None else payload
            received = q.decode(codes)
            if steps == 0:
                ids = decoder.generate(received, min_tokens=mean_tokens, max_length=mean_tokens)
                return vocab.decode(ids)
            return text.invert(
                decoder, vocab, embed, received, steps=steps, samples=cfg.samples
            ).final

        payload = encode()
        t_enc = best_time(encode, args.repeats)
        t_dec = best_time(lambda p=payload: decode(p), args.repeats)
        corrected = None
        if name in cfg.corrected:
            corrected = len(texts) / best_time(lambda p=payload: decode(p, steps=cfg.steps), 1)
        huff = None
        if coder is not None:
            huff = float(coder.code_lengths(q.encode(emb)).double().sum()) / chars
        rows.append(
            [
                name,
                q.bits_per_vector,
                q.bits_per_vector * len(texts) / chars,
                huff,
                len(texts) / t_enc,
                len(texts) / t_dec,
                corrected,
            ]
        )
    for name, (comp, decomp) in lossless_codecs().items():
        raw = [t.encode() for t in texts]
        packed = [comp(b) for b in raw]
        assert [decomp(p) for p in packed] == raw
        t_enc = best_time(lambda c=comp, r=raw: [c(b) for b in r], args.repeats)
        t_dec = best_time(lambda d=decomp, k=packed: [d(p) for p in k], args.repeats)
        bits = 8 * sum(len(p) for p in packed)
        rows.append(
            [
                f"{name} (lossless)",
                bits / len(texts),
                bits / chars,
                None,
                len(texts) / t_enc,
                len(texts) / t_dec,
                None,
            ]
        )
    table = report.markdown_table(
        ["code", "bits per sentence", "bits/char", "Huffman bits/char", "encode sent/s",
         "decode sent/s", "decode + 3 correction steps sent/s"],
        rows,
        formats=[None, ".0f", ".2f", ".2f", ".0f", ".0f", ".1f"],
    )  # fmt: skip
    head = (
        f"# Text compressor throughput (project 13)\n\n"
        f"{len(texts)} WordNet test sentences ({chars / len(texts):.1f} characters, "
        f"{mean_tokens} decoded tokens each), {args.threads} torch thread(s), best of "
        f"{args.repeats}; {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}. MiniLM embedding alone: {len(texts) / t_embed:.0f} sentences/s "
        f"(part of every encode).\n\n"
    )
    md = head + table
    print(md)
    if args.out is not None:
        args.out.write_text(md)


if __name__ == "__main__":
    main()
