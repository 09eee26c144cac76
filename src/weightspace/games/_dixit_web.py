"""Dixit in the local web page: a person plays seat 0 against bots; finished games are saved.

:class:`DixitRoom` is a :class:`~weightspace.games.GameRoom` served under ``/dixit/``
(``weightspace play dixit`` on the command line). The person is the first storyteller; the
bots make their moves as soon as the person has made theirs. Every finished game is appended
to a JSON file (:func:`~weightspace.games.read_dixit_games` reads it), so that a study can
compare people with the bots.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from weightspace._cache import atomic_path, cache_dir
from weightspace._errors import WeightspaceValueError
from weightspace.games._dixit import (
    BOT_KINDS,
    DixitBot,
    DixitGame,
    Eyes,
    HintWriter,
    dixit_deck,
    literal_hint,
    make_bot,
    read_dixit_games,
)
from weightspace.games._server import append_record

__all__ = ["DixitRoom", "add_dixit_command", "play_dixit_in_terminal", "write_card_images"]

logger = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dixit</title>
<style>
body { font-family: sans-serif; max-width: 60em; margin: 1.5em auto; }
.cards { display: flex; flex-wrap: wrap; gap: 0.5em; margin: 0.5em 0; }
.card { width: 128px; height: 128px; border: 3px solid #bbb; border-radius: 6px;
  cursor: pointer; }
.card.picked { border-color: #d33; }
.card.mine { opacity: 0.4; cursor: not-allowed; }
#phase { font-weight: bold; font-size: 1.2em; }
#scores td, #scores th { padding: 0.1em 0.8em; text-align: left; }
#last { background: #f4f4f4; padding: 0.5em; }
button { padding: 0.4em 0.8em; font-size: 1em; }
</style></head>
<body>
<h1>Dixit</h1>
<div id="start">
  <p>You play against bots. As storyteller, pick a card of your hand and give a hint that
  some, but not all, will find. Otherwise put in the card of your hand that fits the hint,
  then vote for the storyteller's card.</p>
  <label>Your name: <input id="player" maxlength="64" value=""></label>
  <button id="begin">Start</button>
</div>
<div id="game" hidden>
  <p id="phase"></p>
  <div id="telling" hidden>
    <label>Your hint: <input id="hint" maxlength="80"></label>
    <button id="tell" disabled>Tell</button>
  </div>
  <p id="error"></p>
  <h3 id="table-title" hidden>The table</h3>
  <div id="table" class="cards"></div>
  <h3>Your hand</h3>
  <div id="hand" class="cards"></div>
  <h3>Scores</h3>
  <table id="scores"></table>
  <h3>Last round</h3>
  <div id="last"></div>
</div>
<p id="done" hidden></p>
<script>
let state = null, picked = null;
async function call(action, body) {
  const r = body === undefined ? await fetch(`api/${action}`) :
    await fetch(`api/${action}`, {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) { document.getElementById("error").textContent = data.error; return null; }
  document.getElementById("error").textContent = "";
  return data;
}
function img(card, cls, onclick) {
  const i = document.createElement("img");
  i.src = `files/cards/${card}.png`; i.className = cls; i.dataset.card = card;
  i.alt = `card ${card}`; if (onclick) i.onclick = onclick;
  return i;
}
function render(s) {
  state = s; picked = null;
  document.getElementById("tell").disabled = true;
  const phase = document.getElementById("phase");
  const telling = document.getElementById("telling");
  telling.hidden = true;
  const hand = document.getElementById("hand"), table = document.getElementById("table");
  hand.replaceChildren(); table.replaceChildren();
  document.getElementById("table-title").hidden = s.table.length === 0;
  if (s.phase === "tell") {
    phase.textContent = `Round ${s.round}: you are the storyteller. Pick a card and give a hint.`;
    telling.hidden = false;
    document.getElementById("hint").value = "";
    s.hand.forEach(c => hand.appendChild(img(c, "card", ev => {
      hand.querySelectorAll(".card").forEach(e => e.classList.remove("picked"));
      ev.target.classList.add("picked"); picked = c;
      document.getElementById("tell").disabled = false;
    })));
  } else if (s.phase === "play") {
    phase.textContent = `Round ${s.round}: ${s.players[s.storyteller]} says "${s.hint}". ` +
      "Put in the card of your hand that fits.";
    s.hand.forEach(c => hand.appendChild(img(c, "card", async () => {
      const r = await call("play", {card: c}); if (r) render(r);
    })));
  } else if (s.phase === "vote") {
    phase.textContent = `Round ${s.round}: the hint is "${s.hint}". Which card is ` +
      `${s.players[s.storyteller]}'s?`;
    s.table.forEach(c => table.appendChild(img(c, c === s.your_card ? "card mine" : "card vote",
      c === s.your_card ? null : async () => { const r = await call("vote", {card: c});
        if (r) render(r); })));
    s.hand.forEach(c => hand.appendChild(img(c, "card")));
  } else {
    phase.textContent = "Game over.";
    s.hand.forEach(c => hand.appendChild(img(c, "card")));
  }
  const rows = s.players.map((p, i) => `<tr><td>${p}</td><td>${s.scores[i]}</td></tr>`);
  document.getElementById("scores").innerHTML = "<tr><th>player</th><th>score</th></tr>" +
    rows.join("");
  const last = document.getElementById("last");
  last.replaceChildren();
  if (s.last) {
    const p = document.createElement("p");
    p.id = "last-summary";
    p.textContent = `${s.players[s.last.storyteller]} told "${s.last.hint}"; ` +
      `${s.last.found} of ${s.players.length - 1} found it. Points: ` +
      s.players.map((name, i) => `${name} +${s.last.points[i]}`).join(", ") + ".";
    last.appendChild(p);
    last.appendChild(img(s.last.card, "card"));
  }
  if (s.phase === "over") {
    document.getElementById("game").hidden = true;
    const done = document.getElementById("done");
    done.textContent = `Game over (${s.end === "score" ? "a player reached 30" :
      "the deck ran out"}): you scored ${s.scores[0]}; ${s.winners.join(" and ")} won.`;
    done.hidden = false;
  }
}
async function begin() {
  const name = document.getElementById("player").value.trim() || "anonymous";
  const r = await call("start", {player: name});
  if (!r) return;
  document.getElementById("start").hidden = true;
  document.getElementById("game").hidden = false;
  render(r);
}
async function tell() {
  const r = await call("tell", {card: picked, hint: document.getElementById("hint").value});
  if (r) render(r);
}
document.getElementById("begin").onclick = begin;
document.getElementById("tell").onclick = tell;
</script>
</body></html>
"""


