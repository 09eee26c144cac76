"""A local web page on which people play Imagine as guessers; their guesses go to a JSON file.

Imagine is a room (:class:`ImagineRoom`) of the games' shared server (:mod:`._server`), at
``/imagine/``; nothing leaves the machine. ``weightspace play imagine GAMES.json --record
guesses.json`` starts it from the command line; ``add_play_command`` adds every game's
``weightspace play`` subcommand.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weightspace._errors import WeightspaceValueError
from weightspace.games._dixit_web import add_dixit_command
from weightspace.games._imagine import ImagineGame, read_games
from weightspace.games._just_one_play import add_just_one_command
from weightspace.games._server import GameServer, append_record, read_records, run_server

__all__ = ["ImagineRoom", "ImagineServer", "add_play_command", "read_guesses", "serve_imagine"]

logger = logging.getLogger(__name__)

_WHAT = "a guesses file written by the Imagine page"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Imagine</title>
<style>
body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
img { width: 256px; height: 256px; border: 1px solid #999; display: block; margin: 1em 0; }
button { margin: 0.2em; padding: 0.4em 0.8em; font-size: 1em; }
#feedback { font-weight: bold; min-height: 1.5em; }
</style></head>
<body>
<h1>Imagine</h1>
<p>A player placed a few transparent cards to show one of the concepts below. Which one?</p>
<div id="start">
  <label>Your name: <input id="player" maxlength="64" value=""></label>
  <button id="begin">Start</button>
</div>
<div id="game" hidden>
  <p id="progress"></p>
  <img id="picture" alt="a composition of cards">
  <div id="choices"></div>
  <p id="feedback"></p>
  <button id="next" hidden>Next</button>
</div>
<p id="done" hidden></p>
<script>
let games = [], at = 0, right = 0, player = "";
async function begin() {
  player = document.getElementById("player").value.trim() || "anonymous";
  games = (await (await fetch("api/games")).json()).games;
  document.getElementById("start").hidden = true;
  document.getElementById("game").hidden = false;
  show();
}
function show() {
  const g = games[at];
  document.getElementById("progress").textContent = `Game ${at + 1} of ${games.length}`;
  document.getElementById("picture").src = `files/${g.name}.png`;
  document.getElementById("feedback").textContent = "";
  document.getElementById("next").hidden = true;
  const box = document.getElementById("choices");
  box.replaceChildren();
  g.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    b.textContent = c; b.className = "choice"; b.dataset.index = i;
    b.onclick = () => answer(c);
    box.appendChild(b);
  });
}
async function answer(choice) {
  document.querySelectorAll(".choice").forEach(b => b.disabled = true);
  const reply = await fetch("api/guess", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({player: player, game: games[at].name, guess: choice})});
  const r = await reply.json();
  if (r.correct) right++;
  document.getElementById("feedback").textContent =
    r.correct ? "Right!" : `Not quite: it was "${r.answer}".`;
  document.getElementById("next").hidden = false;
}
function next() {
  at++;
  if (at < games.length) { show(); return; }
  document.getElementById("game").hidden = true;
  const done = document.getElementById("done");
  done.textContent = `Thank you! You guessed ${right} of ${games.length}.`;
  done.hidden = false;
}
document.getElementById("begin").onclick = begin;
document.getElementById("next").onclick = next;
</script>
</body></html>
"""


def read_guesses(path: str | Path) -> list[dict[str, Any]]:
    """The guesses recorded by the page, oldest first (an empty list if there is no file yet).

    Each record has ``player``, ``game``, ``guess``, ``answer``, ``correct`` and ``time``
    (UTC, ISO 8601).

    Raises:
        WeightspaceValueError: if the file exists but is not a guesses file.
    """
    return read_records(path, "guesses", _WHAT)


