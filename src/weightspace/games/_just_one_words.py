"""Word lists for Just One, from offline lexical resources: mystery words, clues, guesses.

Three lists, all built from ``wordfreq``'s English frequency list (the words in frequency
order, with their Zipf frequency: log10 of occurrences per billion words) and WordNet 3.0
from Debian (see :func:`~weightspace.games.wordnet_lexicon`):

* :func:`mystery_words`: the cards. Filters, in order: lower-case ASCII letters only, 3 to
  10 letters; Zipf frequency between ``min_zipf`` and ``max_zipf`` (common, but not function
  words); a WordNet noun whose most frequent sense is written in lower case (not a proper
  name) and that has a sense tagged in WordNet's semantic concordance (SemCor: attested in
  edited prose, which leaves out most slang); mostly a noun (at
  least as many noun senses as verb, adjective and adverb senses together); its most frequent
  noun sense is something concrete (WordNet's lexicographer files for animals, artifacts,
  body parts, food, locations, natural objects, plants and substances); a base
  form (not the plural or inflection of another word); not in :data:`EXCLUDED_WORDS`, a short
  list of words a family game leaves out (drugs, bodily and sexual words, swearing), which
  the bots never write or guess either.
* :func:`clue_words`: what the bots may write as clues: letters only, 3 to 12 letters, Zipf
  frequency at least ``min_zipf``, a WordNet lemma or an inflection of one.
* :func:`guess_words`: what the bots may guess: WordNet nouns (lower case, base forms) with
  Zipf frequency at least ``min_zipf``. The guesser does not know the list of cards.

``split_words`` splits the cards into validation words (for tuning) and test words (for the
reported games) with a seed.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from pathlib import Path

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module
from weightspace.games._just_one_rules import _wordnet, _wordnet_folder

__all__ = [
    "CONCRETE_FILES",
    "EXCLUDED_WORDS",
    "clue_words",
    "guess_words",
    "mystery_words",
    "split_words",
]

#: WordNet noun lexicographer files whose words make good cards: number -> name.
CONCRETE_FILES = {
    5: "noun.animal",
    6: "noun.artifact",
    8: "noun.body",
    13: "noun.food",
    15: "noun.location",
    17: "noun.object",
    20: "noun.plant",
    27: "noun.substance",
}

#: Cards left out of a family game's deck by hand (the filters let them through).
EXCLUDED_WORDS = frozenset(
    {
        "ass", "bitch", "breast", "butt", "cannabis", "cocaine", "cock", "crap", "damn",
        "dick", "dope", "fuck", "fucking", "ghetto", "heroin", "marijuana", "nude", "pee",
        "piss", "porn", "porno", "pussy", "rape", "sex", "sexy", "shit", "slut", "sperm",
        "urine", "whore", "womb",
    }
)  # fmt: skip

_TOP = 60000


@functools.lru_cache(maxsize=2)
def _frequencies() -> tuple[tuple[str, float], ...]:
    """The top English words of wordfreq with their Zipf frequencies, most frequent first."""
    wordfreq = require_module("wordfreq", pip="wordfreq", extra="games")
    words = wordfreq.top_n_list("en", _TOP)
    return tuple((w, float(wordfreq.zipf_frequency(w, "en"))) for w in words)


def _letters(word: str, low: int, high: int) -> bool:
    return low <= len(word) <= high and word.isascii() and word.isalpha() and word.islower()


def mystery_words(
    *,
    min_zipf: float = 3.5,
    max_zipf: float = 5.0,
    wordnet: str | Path | None = None,
) -> tuple[str, ...]:
    """The mystery words (cards), most frequent first; see the module text for the filters.

    Args:
        min_zipf: The least Zipf frequency (3.5: about three per million words).
        max_zipf: The largest (5.0: 100 per million words).
        wordnet: The WordNet folder (default: Debian's).

    Raises:
        WeightspaceValueError: if ``min_zipf > max_zipf``.
        MissingDependencyError: without ``wordfreq`` (``pip install weightspace[games]``).
    """
    if min_zipf > max_zipf:
        raise WeightspaceValueError(
            f"`min_zipf` ({min_zipf}) is above `max_zipf` ({max_zipf}); swap them"
        )
    wn = _wordnet(_wordnet_folder(wordnet))
    lex = wn.lexicon
    out = []
    for word, zipf in _frequencies():
        if not (min_zipf <= zipf <= max_zipf and _letters(word, 3, 10)):
            continue
        if word not in wn.first_sense_common or word not in wn.tagged_nouns:
            continue
        if word in EXCLUDED_WORDS:
            continue
        senses = wn.senses.get(word, {})
        if senses.get("n", 0) < sum(v for k, v in senses.items() if k != "n"):
            continue
        if wn.noun_files[word][0] not in CONCRETE_FILES:
            continue
        if lex.base_forms(word) != {word} or lex.variants(word) != {word}:
            continue
        out.append(word)
    return tuple(out)


def clue_words(*, min_zipf: float = 3.5, wordnet: str | Path | None = None) -> tuple[str, ...]:
    """Words the bots may give as clues, most frequent first.

    Args:
        min_zipf: The least Zipf frequency.
        wordnet: The WordNet folder (default: Debian's).
    """
    lex = _wordnet(_wordnet_folder(wordnet)).lexicon
    return tuple(
        w
        for w, z in _frequencies()
        if z >= min_zipf and _letters(w, 3, 12) and w in lex and w not in EXCLUDED_WORDS
    )


def guess_words(*, min_zipf: float = 3.0, wordnet: str | Path | None = None) -> tuple[str, ...]:
    """Words the bots may guess (common nouns in base form), most frequent first.

    Args:
        min_zipf: The least Zipf frequency.
        wordnet: The WordNet folder (default: Debian's).
    """
    wn = _wordnet(_wordnet_folder(wordnet))
    return tuple(
        w
        for w, z in _frequencies()
        if z >= min_zipf
        and _letters(w, 3, 12)
        and w in wn.common_nouns
        and w not in EXCLUDED_WORDS
        and wn.lexicon.base_forms(w) == {w}
    )


def split_words(
    words: Sequence[str], *, validation: float = 0.2, seed: int = 0
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split cards into ``(validation, test)`` words at random (seeded), each in list order.

    Example:
        >>> val, test = split_words(["a", "b", "c", "d", "e"], validation=0.4, seed=0)
        >>> len(val), len(test), sorted(val + test)
        (2, 3, ['a', 'b', 'c', 'd', 'e'])

    Raises:
        WeightspaceValueError: if ``validation`` is not strictly between 0 and 1.
    """
    if not 0 < validation < 1:
        raise WeightspaceValueError(f"`validation` must be between 0 and 1, got {validation}")
    order = list(range(len(words)))
    random.Random(seed).shuffle(order)
    k = round(validation * len(words))
    chosen = set(order[:k])
    val = tuple(w for i, w in enumerate(words) if i in chosen)
    test = tuple(w for i, w in enumerate(words) if i not in chosen)
    return val, test