def write_card_images(images: torch.Tensor, folder: str | Path | None = None) -> Path:
    """Write each card as ``<id>.png`` into a folder (the cache's by default), once.

    Args:
        images: ``uint8`` ``[N, 3, H, W]`` cards.
        folder: Where to write; ``None`` uses a cache folder named after the images' digest.

    Returns:
        The folder.
    """
    from weightspace._optional import require_module

    pil = require_module("PIL.Image", pip="pillow", extra="vision")
    x = images.to(torch.uint8).contiguous()
    if folder is None:
        digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
        target = cache_dir("games", f"dixit-cards-{digest}")
    else:
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
    for i in range(x.shape[0]):
        file = target / f"{i}.png"
        if file.is_file():
            continue
        with atomic_path(file) as tmp:
            pil.fromarray(x[i].permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return target


class DixitRoom:
    """Dixit for one person against bots, as a :class:`~weightspace.games.GameRoom`.

    The person sits at seat 0 and tells first; ``bots`` take the other seats. ``post("start",
    {"player": name})`` deals a new game; ``post("tell", {"card", "hint"})``, ``post("play",
    {"card"})`` and ``post("vote", {"card"})`` are the person's moves, each answered with the
    new state (``get("state")``) after the bots have moved. A finished game is appended to
    ``record`` with the person's name, the bots and the time.

    Args:
        cards: The deck's images, ``uint8`` ``[N, 3, H, W]``.
        bots: The bots of seats 1, 2, ... (2 to 7).
        record: The JSON file finished games are appended to.
        names: Each card's name, saved with the games (stamp paths, say).
        folder: Where the cards' PNG files go; ``None`` uses the cache.
        seed: Seeds the first game; each new game adds one.

    Raises:
        WeightspaceValueError: if the number of bots is out of range, or ``record`` exists and
            is not a Dixit games file.
    """

    name = "dixit"
    title = "Dixit"

    def __init__(
        self,
        cards: torch.Tensor,
        bots: Sequence[DixitBot],
        record: str | Path,
        *,
        names: Sequence[str] | None = None,
        folder: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if not 2 <= len(bots) <= 7:
            raise WeightspaceValueError(f"`bots` must hold 2 to 7 bots, got {len(bots)}")
        self.record = Path(record)
        read_dixit_games(self.record)  # fail now, not at the end of the first game
        self.cards = int(cards.shape[0])
        self.names = list(names) if names is not None else [str(i) for i in range(self.cards)]
        self.folder = write_card_images(cards, folder)
        self.bots = list(bots)
        self.seed = seed
        self.games = 0
        self.player = ""
        self.game: DixitGame | None = None
        self._gen = torch.Generator()

    def page(self) -> str:
        """The HTML page."""
        return _PAGE

    def file(self, path: str) -> Path | None:
        """A card's image, ``cards/<id>.png``."""
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "cards" and parts[1].removesuffix(".png").isdigit():
            file = self.folder / parts[1]
            return file if file.is_file() else None
        return None

    def get(self, action: str, query: Mapping[str, str]) -> Any:
        """``state``: the game as seat 0 sees it.

        Raises:
            WeightspaceValueError: for another action.
        """
        if action != "state":
            raise WeightspaceValueError(f"unknown action {action!r}; the page asks for 'state'")
        return self.state()

    def _card(self, payload: Mapping[str, Any]) -> int:
        card = payload.get("card")
        if isinstance(card, bool) or not isinstance(card, int):
            raise WeightspaceValueError(f"`card` must be a card id (an int), got {card!r}")
        return card

    def post(self, action: str, payload: Mapping[str, Any]) -> Any:
        """The person's moves: ``start``, ``tell``, ``play`` and ``vote``.

        Raises:
            WeightspaceValueError: for an unknown action, a move out of turn or an illegal
                move (answered with 400 by the server).
        """
        if action == "start":
            self.player = str(payload.get("player") or "anonymous").strip()[:64] or "anonymous"
            seed = self.seed + self.games
            self.games += 1
            self.game = DixitGame(len(self.bots) + 1, self.cards, seed=seed)
            self._gen = torch.Generator().manual_seed(seed + 7919)
            self._advance()
            return self.state()
        game = self.game
        if game is None:
            raise WeightspaceValueError("no game yet; post 'start' first")
        if action == "tell":
            game.tell(self._card(payload), str(payload.get("hint", "")))
        elif action == "play":
            game.play(0, self._card(payload))
        elif action == "vote":
            game.vote(0, self._card(payload))
        else:
            raise WeightspaceValueError(
                f"unknown action {action!r}; use 'start', 'tell', 'play' or 'vote'"
            )
        self._advance()
        return self.state()

    def _advance(self) -> None:
        game = self.game
        assert game is not None
        over = game.step({i + 1: bot for i, bot in enumerate(self.bots)}, self._gen)
        if over:
            entry = game.to_json(self.seats())
            entry.update(
                person=self.player,
                seat=0,
                bots=[bot.name for bot in self.bots],
                cards=self.names,
                time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            )
            append_record(self.record, "dixit_games", entry, "a Dixit games file")
            logger.info("saved a Dixit game of %s to %s", self.player, self.record)

    def seats(self) -> list[str]:
        """The player of each seat: the person's name, then the bots' labels."""
        return [self.player or "you", *(f"{bot.name} ({i + 1})" for i, bot in enumerate(self.bots))]

    def state(self) -> dict[str, Any]:
        """The game as seat 0 sees it (other hands and the storyteller's card stay hidden)."""
        game = self.game
        if game is None:
            return {"phase": "start"}
        last = None
        if game.rounds:
            r = game.rounds[-1]
            last = {
                "storyteller": r.storyteller,
                "hint": r.hint,
                "card": r.played[r.storyteller],
                "found": r.found,
                "played": [r.played[p] for p in range(game.players)],
                "votes": [r.votes.get(p) for p in range(game.players)],
                "points": [r.points[p] for p in range(game.players)],
            }
        best = max(game.scores)
        seats = self.seats()
        return {
            "phase": game.phase,
            "round": len(game.rounds) + (game.phase != "over"),
            "players": seats,
            "scores": list(game.scores),
            "storyteller": game.storyteller,
            "hint": game.hint,
            "hand": list(game.hands[0]),
            "table": list(game.table),
            "your_card": game.played.get(0),
            "deck": len(game.deck),
            "last": last,
            "end": game.end_reason,
            "winners": [seats[p] for p, s in enumerate(game.scores) if s == best],
        }


def _ask_card(read: Callable[[str], str], write: Callable[[str], None], cards: list[int]) -> int:
    while True:
        answer = read(f"card number (1-{len(cards)}): ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(cards):
            return cards[int(answer) - 1]
        write(f"type a number from 1 to {len(cards)}")


def play_dixit_in_terminal(
    room: DixitRoom,
    labels: Sequence[str],
    *,
    player: str = "you",
    read: Callable[[str], str] = input,
    write: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Play one game of a :class:`DixitRoom` in a terminal; the game is saved like the page's.

    Cards are listed by ``labels`` (a caption, and the path of the card's image to open);
    the person types card numbers and hints. The bots still see only the pictures.

    Args:
        room: The room (its bots and record file).
        labels: What the person is told of each card.
        player: The person's name, saved with the game.
        read: Asks a question and returns the answer (``input`` by default).
        write: Shows a line (standard output by default).

    Returns:
        The room's final state.
    """
    import sys

    def show(line: str) -> None:
        if write is None:
            sys.stdout.write(line + "\n")
        else:
            write(line)

    def listing(cards: list[int]) -> None:
        for k, card in enumerate(cards, start=1):
            show(f"  {k}. {labels[card]}  ({room.folder / f'{card}.png'})")

    state: dict[str, Any] = room.post("start", {"player": player})
    shown = 1
    while state["phase"] != "over":
        if state["last"] is not None and state["round"] != shown:
            shown = state["round"]
            last = state["last"]
            show(
                f"{state['players'][last['storyteller']]} told {last['hint']!r} for "
                f"{labels[last['card']]}; {last['found']} found it. Scores: "
                + ", ".join(
                    f"{p} {s}" for p, s in zip(state["players"], state["scores"], strict=True)
                )
            )
        show(f"Round {state['round']}. Your hand:")
        listing(state["hand"])
        try:
            if state["phase"] == "tell":
                show("You are the storyteller: pick a card, then give a hint.")
                card = _ask_card(read, show, state["hand"])
                state = room.post("tell", {"card": card, "hint": read("hint: ")})
            elif state["phase"] == "play":
                show(
                    f"{state['players'][state['storyteller']]} says {state['hint']!r}. "
                    "Put in the card of your hand that fits."
                )
                state = room.post("play", {"card": _ask_card(read, show, state["hand"])})
            else:
                show(f"The hint is {state['hint']!r}. Which card is the storyteller's?")
                listing(state["table"])
                state = room.post("vote", {"card": _ask_card(read, show, state["table"])})
        except WeightspaceValueError as exc:
            show(f"not allowed: {exc}")
    show(
        f"Game over: you scored {state['scores'][0]}; {' and '.join(state['winners'])} won. "
        f"Saved to {room.record}."
    )
    return state


def _cmd_dixit(args: argparse.Namespace) -> int:
    from weightspace.games._lit import train_lit
    from weightspace.games._scorers import ConSEScorer, ImageTower
    from weightspace.games._server import run_server, serve_rooms
    from weightspace.games._stamps import stamp_images

    kinds = [k.strip() for k in args.bots.split(",") if k.strip()]
    bad = [k for k in kinds if k not in BOT_KINDS]
    if bad or not 2 <= len(kinds) <= 7:
        raise WeightspaceValueError(
            f"`--bots` must list 2 to 7 of {list(BOT_KINDS)}, got {args.bots!r}"
        )
    stamps = stamp_images()
    deck, rest = dixit_deck(stamps, args.cards, seed=args.seed)
    tower = ImageTower()
    conse = ConSEScorer(tower)
    lit = train_lit(rest, tower=tower, encoder=conse.encoder, seed=args.seed)
    eyes = [Eyes(lit, deck.images), Eyes(conse, deck.images)]
    writer: HintWriter | None = None
    if not args.no_llm and any(k in ("abstract", "strategist") for k in kinds):
        from weightspace.games._dixit import LLMHintWriter

        writer = LLMHintWriter()
    hints = [literal_hint(c) for c in deck.captions]
    bots = [
        make_bot(k, eyes[i % 2], hints, writer=writer, models=eyes) for i, k in enumerate(kinds)
    ]
    room = DixitRoom(deck.images, bots, args.record, names=deck.names, seed=args.seed)
    if args.terminal:
        play_dixit_in_terminal(room, [c.rstrip(".") for c in deck.captions], player=args.player)
        return 0
    server = serve_rooms([room], host=args.host, port=args.port)
    print(f"Dixit against {', '.join(b.name for b in bots)} at {server.room_url('dixit')}")
    print(f"finished games are saved to {Path(args.record).resolve()} (Ctrl-C to stop)")
    return run_server(server)


def add_dixit_command(games_sub: Any) -> None:
    """Add ``weightspace play dixit`` to the ``play`` command's subcommands.

    Args:
        games_sub: The ``argparse`` subparsers object of ``weightspace play``.
    """
    dixit = games_sub.add_parser(
        "dixit", help="play Dixit against bots in a local web page; games go to a JSON file"
    )
    dixit.add_argument(
        "--bots",
        default="strategist,literal,abstract",
        help=f"comma-separated bots of the other seats, among {', '.join(BOT_KINDS)}",
    )
    dixit.add_argument("--cards", type=int, default=96, help="cards in the deck (84 or more)")
    dixit.add_argument("--no-llm", action="store_true", help="bots use literal hints only")
    dixit.add_argument(
        "--terminal", action="store_true", help="play one game in the terminal instead"
    )
    dixit.add_argument("--player", default="you", help="your name, saved with the game")
    dixit.add_argument(
        "--record", default="dixit_games.json", help="JSON file finished games are added to"
    )
    dixit.add_argument("--seed", type=int, default=0, help="seeds the deck and the games")
    dixit.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dixit.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    dixit.set_defaults(func=_cmd_dixit)
