"""English sentences from Debian packages: WordNet glosses and fortune cookies, split by source."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from weightspace._errors import MissingSourceError, WeightspaceValueError

__all__ = ["Sentence", "fortunes", "split_by_document", "wordnet_glosses"]

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
_POS = ("noun", "verb", "adj", "adv")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Sentence:
    """One sentence and where it comes from.

    Attributes:
        text: The sentence.
        document: The source document it belongs to (a WordNet synset such as
            ``"noun:02084071"``, or a fortune such as ``"wisdom:17"``); splits keep a
            document's sentences together.
        kind: ``"definition"`` or ``"example"`` (WordNet), ``"fortune"``.
    """

    text: str
    document: str
    kind: str


def _check_lengths(min_chars: int, max_chars: int) -> None:
    for name, v in (("min_chars", min_chars), ("max_chars", max_chars)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {v!r}")
    if min_chars > max_chars:
        raise WeightspaceValueError(
            f"`min_chars`={min_chars} exceeds `max_chars`={max_chars}; swap them"
        )


def wordnet_glosses(
    *,
    min_chars: int = 20,
    max_chars: int = 120,
    path: str | Path | None = None,
) -> list[Sentence]:
    """Definitions and example sentences of WordNet 3.0 (Debian ``wordnet-base``).

    Each synset's gloss is cut at ``"; "``: the quoted parts are usage examples (one sentence
    each, quotes removed), the rest is the definition (its parts joined with ``"; "``). The
    synset is the document of its sentences. Sentences outside ``[min_chars, max_chars]``
    characters are dropped; the order is the files' (nouns, verbs, adjectives, adverbs).

    Args:
        min_chars: Shortest sentence kept.
        max_chars: Longest sentence kept.
        path: A folder holding ``data.noun`` ... ``data.adv``; default
            ``/usr/share/wordnet``.

    Returns:
        The sentences (about 150,000 with the defaults).

    Raises:
        MissingSourceError: if the WordNet files are missing (names the Debian package).
    """
    _check_lengths(min_chars, max_chars)
    folder = WORDNET_DIR if path is None else Path(path)
    files = [folder / f"data.{pos}" for pos in _POS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingSourceError(
            f"WordNet's data files are missing ({missing[0]}); install them with "
            "`apt-get install -y wordnet-base` (as root) or pass `path=` to a WordNet dict folder"
        )
    out: list[Sentence] = []
    for pos, file in zip(_POS, files, strict=True):
        with file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                head, gloss = line.split("|", 1)
                doc = f"{pos}:{head.split(' ', 1)[0]}"
                definition: list[str] = []
                examples: list[str] = []
                for part in gloss.strip().split("; "):
                    part = part.strip()
                    if part.startswith('"'):
                        examples.append(part.strip('"; ').strip())
                    elif part:
                        definition.append(part)
                texts = [("definition", "; ".join(definition))] if definition else []
                texts += [("example", e) for e in examples]
                for kind, text in texts:
                    text = _SPACE.sub(" ", text).strip()
                    if min_chars <= len(text) <= max_chars:
                        out.append(Sentence(text, doc, kind))
    return out


def fortunes(
    *,
    files: Sequence[str] = ("fortunes", "wisdom", "people", "literature", "love", "work"),
    min_chars: int = 20,
    max_chars: int = 120,
    path: str | Path | None = None,
) -> list[Sentence]:
    """Fortune cookies (Debian ``fortunes``), attribution lines removed, whitespace collapsed.

    Each fortune is its own document (``"wisdom:17"`` is the 18th of ``wisdom``); fortunes
    outside ``[min_chars, max_chars]`` characters after cleaning are dropped, as are those
    with a tab-indented layout (poems, dialogues, tables).

    Args:
        files: Which fortune files to read.
        min_chars: Shortest fortune kept.
        max_chars: Longest fortune kept.
        path: The fortunes folder; default ``/usr/share/games/fortunes``.

    Returns:
        The fortunes, in file order.

    Raises:
        MissingSourceError: if a file is missing (names the Debian package).
    """
    _check_lengths(min_chars, max_chars)
    if isinstance(files, str):
        raise WeightspaceValueError("`files` must be a sequence of names; wrap one in a list")
    folder = FORTUNES_DIR if path is None else Path(path)
    out: list[Sentence] = []
    for name in files:
        file = folder / name
        if not file.is_file():
            raise MissingSourceError(
                f"the fortune file {str(file)!r} is missing; install it with "
                "`apt-get install -y fortunes` (as root) or pass `path=`"
            )
        raw = file.read_text(encoding="utf-8", errors="replace")
        for i, block in enumerate(raw.split("\n%\n")):
            lines = [ln for ln in block.strip("%\n").split("\n") if not ln.strip().startswith("--")]
            if any(ln.startswith("\t") or ln.startswith("    ") for ln in lines):
                continue
            text = _SPACE.sub(" ", " ".join(lines)).strip()
            if min_chars <= len(text) <= max_chars:
                out.append(Sentence(text, f"{name}:{i}", "fortune"))
    return out


def split_by_document(
    sentences: Sequence[Sentence],
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    *,
    seed: int = 0,
) -> list[list[Sentence]]:
    """Split sentences into parts by document, so that no document spans two parts.

    The distinct documents (sorted) are shuffled with ``torch.randperm`` from a generator
    seeded with ``seed`` and cut by ``fractions``; each part keeps its sentences in the input
    order.

    Args:
        sentences: The sentences.
        fractions: One positive fraction per part, summing to 1.
        seed: Seed of the shuffle.

    Returns:
        One list of sentences per fraction.

    Raises:
        WeightspaceValueError: if ``fractions`` are not positive or do not sum to 1.

    Example:
        >>> from weightspace.text import Sentence, split_by_document
        >>> s = [Sentence(f"s{i}", f"d{i // 2}", "definition") for i in range(8)]
        >>> parts = split_by_document(s, (0.5, 0.5), seed=0)
        >>> [len(p) for p in parts], {x.document for x in parts[0]} & {x.document for x in parts[1]}
        ([4, 4], set())
    """
    fr = [float(f) for f in fractions]
    if not fr or any(f <= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise WeightspaceValueError(
            f"`fractions` must be positive and sum to 1, got {list(fractions)!r}"
        )
    docs = sorted({s.document for s in sentences})
    perm = torch.randperm(len(docs), generator=torch.Generator().manual_seed(int(seed))).tolist()
    part_of: dict[str, int] = {}
    cum, start = 0.0, 0
    for k, f in enumerate(fr):
        cum += f
        stop = len(docs) if k == len(fr) - 1 else round(cum * len(docs))
        for i in perm[start:stop]:
            part_of[docs[i]] = k
        start = stop
    parts: list[list[Sentence]] = [[] for _ in fr]
    for s in sentences:
        parts[part_of[s.document]].append(s)
    return parts
