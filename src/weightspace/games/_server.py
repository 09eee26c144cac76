"""One local web server for every game: each game is a *room* under its own URL prefix.

A room (:class:`GameRoom`) is a small object with a name, an HTML page and two JSON
actions; :class:`GameServer` routes requests to it::

    GET  /                      an index page linking every room
    GET  /<name>/               the room's page (its script calls the relative URLs below)
    GET  /<name>/api/<action>   room.get(action, query)   -> JSON
    POST /<name>/api/<action>   room.post(action, payload) -> JSON
    GET  /<name>/files/<path>   room.file(path)            -> a file, or 404

A room that raises :class:`~weightspace.WeightspaceValueError` answers 400 with the message,
so the page can show it; calls into one room are serialised by a lock, so a room needs no
locking of its own. Served with the standard library's :mod:`http.server` on localhost by
default; nothing leaves the machine.
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import re
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from weightspace._cache import atomic_path
from weightspace._errors import WeightspaceValueError

__all__ = [
    "GameRoom",
    "GameServer",
    "append_record",
    "read_records",
    "run_server",
    "serve_rooms",
]

logger = logging.getLogger(__name__)

#: Largest request body accepted, in bytes.
MAX_BODY = 16384
_ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@runtime_checkable
class GameRoom(Protocol):
    """A game served by :class:`GameServer` under ``/<name>/``.

    Attributes:
        name: The URL prefix, such as ``"imagine"`` or ``"just-one"`` (lower-case letters,
            digits, ``-`` and ``_``).
    """

    name: str

    def page(self) -> str:
        """The HTML page served at ``GET /<name>/``; its script uses relative URLs."""
        ...

    def get(self, action: str, query: Mapping[str, str]) -> Any:
        """The JSON reply to ``GET /<name>/api/<action>?<query>``.

        Raises:
            WeightspaceValueError: for an unknown action or a bad query (answered with 400).
        """
        ...

    def post(self, action: str, payload: Mapping[str, Any]) -> Any:
        """The JSON reply to ``POST /<name>/api/<action>`` with a JSON object as body.

        Raises:
            WeightspaceValueError: for an unknown action or a bad payload (answered with 400).
        """
        ...

    def file(self, path: str) -> Path | None:
        """The file served at ``GET /<name>/files/<path>``, or ``None`` (answered with 404).

        ``path`` has been checked: its ``/``-separated parts are plain names (no ``..``).
        """
        ...


class GameServer(ThreadingHTTPServer):
    """An HTTP server for several :class:`GameRoom` objects, each under ``/<name>/``.

    Use :func:`serve_rooms` to build one; call ``serve_forever()`` (or run it in a thread)
    and ``shutdown()`` then ``server_close()`` to stop.

    Args:
        address: ``(host, port)``; port 0 picks a free port.
        rooms: The rooms, with distinct names.
        max_body: The largest request body accepted, in bytes (413 above it).

    Raises:
        WeightspaceValueError: if there are no rooms, a name is unusable or repeated.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        rooms: Sequence[GameRoom],
        *,
        max_body: int = MAX_BODY,
    ) -> None:
        if not rooms:
            raise WeightspaceValueError("`rooms` is empty; pass at least one game room")
        names = [room.name for room in rooms]
        bad = [n for n in names if not isinstance(n, str) or not _ROOM_NAME.match(n)]
        if bad:
            raise WeightspaceValueError(
                f"`rooms` has unusable names {bad}; use lower-case letters, digits, '-' and '_'"
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise WeightspaceValueError(f"`rooms` repeats the names {repeated}; give each its own")
        if max_body < 1:
            raise WeightspaceValueError(f"`max_body` must be positive, got {max_body}")
        super().__init__(address, _Handler)
        self.rooms: dict[str, GameRoom] = {room.name: room for room in rooms}
        self.max_body = max_body
        self._locks = {name: threading.Lock() for name in self.rooms}

    @property
    def url(self) -> str:
        """The index page's address, such as ``http://127.0.0.1:8000/``."""
        return self._root()

    def _root(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def room_url(self, name: str) -> str:
        """The address of room ``name``'s page, such as ``http://127.0.0.1:8000/imagine/``.

        Raises:
            WeightspaceValueError: if there is no such room.
        """
        if name not in self.rooms:
            raise WeightspaceValueError(f"`name` {name!r} is not a room; rooms: {list(self.rooms)}")
        return f"{self._root()}{name}/"

    def index(self) -> str:
        """The HTML of the index page: a link to every room."""
        items = "\n".join(
            f'<li><a href="{html.escape(name)}/">{html.escape(str(getattr(room, "title", name)))}'
            "</a></li>"
            for name, room in self.rooms.items()
        )
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>weightspace games</title></head>\n<body>\n<h1>Games</h1>\n"
            f"<ul>\n{items}\n</ul>\n</body></html>\n"
        )

    def call(self, name: str, method: str, *args: Any) -> Any:
        """Call ``room.<method>(*args)`` for room ``name`` under its lock."""
        room = self.rooms[name]
        with self._locks[name]:
            return getattr(room, method)(*args)


class _Handler(BaseHTTPRequestHandler):
    server: GameServer

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

    def _not_found(self, path: str) -> None:
        self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path!r}"})

    def _route(self) -> tuple[str, str, str, str] | None:
        """``(room, kind, rest, query)`` with kind one of page/api/files, or None."""
        parts = urlsplit(self.path)
        path = parts.path
        segments = path.split("/")
        if len(segments) < 3 or segments[0] != "" or segments[1] not in self.server.rooms:
            return None
        room = segments[1]
        if len(segments) == 3 and segments[2] in ("", "index.html"):
            return room, "page", "", parts.query
        if len(segments) >= 4 and segments[2] in ("api", "files"):
            return room, segments[2], "/".join(segments[3:]), parts.query
        return None

    def _call(self, room: str, method: str, *args: Any) -> None:
        try:
            reply = self.server.call(room, method, *args)
        except WeightspaceValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception:
            logger.exception("room %r failed on %s %s", room, self.command, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the game failed; see the log"})
            return
        self._json(HTTPStatus.OK, reply)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.index().encode(), "text/html; charset=utf-8")
            return
        if path.count("/") == 1 and path[1:] in self.server.rooms:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route = self._route()
        if route is None:
            self._not_found(path)
            return
        room, kind, rest, query = route
        if kind == "page":
            page = self.server.call(room, "page")
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif kind == "api":
            if not _SAFE_SEGMENT.match(rest):
                self._not_found(path)
                return
            self._call(room, "get", rest, dict(parse_qsl(query)))
        else:
            name = unquote(rest)
            if not name or not all(_SAFE_SEGMENT.match(s) for s in name.split("/")):
                self._not_found(path)
                return
            file = self.server.call(room, "file", name)
            if file is None or not Path(file).is_file():
                self._not_found(path)
                return
            kind_ = mimetypes.guess_type(str(file))[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, Path(file).read_bytes(), kind_)

    def do_POST(self) -> None:
        route = self._route()
        if route is None or route[1] != "api" or not _SAFE_SEGMENT.match(route[2]):
            self._not_found(urlsplit(self.path).path)
            return
        room, _, action, _ = route
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > self.server.max_body:
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"the body has {length} bytes; at most {self.server.max_body}"},
            )
            return
        if length <= 0:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"the body is not JSON ({exc})"})
            return
        if not isinstance(payload, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
            return
        self._call(room, "post", action, payload)


def serve_rooms(
    rooms: Sequence[GameRoom], *, host: str = "127.0.0.1", port: int = 8000
) -> GameServer:
    """Build a server for several game rooms (not yet serving).

    Args:
        rooms: The rooms, each served under ``/<room.name>/``.
        host: The address to listen on; keep ``127.0.0.1`` unless others on your network
            should play.
        port: The port; 0 picks a free one (see :attr:`GameServer.url`).

    Returns:
        The server: call ``serve_forever()``; ``shutdown()`` and ``server_close()`` stop it.

    Raises:
        WeightspaceValueError: if there are no rooms or their names are unusable or repeated.
    """
    return GameServer((host, port), rooms)


def read_records(path: str | Path, key: str, what: str) -> list[dict[str, Any]]:
    """The records a page saved under ``key`` in a JSON file (empty if there is no file yet).

    Args:
        path: The JSON file, ``{key: [record, ...]}``.
        key: The list's key, such as ``"guesses"`` or ``"games"``.
        what: What the file holds, for the error message (e.g. ``"a guesses file"``).

    Raises:
        WeightspaceValueError: if the file exists but does not hold such a list.
    """
    file = Path(path)
    if not file.exists():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        records = data[key]
        if not isinstance(records, list):
            raise TypeError(f"{key!r} is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightspaceValueError(
            f"`path` {str(path)!r} is not {what} ({exc}); move it away or pass another path"
        ) from None
    return list(records)


def append_record(path: str | Path, key: str, entry: Mapping[str, Any], what: str) -> None:
    """Append one record to the list under ``key`` of a JSON file, replacing it atomically.

    Callers serialise writes to one file (a :class:`GameServer` room's calls already are).

    Raises:
        WeightspaceValueError: if the file exists but does not hold such a list.
    """
    records = read_records(path, key, what)
    records.append(dict(entry))
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps({key: records}, indent=1), encoding="utf-8")


def run_server(server: GameServer) -> int:
    """Serve until Ctrl-C, then close the server; returns the command's exit code 0."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
