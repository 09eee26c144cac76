"""A local web page on which people play Imagine as guessers; their guesses go to a JSON file.

Served with the standard library's :mod:`http.server` on localhost; nothing leaves the machine.
``weightspace play imagine GAMES.json --record guesses.json`` starts it from the command line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import re
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from weightspace._cache import atomic_path
from weightspace._errors import WeightspaceValueError
from weightspace.games._imagine import ImagineGame, read_games

__all__ = ["ImagineServer", "add_play_command", "read_guesses", "serve_imagine"]

logger = logging.getLogger(__name__)

_MAX_BODY = 4096
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
  games = (await (await fetch("/api/games")).json()).games;
  document.getElementById("start").hidden = true;
  document.getElementById("game").hidden = false;
  show();
}
function show() {
  const g = games[at];
  document.getElementById("progress").textContent = `Game ${at + 1} of ${games.length}`;
  document.getElementById("picture").src = `/images/${g.name}.png`;
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
  const reply = await fetch("/api/guess", {method: "POST",
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
    file = Path(path)
    if not file.exists():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        guesses = data["guesses"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightspaceValueError(
            f"`path` {str(path)!r} is not a guesses file written by the Imagine page ({exc}); "
            "move it away or pass another path"
        ) from None
    return list(guesses)


class ImagineServer(ThreadingHTTPServer):
    """The Imagine page's HTTP server: the games of one ``games.json``, one record file.

    Use :func:`serve_imagine` to build one; call ``serve_forever()`` (or run it in a thread)
    and ``shutdown()`` to stop. Recording is serialised by a lock, and every write replaces
    the record file atomically, so a crash never leaves a half-written file.

    Args:
        address: ``(host, port)``; port 0 picks a free port.
        games: The games, by name.
        folder: The folder holding the games' PNG images.
        record: The JSON file the guesses are appended to.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        games: Mapping[str, ImagineGame],
        folder: Path,
        record: Path,
    ) -> None:
        super().__init__(address, _Handler)
        self.games = dict(games)
        self.folder = folder
        self.record = record
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """The page's address, such as ``http://127.0.0.1:8000/``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

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
            guesses = read_guesses(self.record)
            guesses.append(entry)
            with atomic_path(self.record) as tmp:
                tmp.write_text(json.dumps({"guesses": guesses}, indent=1), encoding="utf-8")
        return entry


class _Handler(BaseHTTPRequestHandler):
    server: ImagineServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/games":
            games = [
                {"name": g.name, "candidates": list(g.candidates)}
                for g in self.server.games.values()
            ]
            self._json(HTTPStatus.OK, {"games": games})
        elif path.startswith("/images/") and path.endswith(".png"):
            name = path[len("/images/") : -len(".png")]
            file = self.server.folder / f"{name}.png"
            if name in self.server.games and file.is_file():
                self._send(HTTPStatus.OK, file.read_bytes(), "image/png")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no image for game {name!r}"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path!r}"})

    def do_POST(self) -> None:
        if self.path != "/api/guess":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path!r}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the body must be a small JSON object"})
            return
        try:
            data = json.loads(self.rfile.read(length))
            entry = self.server.add_guess(
                str(data.get("player", "")), str(data["game"]), str(data["guess"])
            )
        except (json.JSONDecodeError, KeyError, AttributeError, WeightspaceValueError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, {"correct": entry["correct"], "answer": entry["answer"]})


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
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_play_command(sub: Any) -> None:
    """Add ``weightspace play imagine`` to the command line's subcommands.

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