class ImagineRoom:
    """Imagine as a room of the games' server: the games of one ``games.json``, one record file.

    The page lists the games without their answers (``GET api/games``), shows each
    composition (``files/<game>.png``) and sends each guess (``POST api/guess`` with
    ``player``, ``game`` and ``guess``), which is checked and appended to ``record``; every
    write replaces the file atomically, so a crash never leaves a half-written file.

    Args:
        games: The games, by name.
        folder: The folder holding the games' PNG images.
        record: The JSON file the guesses are appended to.
    """

    name = "imagine"
    title = "Imagine: guess the concept of a composition"

    def __init__(self, games: Mapping[str, ImagineGame], folder: Path, record: Path) -> None:
        self.games = dict(games)
        self.folder = folder
        self.record = record
        self.lock = threading.Lock()

    def page(self) -> str:
        """The Imagine page's HTML."""
        return _PAGE

    def get(self, action: str, query: Mapping[str, str]) -> Any:
        """``games``: the games' names and candidates (not their answers).

        Raises:
            WeightspaceValueError: for another action.
        """
        if action != "games":
            raise WeightspaceValueError(f"unknown action {action!r}; Imagine answers 'games'")
        games = [{"name": g.name, "candidates": list(g.candidates)} for g in self.games.values()]
        return {"games": games}

    def post(self, action: str, payload: Mapping[str, Any]) -> Any:
        """``guess``: check and record a guess; the reply says if it was right and the answer.

        Raises:
            WeightspaceValueError: for another action, a missing field, an unknown game or a
                guess that is not a candidate.
        """
        if action != "guess":
            raise WeightspaceValueError(f"unknown action {action!r}; Imagine accepts 'guess'")
        try:
            game, guess = str(payload["game"]), str(payload["guess"])
        except KeyError as exc:
            raise WeightspaceValueError(f"the guess has no {exc.args[0]!r} field") from None
        entry = self.add_guess(str(payload.get("player", "")), game, guess)
        return {"correct": entry["correct"], "answer": entry["answer"]}

    def file(self, path: str) -> Path | None:
        """A game's composition, ``<game>.png``; ``None`` for anything else."""
        if not path.endswith(".png") or path[: -len(".png")] not in self.games:
            return None
        file = self.folder / path
        return file if file.is_file() else None

    def add_guess(self, player: str, game: str, guess: str) -> dict[str, Any]:
        """Check a guess, append it to the record file and return the record.

        Raises:
            WeightspaceValueError: if the game is unknown or the guess is not a candidate.
        """
        if game not in self.games:
            raise WeightspaceValueError(f"unknown game {game!r}")
        g = self.games[game]
        if guess not in g.candidates:
            raise WeightspaceValueError(f"{guess!r} is not a candidate of game {game!r}")
        entry = {
            "player": player[:64],
            "game": game,
            "guess": guess,
            "answer": g.answer,
            "correct": guess == g.answer,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with self.lock:
            append_record(self.record, "guesses", entry, _WHAT)
        return entry


class ImagineServer(GameServer):
    """A games server with the one Imagine room; :attr:`url` is the Imagine page.

    Use :func:`serve_imagine` to build one; call ``serve_forever()`` (or run it in a thread)
    and ``shutdown()`` to stop. To serve Imagine beside other games, put an
    :class:`ImagineRoom` in :func:`~weightspace.games.serve_rooms` instead.

    Args:
        address: ``(host, port)``; port 0 picks a free port.
        games: The games, by name.
        folder: The folder holding the games' PNG images.
        record: The JSON file the guesses are appended to.
    """

    def __init__(
        self,
        address: tuple[str, int],
        games: Mapping[str, ImagineGame],
        folder: Path,
        record: Path,
    ) -> None:
        self.room = ImagineRoom(games, folder, record)
        super().__init__(address, [self.room])

    @property
    def url(self) -> str:
        """The Imagine page's address, such as ``http://127.0.0.1:8000/imagine/``."""
        return self.room_url(self.room.name)

    @property
    def games(self) -> dict[str, ImagineGame]:
        """The games, by name."""
        return self.room.games

    @property
    def folder(self) -> Path:
        """The folder holding the games' PNG images."""
        return self.room.folder

    @property
    def record(self) -> Path:
        """The JSON file the guesses are appended to."""
        return self.room.record

    def add_guess(self, player: str, game: str, guess: str) -> dict[str, Any]:
        """Check a guess, append it to the record file and return the record.

        Raises:
            WeightspaceValueError: if the game is unknown or the guess is not a candidate.
        """
        return self.room.add_guess(player, game, guess)


def serve_imagine(
    games: str | Path,
    record: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> ImagineServer:
    """Build the Imagine page's server for the games of a ``games.json`` (not yet serving).

    A person enters a name, sees each composition with its eight candidates, clicks a guess,
    and is told the answer; every guess is appended to ``record``.

    Args:
        games: A ``games.json`` written by :func:`write_games` (the PNGs beside it).
        record: The JSON file of guesses; created on the first guess, appended to after.
        host: The address to listen on; keep ``127.0.0.1`` unless others on your network
            should play.
        port: The port; 0 picks a free one (see :attr:`ImagineServer.url`).

    Returns:
        The server: call ``serve_forever()``; ``shutdown()`` and ``server_close()`` stop it.

    Raises:
        WeightspaceValueError: if ``games`` is not a games file, a game's image is missing,
            or ``record`` exists and is not a guesses file.
    """
    games_file = Path(games)
    loaded = read_games(games_file)
    folder = games_file.parent
    missing = [g.name for g in loaded if not (folder / f"{g.name}.png").is_file()]
    if missing:
        raise WeightspaceValueError(
            f"`games` {str(games)!r}: no image for {missing} beside it; write the games with "
            "write_games"
        )
    bad = [g.name for g in loaded if not _NAME.match(g.name)]
    if bad:
        raise WeightspaceValueError(f"`games` {str(games)!r} has unusable game names {bad}")
    record_file = Path(record)
    read_guesses(record_file)  # fail now, not at the first guess
    return ImagineServer((host, port), {g.name: g for g in loaded}, folder, record_file)


def _cmd_play(args: argparse.Namespace) -> int:
    server = serve_imagine(args.games, args.record, host=args.host, port=args.port)
    print(f"Imagine: {len(server.games)} games at {server.url} (Ctrl-C to stop)")
    print(f"guesses are recorded to {Path(args.record).resolve()}")
    return run_server(server)


def add_play_command(sub: Any) -> None:
    """Add ``weightspace play`` and its games (``imagine``, ...) to the command line.

    Each game adds its own subcommand to ``games_sub`` from its module.

    Args:
        sub: The ``argparse`` subparsers object of the ``weightspace`` command.
    """
    play = sub.add_parser("play", help="play the library's games in a local web page")
    games_sub = play.add_subparsers(dest="play_command", required=True)
    imagine = games_sub.add_parser(
        "imagine", help="guess the concept of Imagine compositions; guesses go to a JSON file"
    )
    imagine.add_argument("games", help="a games.json written by weightspace.games.write_games")
    imagine.add_argument(
        "--record", default="imagine_guesses.json", help="JSON file the guesses are added to"
    )
    imagine.add_argument("--host", default="127.0.0.1", help="address to listen on")
    imagine.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    imagine.set_defaults(func=_cmd_play)
    add_dixit_command(games_sub)
    add_just_one_command(games_sub)
