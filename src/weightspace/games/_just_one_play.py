"""A person plays Just One with the bots: on a local web page or in a terminal.

The person takes one seat at a five-player table: the **guesser** (four bots write clues; the
person sees the clues that survive and guesses or passes) or a **clue giver** (the person sees
the mystery word and writes a clue beside three bots' clues; a bot guesses). Each finished
game is appended to a local JSON file (:func:`read_just_one_games`), so that bots and people
can be compared once people have played.

``weightspace play just-one`` serves the page (a :class:`JustOneRoom` of the games' server);
``weightspace play just-one --terminal`` plays in the terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from weightspace._errors import WeightspaceValueError
from weightspace.games._just_one_agents import JustOneBrain, JustOneTable, deal_cards
from weightspace.games._just_one_rules import (
    CardOutcome,
    ScoreSheet,
    check_clue,
    filter_clues,
    just_one_rating,
    same_word,
)
from weightspace.games._server import append_record, read_records, run_server, serve_rooms

__all__ = [
    "JustOneGame",
    "JustOneRoom",
    "add_just_one_command",
    "play_just_one_in_terminal",
    "read_just_one_games",
]

logger = logging.getLogger(__name__)

Role = Literal["guesser", "giver"]
_WHAT = "a Just One games file"
_PLAYER = re.compile(r"[^\w .'-]")


def read_just_one_games(path: str | Path) -> list[dict[str, Any]]:
    """The games people played, oldest first (an empty list if there is no file yet).

    Each game has ``player``, ``role``, ``bots``, ``seed``, ``score``, ``rating``, ``time``
    and ``cards`` (mystery word, clues written and kept, guess, outcome).

    Raises:
        WeightspaceValueError: if the file exists but is not a games file.
    """
    return read_records(path, "games", _WHAT)


class JustOneGame:
    """One game of Just One with a person in one seat and bots in the others.

    Call :meth:`view` for what the person may see now, then :meth:`give_clue` (giver) or
    :meth:`guess` (guesser; an empty guess passes), then :meth:`next_card`, until
    ``view()["phase"] == "over"``.

    Args:
        brain: The bots' models.
        config: The bots' table (its ``givers`` count includes the person's seat if the person
            gives clues).
        words: The deck, in playing order.
        role: ``"guesser"`` or ``"giver"``.
        player: The person's name (for the record).
        seed: Random numbers of the bots' clues.
        pass_below: The bot guesser's confidence threshold (see :class:`JustOneTable`).

    Raises:
        WeightspaceValueError: for an unknown role or an empty deck.
    """

    def __init__(
        self,
        brain: JustOneBrain,
        config: JustOneTable,
        words: Sequence[str],
        *,
        role: Role,
        player: str = "",
        seed: int = 0,
        pass_below: float = float("-inf"),
    ) -> None:
        if role not in ("guesser", "giver"):
            raise WeightspaceValueError(f"`role` must be 'guesser' or 'giver', got {role!r}")
        self.brain = brain
        self.config = config
        self.role: Role = role
        self.player = _PLAYER.sub("", player)[:64].strip() or "anonymous"
        self.seed = seed
        self.pass_below = pass_below
        self.sheet = ScoreSheet(list(words))
        self.cards: list[dict[str, Any]] = []
        self._phase = "clue" if role == "giver" else "guess"
        self._current: dict[str, Any] | None = None
        self._start_card()

    @property
    def over(self) -> bool:
        """Whether the game has ended."""
        return self.sheet.over

    def _bot_clues(self, mystery: str, count: int) -> list[str]:
        clues = []
        k = len(self.sheet.log)
        for g in range(count):
            gen = torch.Generator().manual_seed(((self.seed * 1009 + k) * 17 + g) % (2**63))
            clues.append(
                self.brain.give_clue(
                    mystery,
                    self.config.giver,
                    self.config.policy,
                    others=self.config.givers - 1,
                    temperature=self.config.temperature,
                    generator=gen,
                )
            )
        return clues

    def _start_card(self) -> None:
        mystery = self.sheet.next_card()
        if mystery is None:
            self._phase = "over"
            self._current = None
            return
        self._current = {"card": self.sheet.position + 1, "mystery": mystery}
        if self.role == "guesser":
            result = filter_clues(self._bot_clues(mystery, self.config.givers), mystery)
            self._current.update(written=list(result.written), kept=list(result.kept))
            self._current["removed"] = {str(k): v for k, v in result.removed.items()}
            if not result.kept:
                self._finish(None, CardOutcome.NO_CLUES)
                return
            self._phase = "guess"
        else:
            self._phase = "clue"

    def _finish(self, guess: str | None, outcome: CardOutcome) -> None:
        assert self._current is not None
        self._current.update(guess=guess, outcome=outcome.value)
        self.sheet.record(self._current["mystery"], outcome)
        self.cards.append(dict(self._current))
        self._phase = "result"

    def view(self) -> dict[str, Any]:
        """What the person may see now (never the mystery word of a guesser's card in play).

        Keys: ``phase`` (``"clue"``, ``"guess"``, ``"result"`` or ``"over"``), ``card``
        (1-based), ``cards``, ``score``, ``lost``, and per phase ``mystery`` (a giver's card),
        ``clues`` (a guesser's surviving clues), ``result`` (the last card: mystery word,
        clues written and kept with the reasons others went, guess, outcome), ``rating``.
        """
        out: dict[str, Any] = {
            "phase": self._phase,
            "role": self.role,
            "card": self._current["card"] if self._current else len(self.sheet.words),
            "cards": len(self.sheet.words),
            "score": self.sheet.score,
            "lost": len(self.sheet.lost),
        }
        if self._phase == "clue" and self._current is not None:
            out["mystery"] = self._current["mystery"]
        if self._phase == "guess" and self._current is not None:
            out["clues"] = list(self._current["kept"])
        if self._phase in ("result", "over") and self.cards:
            out["result"] = self.cards[-1]
        if self.over and self._phase == "over":
            out["rating"] = just_one_rating(self.sheet.score)
        return out

    def give_clue(self, clue: str) -> dict[str, Any]:
        """The person's clue for the card in play; bots add theirs, a bot guesses.

        Returns:
            :meth:`view` after the card.

        Raises:
            WeightspaceValueError: if it is not the person's turn to give a clue, or the clue
                is empty or not one word (clues that are merely invalid are played and
                removed, as at a table).
        """
        if self._phase != "clue" or self._current is None:
            raise WeightspaceValueError(f"it is not time for a clue (phase {self._phase!r})")
        mystery = self._current["mystery"]
        reason = check_clue(clue, mystery, self.brain.lexicon)
        if reason in ("empty", "not one word"):
            raise WeightspaceValueError(f"`clue` {clue!r} is {reason}; write a single word")
        clues = [clue.strip(), *self._bot_clues(mystery, self.config.givers - 1)]
        result = filter_clues(clues, mystery, self.brain.lexicon)
        self._current.update(written=list(result.written), kept=list(result.kept))
        self._current["removed"] = {str(k): v for k, v in result.removed.items()}
        if not result.kept:
            self._finish(None, CardOutcome.NO_CLUES)
            return self.view()
        guess, confidence = self.brain.guess(result.kept, self.config.guesser)
        if confidence < self.pass_below or not guess:
            self._finish(None, CardOutcome.PASS)
        elif same_word(guess, mystery, self.brain.lexicon):
            self._finish(guess, CardOutcome.RIGHT)
        else:
            self._finish(guess, CardOutcome.WRONG)
        return self.view()

    def guess(self, word: str) -> dict[str, Any]:
        """The person's guess for the card in play; an empty guess passes.

        Returns:
            :meth:`view` after the card.

        Raises:
            WeightspaceValueError: if it is not the person's turn to guess.
        """
        if self._phase != "guess" or self._current is None:
            raise WeightspaceValueError(f"it is not time for a guess (phase {self._phase!r})")
        word = word.strip()
        if not word:
            self._finish(None, CardOutcome.PASS)
        elif same_word(word, self._current["mystery"], self.brain.lexicon):
            self._finish(word, CardOutcome.RIGHT)
        else:
            self._finish(word, CardOutcome.WRONG)
        return self.view()

    def next_card(self) -> dict[str, Any]:
        """Move on after a card's result.

        Raises:
            WeightspaceValueError: if the current card has not been played yet.
        """
        if self._phase != "result":
            raise WeightspaceValueError(f"the card is not finished (phase {self._phase!r})")
        self._start_card()
        return self.view()

    def record(self) -> dict[str, Any]:
        """The game as saved in the games file."""
        return {
            "player": self.player,
            "role": self.role,
            "bots": dataclasses.asdict(self.config),
            "pass_below": None if self.pass_below == float("-inf") else self.pass_below,
            "seed": self.seed,
            "score": self.sheet.score,
            "rating": just_one_rating(self.sheet.score) if self.over else None,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cards": self.cards,
        }


def play_just_one_in_terminal(
    game: JustOneGame,
    *,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    record: str | Path | None = None,
) -> JustOneGame:
    """Play a game in a terminal (or with any ``read``/``write`` pair, as the tests do).

    Args:
        game: A fresh game.
        read: Asks a question, returns the answer (default: :func:`input`).
        write: Shows a line (default: :func:`print`).
        record: The games file to append the finished game to (``None``: not saved).

    Returns:
        The finished game.
    """
    while True:
        view = game.view()
        if view["phase"] == "over":
            break
        if view["phase"] == "guess":
            write(f"Card {view['card']} of {view['cards']}. Clues: {', '.join(view['clues'])}")
            game.guess(read("Your guess (empty to pass): "))
        elif view["phase"] == "clue":
            write(f"Card {view['card']} of {view['cards']}. The mystery word: {view['mystery']}")
            try:
                game.give_clue(read("Your clue: "))
            except WeightspaceValueError as exc:
                write(str(exc))
                continue
        view = game.view()
        write(describe(view["result"]))
        write(f"Score {view['score']}, cards lost {view['lost']}.")
        game.next_card()
    view = game.view()
    write(f"Game over: {view['score']} of {view['cards']} ({view['rating']}).")
    if record is not None:
        append_record(record, "games", game.record(), _WHAT)
    return game


def describe(result: Mapping[str, Any]) -> str:
    """One line about a finished card.

    Example:
        >>> describe({"mystery": "sea", "written": ["salt", "wave", "Waves"], "kept": ["salt"],
        ...           "removed": {"1": "identical to Waves", "2": "identical to wave"},
        ...           "guess": "sea", "outcome": "right"})
        'The word was "sea". Clues: salt (wave, Waves removed). Guess: sea, right.'
    """
    written = result.get("written", [])
    removed = [written[int(k)] for k in result.get("removed", {})]
    clues = ", ".join(result.get("kept", [])) or "none left"
    gone = f" ({', '.join(removed)} removed)" if removed else ""
    guess = result.get("guess") or "(no guess)"
    return (
        f'The word was "{result["mystery"]}". Clues: {clues}{gone}. '
        f"Guess: {guess}, {result['outcome']}."
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Just One</title>
<style>
body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
button { margin: 0.2em; padding: 0.4em 0.8em; font-size: 1em; }
.clue { display: inline-block; margin: 0.3em; padding: 0.4em 0.8em; border: 1px solid #999; }
#mystery { font-size: 2em; font-weight: bold; }
#error { color: #a00; min-height: 1.2em; }
</style></head>
<body>
<h1>Just One</h1>
<p>A cooperative word game: every clue giver writes one word; clues that match are removed;
the guesser has one try. 13 cards.</p>
<div id="start">
  <label>Your name: <input id="player" maxlength="64"></label>
  <label>You play: <select id="role">
    <option value="guesser">the guesser</option>
    <option value="giver">a clue giver</option></select></label>
  <button id="begin">Start</button>
</div>
<div id="table" hidden>
  <p id="progress"></p>
  <div id="clue-phase" hidden>
    <p>The mystery word is <span id="mystery"></span>. Write one clue:</p>
    <input id="clue" maxlength="40"> <button id="send-clue">Send</button>
  </div>
  <div id="guess-phase" hidden>
    <p>The clues:</p><div id="clues"></div>
    <input id="guess" maxlength="40"> <button id="send-guess">Guess</button>
    <button id="pass">Pass</button>
  </div>
  <div id="result-phase" hidden>
    <p id="result"></p>
    <button id="next">Next card</button>
  </div>
  <p id="error"></p>
</div>
<p id="done" hidden></p>
<script>
let game = null;
async function call(action, body) {
  const reply = await fetch(`api/${action}`, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await reply.json();
  if (!reply.ok) { document.getElementById("error").textContent = data.error; return null; }
  document.getElementById("error").textContent = "";
  return data;
}
function describe(r) {
  const removed = Object.keys(r.removed || {}).map(k => r.written[k]);
  const kept = (r.kept || []).join(", ") || "none left";
  const gone = removed.length ? ` (${removed.join(", ")} removed)` : "";
  return `The word was "${r.mystery}". Clues: ${kept}${gone}. ` +
    `Guess: ${r.guess || "(no guess)"}, ${r.outcome}.`;
}
function show(v) {
  for (const id of ["clue-phase", "guess-phase", "result-phase"])
    document.getElementById(id).hidden = true;
  document.getElementById("progress").textContent =
    `Card ${v.card} of ${v.cards}. Score ${v.score}, lost ${v.lost}.`;
  if (v.phase === "clue") {
    document.getElementById("mystery").textContent = v.mystery;
    document.getElementById("clue").value = "";
    document.getElementById("clue-phase").hidden = false;
  } else if (v.phase === "guess") {
    const box = document.getElementById("clues");
    box.replaceChildren();
    for (const c of v.clues) {
      const s = document.createElement("span"); s.className = "clue"; s.textContent = c;
      box.appendChild(s);
    }
    document.getElementById("guess").value = "";
    document.getElementById("guess-phase").hidden = false;
  } else if (v.phase === "result") {
    document.getElementById("result").textContent = describe(v.result);
    document.getElementById("result-phase").hidden = false;
  } else {
    document.getElementById("table").hidden = true;
    const done = document.getElementById("done");
    const last = v.result ? describe(v.result) + " " : "";
    done.textContent = `${last}Game over: ${v.score} of ${v.cards} (${v.rating}).`;
    done.hidden = false;
  }
}
async function begin() {
  const v = await call("new", {player: document.getElementById("player").value,
                               role: document.getElementById("role").value});
  if (!v) return;
  game = v.game;
  document.getElementById("start").hidden = true;
  document.getElementById("table").hidden = false;
  show(v);
}
async function act(action, body) {
  const v = await call(action, Object.assign({game: game}, body));
  if (v) show(v);
}
document.getElementById("begin").onclick = begin;
document.getElementById("send-clue").onclick =
  () => act("clue", {clue: document.getElementById("clue").value});
document.getElementById("send-guess").onclick =
  () => act("guess", {guess: document.getElementById("guess").value});
document.getElementById("pass").onclick = () => act("guess", {guess: ""});
document.getElementById("next").onclick = () => act("next", {});
</script>
</body></html>
"""


class JustOneRoom:
    """Just One as a room of the games' server (``/just-one/``): people play with the bots.

    Actions (``POST api/<action>`` with a JSON object): ``new`` (``player``, ``role``) starts
    a game and answers its view with a ``game`` id; ``clue`` (``game``, ``clue``), ``guess``
    (``game``, ``guess``; empty passes) and ``next`` (``game``) play it. ``GET api/state?game=``
    answers the view. A finished game is appended to ``record``.

    Args:
        brain: The bots' models.
        config: The bots' table.
        words: The mystery words decks are dealt from.
        record: The JSON file finished games go to.
        seed: The first game's seed (later games count up from it).
        pass_below: The bot guesser's confidence threshold.
    """

    name = "just-one"
    title = "Just One: a cooperative word game with the bots"

    def __init__(
        self,
        brain: JustOneBrain,
        config: JustOneTable,
        words: Sequence[str],
        record: str | Path,
        *,
        seed: int = 0,
        pass_below: float = float("-inf"),
    ) -> None:
        self.brain = brain
        self.config = config
        self.words = tuple(words)
        self.record = Path(record)
        self.pass_below = pass_below
        self.games: dict[str, JustOneGame] = {}
        self._seeds = itertools.count(seed)
        read_just_one_games(self.record)  # fail now, not after the first game

    def page(self) -> str:
        """The Just One page's HTML."""
        return _PAGE

    def _game(self, payload: Mapping[str, Any]) -> JustOneGame:
        key = str(payload.get("game", ""))
        if key not in self.games:
            raise WeightspaceValueError(f"unknown game {key!r}; start one with 'new'")
        return self.games[key]

    def _reply(self, key: str, game: JustOneGame, view: dict[str, Any]) -> dict[str, Any]:
        if view["phase"] == "over" and key in self.games:
            append_record(self.record, "games", game.record(), _WHAT)
            del self.games[key]
        return {**view, "game": key}

    def get(self, action: str, query: Mapping[str, str]) -> Any:
        """``state``: the view of game ``query["game"]``.

        Raises:
            WeightspaceValueError: for another action or an unknown game.
        """
        if action != "state":
            raise WeightspaceValueError(f"unknown action {action!r}; Just One answers 'state'")
        game = self._game(query)
        return {**game.view(), "game": query["game"]}

    def post(self, action: str, payload: Mapping[str, Any]) -> Any:
        """``new``, ``clue``, ``guess`` or ``next`` (see the class text).

        Raises:
            WeightspaceValueError: for an unknown action or game, a missing field, or a move
                out of turn.
        """
        if action == "new":
            role = str(payload.get("role", "guesser"))
            seed = next(self._seeds)
            game = JustOneGame(
                self.brain,
                self.config,
                deal_cards(self.words, seed),
                role=role,  # type: ignore[arg-type]
                player=str(payload.get("player", "")),
                seed=seed,
                pass_below=self.pass_below,
            )
            key = f"g{seed}"
            self.games[key] = game
            return self._reply(key, game, game.view())
        if action not in ("clue", "guess", "next"):
            raise WeightspaceValueError(
                f"unknown action {action!r}; Just One accepts 'new', 'clue', 'guess', 'next'"
            )
        game = self._game(payload)
        key = str(payload["game"])
        if action == "clue":
            view = game.give_clue(str(payload.get("clue", "")))
        elif action == "guess":
            view = game.guess(str(payload.get("guess", "")))
        else:
            view = game.next_card()
        return self._reply(key, game, view)

    def file(self, path: str) -> Path | None:
        """No files: the page is text only."""
        return None


_BOTS = {
    "embedding": JustOneTable("embedding", "embedding", "aware", "embedding"),
    "hybrid": JustOneTable("hybrid", "hybrid", "aware", "hybrid"),
    "llm": JustOneTable("llm", "llm", "aware", "llm"),
}


def _cmd_just_one(args: argparse.Namespace) -> int:
    from weightspace.games._just_one_agents import load_just_one_brain
    from weightspace.games._just_one_words import mystery_words

    brain = load_just_one_brain(embedding=args.bots != "llm", llm=args.bots != "embedding")
    config = _BOTS[args.bots]
    words = mystery_words()
    if args.terminal:
        game = JustOneGame(
            brain, config, deal_cards(words, args.seed), role=args.role, player=args.player,
            seed=args.seed,
        )  # fmt: skip
        play_just_one_in_terminal(game, record=args.record)
        print(f"the game is recorded in {Path(args.record).resolve()}")
        return 0
    room = JustOneRoom(brain, config, words, args.record, seed=args.seed)
    server = serve_rooms([room], host=args.host, port=args.port)
    print(f"Just One at {server.room_url(room.name)} (Ctrl-C to stop)")
    print(f"games are recorded to {Path(args.record).resolve()}")
    return run_server(server)


def add_just_one_command(games_sub: Any) -> None:
    """Add ``weightspace play just-one`` to the ``play`` subcommands.

    Args:
        games_sub: The ``argparse`` subparsers object of ``weightspace play``.
    """
    cmd = games_sub.add_parser(
        "just-one", help="play Just One with the bots (web page or --terminal); games are saved"
    )
    cmd.add_argument("--terminal", action="store_true", help="play in the terminal")
    cmd.add_argument("--role", choices=("guesser", "giver"), default="guesser",
                     help="your seat in --terminal games (the page asks)")  # fmt: skip
    cmd.add_argument("--player", default="", help="your name, for the record")
    cmd.add_argument("--bots", choices=sorted(_BOTS), default="embedding",
                     help="the bots' models (llm and hybrid load SmolLM2)")  # fmt: skip
    cmd.add_argument("--seed", type=int, default=0, help="the first game's deck and bots")
    cmd.add_argument("--record", default="just_one_games.json", help="JSON file of games")
    cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    cmd.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    cmd.set_defaults(func=_cmd_just_one)
