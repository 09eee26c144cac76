"""The rules of Just One: when two clues count as the same word, invalid clues, the 13-card score.

Just One is cooperative: each turn one player guesses a mystery word; every other player
writes one clue word. Before the guesser sees them, clues that count as *identical* are all
removed, and so are *invalid* clues; then the guesser makes one guess or passes.

Two clues are identical here when, after :func:`normalise` (case, accents, anything that is
not a letter):

* they are the same word;
* they are inflections of one word (plurals: ``Prince``/``princes``, ``mouse``/``mice``;
  verb and adjective forms: ``ran``/``run``), from suffix rules and WordNet's exception lists;
* they are gender variants (``actor``/``actress``, ``prince``/``princess``,
  ``policeman``/``policewoman``), from suffix rules checked against the lexicon and a short
  list of irregular pairs;
* one is a spelling slip of the other: at least one of them is not an English word, and
  they differ by one edit (two from eight letters), or sound alike under a crude spelling
  key (``ph``/``f``, ``ck``/``k``, final ``ie``/``y``, doubled letters...):
  ``Philosophy``/``filosofie``;
* they are of one word family: WordNet links them, or two of their base forms, as
  derivationally related forms (``bake``/``baker``, ``ocean``/``oceanic``).

A clue is invalid when it is not one word of letters, counts as identical to the mystery
word under the same relation (the mystery word itself, misspelt, or of its family), or is
the mystery word joined to another word. A guess
is right when it is the mystery word up to inflection, gender and spelling slips (not family:
``sunny`` does not guess ``sun``).

The lexicon is WordNet 3.0 from Debian's ``wordnet-base`` (``/usr/share/wordnet``): its
single-word lemmas, exception lists and derivational links. These are approximations of a
table's judgement, documented by the tests' hand-worked cases. A compound of the mystery
word and another word (``sandstone`` for ``sand``) is an invalid clue; compounds of two clues
and homophones (``whether``/``weather``) are not caught.

**Scoring** (:class:`ScoreSheet`): 13 cards; a right guess scores the card; a pass, or a card
whose clues were all removed, loses that card; a wrong guess loses that card and the next one
(on the last card, one card already won instead). :func:`just_one_rating` reads a score against the
rulebook's scale.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from weightspace._errors import WeightspaceValueError

__all__ = [
    "CARDS",
    "RULEBOOK_SCALE",
    "CardOutcome",
    "FilteredClues",
    "Lexicon",
    "ScoreSheet",
    "check_clue",
    "filter_clues",
    "just_one_rating",
    "normalise",
    "same_family",
    "same_word",
    "wordnet_lexicon",
]

#: Cards in a game.
CARDS = 13

#: The rulebook's reading of a final score: ``(lowest, highest, words)``, best first.
RULEBOOK_SCALE: tuple[tuple[int, int, str], ...] = (
    (13, 13, "perfect score"),
    (12, 12, "incredible"),
    (11, 11, "awesome"),
    (9, 10, "excellent"),
    (7, 8, "average"),
    (4, 6, "a good start"),
    (0, 3, "try again"),
)

_WORDNET = Path("/usr/share/wordnet")
_LIVING = {5, 18}  # WordNet's lexicographer files noun.animal and noun.person
_LETTERS = re.compile(r"[^a-z]")
_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

# Inflection suffixes (morphy's rules, plus a doubled final consonant): (ending, replacement).
_INFLECTIONS = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
)
# Feminine endings: (ending, masculine replacements).
_GENDER_SUFFIXES = (
    ("ress", ("or", "er")),
    ("ess", ("", "e")),
    ("woman", ("man",)),
    ("women", ("men",)),
)
_GENDER_PAIRS = {
    "heroine": "hero",
    "widower": "widow",
    "usherette": "usher",
    "masseuse": "masseur",
    "fiancee": "fiance",
    "blonde": "blond",
    "goddess": "god",
    "duchess": "duke",
    "empress": "emperor",
    "aviatrix": "aviator",
    "executrix": "executor",
    "comedienne": "comedian",
}


def normalise(word: str) -> str:
    """Lower case, accents dropped, only the letters a-z kept (``"Café-au-lait"``: ``cafeaulait``).

    Example:
        >>> normalise("  Crème Brûlée ")
        'cremebrulee'
    """
    decomposed = unicodedata.normalize("NFKD", word)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _LETTERS.sub("", plain.lower())


def _sound_key(word: str) -> str:
    """A crude spelling-independent key: ``philosophy`` and ``filosofie`` both give ``filosofi``."""
    w = word
    for a, b in (("ph", "f"), ("ck", "k"), ("qu", "kw"), ("x", "ks"), ("wh", "w")):
        w = w.replace(a, b)
    w = re.sub(r"c(?=[eiy])", "s", w)
    w = w.replace("c", "k")
    w = re.sub(r"(ie|ey|y)$", "i", w)
    w = w.replace("y", "i")
    w = re.sub(r"(.)\1+", r"\1", w)
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (adjacent transpositions), stopped above ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """The English words the rules know: lemmas, inflection exceptions and word families.

    Build it with :func:`wordnet_lexicon` (WordNet from Debian) or directly for tests.

    Args:
        words: Base forms (normalised single words).
        exceptions: Irregular inflections to their base forms (``"mice"`` → ``("mouse",)``).
        related: Derivationally related base forms (symmetric: ``"ocean"`` → ``{"oceanic"}``).
        persons: Nouns naming people or animals; gender variants are folded only between
            them (``actress``/``actor``, never ``address``/``adder``). ``None`` allows every
            known word.
    """

    words: frozenset[str]
    exceptions: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    related: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    persons: frozenset[str] | None = None
    cache: dict[str, frozenset[str]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def __contains__(self, word: object) -> bool:
        """Whether ``word`` is an English word: a base form or an inflection of one."""
        return isinstance(word, str) and bool(self.base_forms(normalise(word)))

    def base_forms(self, word: str) -> frozenset[str]:
        """The base forms of a normalised word: itself if known, its inflections' bases.

        Example:
            >>> lex = Lexicon(frozenset({"prince", "mouse", "box"}), {"mice": ("mouse",)})
            >>> sorted(lex.base_forms("princes")), sorted(lex.base_forms("mice"))
            (['prince'], ['mouse'])
            >>> sorted(lex.base_forms("boxes")), sorted(lex.base_forms("blorp"))
            (['box'], [])
        """
        return _base_forms(self, word)

    def variants(self, word: str) -> frozenset[str]:
        """The base forms of a word and of its masculine form (gender variants folded).

        Example:
            >>> lex = Lexicon(frozenset({"actor", "prince", "host"}))
            >>> sorted(lex.variants("actresses")), sorted(lex.variants("princess"))
            (['actor'], ['prince'])
        """
        bases = set(self.base_forms(word))
        stems = {word[: -len(e)] + r for e, r in _INFLECTIONS if word.endswith(e)}
        for form in [*bases, word, *stems]:
            if form in self.words and not self._person(form):
                continue
            for masculine in _masculine(form):
                bases |= {b for b in self.base_forms(masculine) if self._person(b)}
        return frozenset(bases)

    def _person(self, word: str) -> bool:
        return self.persons is None or word in self.persons

    def family(self, word: str) -> frozenset[str]:
        """The word's variants and the base forms WordNet relates to them.

        Example:
            >>> lex = Lexicon(frozenset({"bake", "baker"}),
            ...               related={"bake": frozenset({"baker"}), "baker": frozenset({"bake"})})
            >>> sorted(lex.family("bakers"))
            ['bake', 'baker']
        """
        forms = set(self.variants(word))
        for form in list(forms):
            forms |= self.related.get(form, frozenset())
        return frozenset(forms)


def _masculine(word: str) -> list[str]:
    out = []
    if word in _GENDER_PAIRS:
        out.append(_GENDER_PAIRS[word])
    for ending, replacements in _GENDER_SUFFIXES:
        if word.endswith(ending) and len(word) > len(ending) + 1:
            stem = word[: -len(ending)]
            out.extend(stem + r for r in replacements)
            if ending == "ess" and len(stem) > 2 and stem[-1] == stem[-2]:
                out.append(stem[:-1])  # goddess -> god
    return out


def _base_forms(lex: Lexicon, word: str) -> frozenset[str]:
    cached = lex.cache.get(word)
    if cached is not None:
        return cached
    out = set()
    if word in lex.words:
        out.add(word)
    for base in lex.exceptions.get(word, ()):
        if base in lex.words:
            out.add(base)
    for ending, replacement in _INFLECTIONS:
        if word.endswith(ending) and len(word) - len(ending) >= 2:
            stem = word[: -len(ending)] + replacement
            if stem in lex.words:
                out.add(stem)
            elif (
                not replacement
                and len(stem) >= 3
                and stem[-1] == stem[-2]
                and stem[-1] not in "aeiouls"
                and stem[:-1] in lex.words
            ):
                out.add(stem[:-1])  # running -> run, stopped -> stop
    result = frozenset(out)
    lex.cache[word] = result
    return result


def _read_exceptions(folder: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for pos in ("noun", "verb", "adj"):
        file = folder / f"{pos}.exc"
        if not file.is_file():
            continue
        for line in file.read_text(encoding="latin-1").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isalpha():
                out.setdefault(parts[0], []).extend(p for p in parts[1:] if p.isalpha())
    return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}


def _clean_lemma(raw: str) -> str | None:
    word = raw.split("(", 1)[0].lower()
    return word if word.isalpha() and word.isascii() else None


@dataclasses.dataclass(frozen=True)
class _WordNet:
    lexicon: Lexicon
    #: For each noun lemma: its synsets' lexicographer files, most frequent sense first.
    noun_files: dict[str, tuple[int, ...]]
    #: For each lemma: its number of senses per part of speech.
    senses: dict[str, dict[str, int]]
    #: Nouns written in lower case in at least one synset (not only a proper name).
    common_nouns: frozenset[str]
    #: Nouns whose most frequent sense is written in lower case.
    first_sense_common: frozenset[str]
    #: Nouns with at least one sense tagged in WordNet's semantic concordance (SemCor).
    tagged_nouns: frozenset[str]


def _read_wordnet(folder: Path) -> _WordNet:
    if not (folder / "index.noun").is_file():
        raise WeightspaceValueError(
            f"no WordNet in {str(folder)!r}; install Debian's `wordnet-base` (scripts/setup.sh "
            "does) or set WEIGHTSPACE_WORDNET to a folder holding index.noun, data.noun, ..."
        )
    words: set[str] = set()
    tagged: set[str] = set()
    senses: dict[str, dict[str, int]] = {}
    offsets: dict[str, list[int]] = {}
    for pos, name in _POS_FILES.items():
        for line in (folder / f"index.{name}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split()
            word = _clean_lemma(fields[0])
            if word is None:
                continue
            words.add(word)
            senses.setdefault(word, {})[pos] = int(fields[2])
            if pos == "n":
                count = int(fields[2])
                offsets[word] = [int(x) for x in fields[-count:]]
                if int(fields[-count - 1]) > 0:
                    tagged.add(word)
    synset_words: dict[tuple[str, int], list[str | None]] = {}
    common: set[str] = set()
    lower_at: dict[int, set[str]] = {}
    lexfile: dict[int, int] = {}
    pending: list[tuple[str, int, str, int, int]] = []
    for name in _POS_FILES.values():
        for line in (folder / f"data.{name}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, lex_num, n_words = int(fields[0]), int(fields[1]), int(fields[3], 16)
            key_pos = "a" if fields[2] == "s" else fields[2]
            raw = [fields[4 + 2 * k] for k in range(n_words)]
            members = [_clean_lemma(w) for w in raw]
            if key_pos == "n":
                lower = {m for w, m in zip(raw, members, strict=True) if m and w[0].islower()}
                common |= lower
                lower_at[offset] = lower
            synset_words[(key_pos, offset)] = members
            if key_pos == "n":
                lexfile[offset] = lex_num
            at = 4 + 2 * n_words
            n_ptrs = int(fields[at])
            for k in range(n_ptrs):
                symbol, target, tpos, st = fields[at + 1 + 4 * k : at + 5 + 4 * k]
                if symbol == "+" and st != "0000":
                    tpos = "a" if tpos == "s" else tpos
                    pending.append((key_pos, offset, tpos, int(target), int(st, 16)))
    related: dict[str, set[str]] = {}
    for src_pos, src_off, dst_pos, dst_off, link in pending:
        src_words = synset_words.get((src_pos, src_off))
        dst_words = synset_words.get((dst_pos, dst_off))
        if not src_words or not dst_words:
            continue
        s, t = (link >> 8) - 1, (link & 0xFF) - 1
        if not (0 <= s < len(src_words) and 0 <= t < len(dst_words)):
            continue
        a, b = src_words[s], dst_words[t]
        if a and b and a != b:
            related.setdefault(a, set()).add(b)
            related.setdefault(b, set()).add(a)
    lex = Lexicon(
        frozenset(words),
        _read_exceptions(folder),
        {k: frozenset(v) for k, v in related.items()},
    )
    noun_files = {w: tuple(lexfile.get(o, -1) for o in offs) for w, offs in offsets.items()}
    persons = frozenset(w for w, files in noun_files.items() if set(files) & _LIVING)
    lex = dataclasses.replace(lex, persons=persons)
    first = frozenset(w for w, offs in offsets.items() if w in lower_at.get(offs[0], ()))
    return _WordNet(lex, noun_files, senses, frozenset(common), first, frozenset(tagged))


@functools.lru_cache(maxsize=4)
def _wordnet(folder: str) -> _WordNet:
    return _read_wordnet(Path(folder))


def _wordnet_folder(folder: str | Path | None) -> str:
    if folder is not None:
        return str(folder)
    return os.environ.get("WEIGHTSPACE_WORDNET", str(_WORDNET))


def wordnet_lexicon(folder: str | Path | None = None) -> Lexicon:
    """The rules' lexicon from WordNet 3.0 (read once per process, about 3 s).

    Args:
        folder: The WordNet database folder; default ``$WEIGHTSPACE_WORDNET`` or Debian's
            ``/usr/share/wordnet``.

    Raises:
        WeightspaceValueError: if the folder holds no WordNet database.
    """
    return _wordnet(_wordnet_folder(folder)).lexicon


def _slip(a: str, b: str, lex: Lexicon) -> bool:
    if a in lex and b in lex:
        return False  # two real words are two words, however close
    if _sound_key(a) == _sound_key(b) and min(len(a), len(b)) >= 3:
        return True
    shortest = min(len(a), len(b))
    limit = 2 if shortest >= 8 else 1 if shortest >= 4 else 0
    return limit > 0 and _edit_distance(a, b, limit) <= limit


def same_word(a: str, b: str, lex: Lexicon | None = None) -> bool:
    """Whether two words are one word for the rules: equal, inflections, gender variants or slips.

    Args:
        a: A word as written.
        b: Another.
        lex: The lexicon (default: :func:`wordnet_lexicon`).

    Example:
        >>> same_word("Princes", "prince"), same_word("actress", "Actor")
        (True, True)
        >>> same_word("filosofie", "Philosophy"), same_word("bear", "beer")
        (True, False)
    """
    lex = wordnet_lexicon() if lex is None else lex
    x, y = normalise(a), normalise(b)
    if not x or not y:
        return False
    if x == y:
        return True
    if lex.variants(x) & lex.variants(y):
        return True
    return _slip(x, y, lex)


def same_family(a: str, b: str, lex: Lexicon | None = None) -> bool:
    """Whether two clues count as identical: :func:`same_word`, or one word family.

    Example:
        >>> same_family("oceanic", "Ocean"), same_family("baker", "bakes")
        (True, True)
        >>> same_family("sun", "moon"), same_word("baker", "bake")
        (False, False)
    """
    lex = wordnet_lexicon() if lex is None else lex
    if same_word(a, b, lex):
        return True
    x, y = normalise(a), normalise(b)
    return bool(lex.family(x) & lex.family(y))


def check_clue(clue: str, mystery: str, lex: Lexicon | None = None) -> str | None:
    """Why a clue is invalid for a mystery word, or ``None`` if it is valid.

    Example:
        >>> check_clue("sea", "ocean") is None
        True
        >>> check_clue("Oceans", "ocean"), check_clue("oceanic", "ocean")
        ('the mystery word', 'of the family of the mystery word')
        >>> check_clue("big wave", "ocean"), check_clue("", "ocean")
        ('not one word', 'empty')
        >>> check_clue("sandstone", "sand"), check_clue("elephant", "ant")
        ('a compound of the mystery word', None)
    """
    lex = wordnet_lexicon() if lex is None else lex
    text = clue.strip()
    if not text:
        return "empty"
    if not all(c.isalpha() or c in "-'" for c in text) or not normalise(text):
        return "not one word"
    if same_word(text, mystery, lex):
        return "the mystery word"
    if same_family(text, mystery, lex):
        return "of the family of the mystery word"
    if _compound_of(normalise(text), normalise(mystery), lex):
        return "a compound of the mystery word"
    return None


def _compound_of(clue: str, mystery: str, lex: Lexicon) -> bool:
    """Whether ``clue`` is ``mystery`` joined to another word (``sandstone`` for ``sand``)."""
    if len(mystery) < 3 or len(clue) < len(mystery) + 3:
        return False
    for part, rest in (
        (clue[: len(mystery)], clue[len(mystery) :]),
        (clue[-len(mystery) :], clue[: -len(mystery)]),
    ):
        if part == mystery and rest in lex:
            return True
    return False


@dataclasses.dataclass(frozen=True)
class FilteredClues:
    """The clues of one turn after the rules: what the guesser sees and why others went.

    Attributes:
        written: The clues as written, one per clue giver.
        kept: The clues the guesser sees (in the givers' order).
        removed: For each removed clue's index, the reason (``"invalid: ..."`` or
            ``"identical to <clue>"``).
    """

    written: tuple[str, ...]
    kept: tuple[str, ...]
    removed: dict[int, str]


def filter_clues(clues: Sequence[str], mystery: str, lex: Lexicon | None = None) -> FilteredClues:
    """Apply the rules to one turn's clues: drop invalid ones, then all that count as identical.

    Identical is transitive here: if ``a`` matches ``b`` and ``b`` matches ``c``, all three go.

    Args:
        clues: One clue per clue giver, as written.
        mystery: The mystery word.
        lex: The lexicon (default: :func:`wordnet_lexicon`).

    Example:
        >>> out = filter_clues(["Waves", "wave", "salt", "ocean", "blue"], "ocean")
        >>> out.kept
        ('salt', 'blue')
        >>> out.removed
        {0: 'identical to wave', 1: 'identical to Waves', 3: 'invalid: the mystery word'}
    """
    lex = wordnet_lexicon() if lex is None else lex
    written = tuple(clues)
    removed: dict[int, str] = {}
    valid = []
    for k, clue in enumerate(written):
        reason = check_clue(clue, mystery, lex)
        if reason is None:
            valid.append(k)
        else:
            removed[k] = f"invalid: {reason}"
    # Union-find over the valid clues under same_family.
    parent = {k: k for k in valid}

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    match: dict[int, int] = {}
    for i, a in enumerate(valid):
        for b in valid[i + 1 :]:
            if same_family(written[a], written[b], lex):
                parent[root(b)] = root(a)
                match.setdefault(a, b)
                match.setdefault(b, a)
    groups: dict[int, list[int]] = {}
    for k in valid:
        groups.setdefault(root(k), []).append(k)
    for members in groups.values():
        if len(members) > 1:
            for k in members:
                removed[k] = f"identical to {written[match[k]]}"
    kept = tuple(written[k] for k in valid if k not in removed)
    return FilteredClues(written, kept, dict(sorted(removed.items())))


class CardOutcome(str, enum.Enum):
    """How a card ended: guessed right, guessed wrong, passed, or every clue removed."""

    RIGHT = "right"
    WRONG = "wrong"
    PASS = "pass"
    NO_CLUES = "no clues"


@dataclasses.dataclass
class ScoreSheet:
    """The 13-card deck of one game and what became of each card.

    Play the cards in order: :meth:`next_card` gives the next mystery word (``None`` when the
    game is over), :meth:`record` its outcome.

    Args:
        words: The mystery words of the deck, in playing order (13 in a real game).

    Example:
        >>> sheet = ScoreSheet(["a", "b", "c", "d"])
        >>> sheet.record(sheet.next_card(), CardOutcome.RIGHT)
        >>> sheet.record(sheet.next_card(), CardOutcome.WRONG)  # loses b and c
        >>> sheet.next_card(), sheet.record("d", CardOutcome.PASS), sheet.score
        ('d', None, 1)
    """

    words: Sequence[str]
    won: list[str] = dataclasses.field(default_factory=list)
    lost: list[str] = dataclasses.field(default_factory=list)
    log: list[tuple[str, CardOutcome]] = dataclasses.field(default_factory=list)
    _at: int = 0

    def __post_init__(self) -> None:
        self.words = tuple(self.words)
        if not self.words:
            raise WeightspaceValueError("`words` is empty; a game needs at least one card")

    @property
    def score(self) -> int:
        """Cards won so far."""
        return len(self.won)

    @property
    def position(self) -> int:
        """Cards played or lost so far (the current card's index)."""
        return self._at

    @property
    def over(self) -> bool:
        """Whether every card has been played or lost."""
        return self._at >= len(self.words)

    def next_card(self) -> str | None:
        """The mystery word of the card to play now, or ``None`` if the game is over."""
        return None if self.over else self.words[self._at]

    def record(self, word: str | None, outcome: CardOutcome) -> None:
        """Record the outcome of the current card.

        Raises:
            WeightspaceValueError: if the game is over or ``word`` is not the current card.
        """
        current = self.next_card()
        if current is None or word != current:
            raise WeightspaceValueError(
                f"`word` {word!r} is not the card in play ({current!r}); call next_card first"
            )
        self.log.append((current, CardOutcome(outcome)))
        self._at += 1
        if outcome is CardOutcome.RIGHT:
            self.won.append(current)
            return
        self.lost.append(current)
        if outcome is CardOutcome.WRONG:
            if not self.over:
                self.lost.append(self.words[self._at])  # the next card goes too
                self._at += 1
            elif self.won:
                self.lost.append(self.won.pop())  # last card: one card already won goes


def just_one_rating(score: int) -> str:
    """The rulebook's words for a final score out of 13.

    Example:
        >>> just_one_rating(13), just_one_rating(10), just_one_rating(7), just_one_rating(3)
        ('perfect score', 'excellent', 'average', 'try again')

    Raises:
        WeightspaceValueError: if ``score`` is not between 0 and 13.
    """
    for low, high, words in RULEBOOK_SCALE:
        if low <= score <= high:
            return words
    raise WeightspaceValueError(f"`score` must be between 0 and {CARDS}, got {score}")
