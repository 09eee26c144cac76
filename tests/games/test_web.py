"""The Imagine page: its HTTP API, and a full game in headless Chromium."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace._cli import main
from weightspace.games import (
    Composition,
    GameRoom,
    GameServer,
    ImagineGame,
    ImagineRoom,
    ImagineServer,
    challenge,
    default_deck,
    read_games,
    read_guesses,
    serve_imagine,
    serve_rooms,
    write_games,
)

ANSWERS = ("snowman", "boat", "rain")


def _games(folder: Path) -> Path:
    deck = default_deck()
    games = []
    for k, answer in enumerate(ANSWERS):
        params = torch.randn(3, 5, generator=torch.Generator().manual_seed(k))
        comp = Composition(("circle", "triangle", deck.names[10 + k]), params)
        games.append(ImagineGame(f"g{k}", answer, challenge(answer, seed=k), comp, "test"))
    return write_games(games, folder, deck)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ImagineServer]:
    games = _games(tmp_path / "games")
    srv = serve_imagine(games, tmp_path / "guesses.json", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:  # an unclosed error response would warn when collected
            return e.code, json.loads(e.read())


def test_games_round_trip_through_the_folder(tmp_path: Path) -> None:
    path = _games(tmp_path)
    games = read_games(path)
    assert [g.answer for g in games] == list(ANSWERS)
    assert all(len(g.candidates) == 8 and g.answer in g.candidates for g in games)
    assert (tmp_path / "g0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    torch.testing.assert_close(games[1].composition.params, read_games(path)[1].composition.params)
    with pytest.raises(WeightspaceValueError, match=r"`answer` 'car' is not among"):
        ImagineGame("x", "car", ("boat", "rain"), games[0].composition, "test")


def test_api_hides_answers_and_records_valid_guesses(server: ImagineServer) -> None:
    with urllib.request.urlopen(server.url + "api/games", timeout=10) as r:
        listed = json.loads(r.read())["games"]
    assert [g["name"] for g in listed] == ["g0", "g1", "g2"]
    assert all(set(g) == {"name", "candidates"} for g in listed)  # no answer sent
    status, reply = _post(
        server.url + "api/guess", b'{"player": "ann", "game": "g1", "guess": "boat"}'
    )
    assert (status, reply) == (200, {"correct": True, "answer": "boat"})
    wrong = next(c for c in challenge("rain", seed=2) if c != "rain")
    body = json.dumps({"player": "ann", "game": "g2", "guess": wrong}).encode()
    assert _post(server.url + "api/guess", body) == (200, {"correct": False, "answer": "rain"})
    status, reply = _post(
        server.url + "api/guess", b'{"player": "ann", "game": "g1", "guess": "pizza"}'
    )
    assert status == 400 and "'pizza' is not a candidate of game 'g1'" in str(reply["error"])
    status, _ = _post(server.url + "api/guess", b"not json")
    assert status == 400
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "images/../../etc.png", timeout=10)
    assert info.value.code == 404
    info.value.close()
    guesses = read_guesses(server.record)
    assert [(g["game"], g["guess"], g["correct"]) for g in guesses] == [
        ("g1", "boat", True),
        ("g2", wrong, False),
    ]
    assert [p.name for p in server.record.parent.iterdir() if p.name.startswith(".")] == []


def test_serve_refuses_broken_inputs(tmp_path: Path) -> None:
    games = _games(tmp_path / "games")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(WeightspaceValueError, match=r"is not a guesses file"):
        serve_imagine(games, tmp_path / "bad.json", port=0)
    (tmp_path / "games" / "g2.png").unlink()
    with pytest.raises(WeightspaceValueError, match=r"no image for \['g2'\]"):
        serve_imagine(games, tmp_path / "guesses.json", port=0)
    assert main(["play", "imagine", str(tmp_path / "nothing.json")]) == 2


def test_a_person_plays_a_full_game_in_headless_chromium(
    server: ImagineServer, browser: Any
) -> None:
    driver, by, ec = browser.driver, browser.by, browser.ec
    wait = browser.wait(20)
    driver.get(server.url)
    driver.find_element(by.ID, "player").send_keys("tester")
    driver.find_element(by.ID, "begin").click()
    picks = []
    for k, answer in enumerate(ANSWERS):
        wait.until(ec.text_to_be_present_in_element((by.ID, "progress"), f"Game {k + 1} of 3"))
        img = driver.find_element(by.ID, "picture")
        wait.until(
            lambda d, img=img: d.execute_script("return arguments[0].naturalWidth", img) == 256
        )
        buttons = driver.find_elements(by.CLASS_NAME, "choice")
        labels = [b.text for b in buttons]
        assert sorted(labels) == sorted(challenge(answer, seed=k))
        # Right on the first two games, wrong on the last.
        pick = answer if k < 2 else next(t for t in labels if t != answer)
        picks.append(pick)
        buttons[labels.index(pick)].click()
        wait.until(ec.visibility_of_element_located((by.ID, "next")))
        feedback = driver.find_element(by.ID, "feedback").text
        assert feedback == ("Right!" if k < 2 else f'Not quite: it was "{answer}".')
        driver.find_element(by.ID, "next").click()
    wait.until(ec.visibility_of_element_located((by.ID, "done")))
    assert driver.find_element(by.ID, "done").text == "Thank you! You guessed 2 of 3."
    guesses = read_guesses(server.record)
    assert [(g["player"], g["game"], g["guess"], g["answer"], g["correct"]) for g in guesses] == [
        ("tester", "g0", picks[0], "snowman", True),
        ("tester", "g1", picks[1], "boat", True),
        ("tester", "g2", picks[2], "rain", False),
    ]


class _EchoRoom:
    """A toy room: echoes queries and payloads, refuses 'bad', serves one file."""

    title = "Echo <room>"

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.calls: list[tuple[str, str]] = []

    def page(self) -> str:
        return f"<p>{self.name}</p>"

    def get(self, action: str, query: Mapping[str, str]) -> Any:
        self.calls.append(("get", action))
        if action == "boom":
            raise RuntimeError("a bug in the room")
        return {"action": action, "query": dict(query)}

    def post(self, action: str, payload: Mapping[str, Any]) -> Any:
        self.calls.append(("post", action))
        if payload.get("word") == "bad":
            raise WeightspaceValueError("`word` 'bad' is not allowed; pick another")
        return {"action": action, "payload": dict(payload)}

    def file(self, path: str) -> Path | None:
        return self.folder / path if path == "card.txt" else None


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), e.headers.get("Content-Type", "")


@pytest.fixture
def rooms_server(tmp_path: Path) -> Iterator[GameServer]:
    (tmp_path / "card.txt").write_text("a card")
    (tmp_path / "secret.txt").write_text("secret")
    srv = serve_rooms([_EchoRoom("echo", tmp_path), _EchoRoom("just-one", tmp_path)], port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_game_server_routes_each_room_under_its_name(rooms_server: GameServer) -> None:
    assert all(isinstance(r, GameRoom) for r in rooms_server.rooms.values())
    url = rooms_server.url
    assert rooms_server.room_url("just-one") == url + "just-one/"
    status, body, kind = _get(url)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert '<a href="echo/">Echo &lt;room&gt;</a>' in body.decode()
    assert '<a href="just-one/">' in body.decode()
    assert _get(url + "just-one/")[:2] == (200, b"<p>just-one</p>")
    assert _get(url + "echo")[:2] == (200, b"<p>echo</p>")  # redirected to echo/
    status, body, _ = _get(url + "echo/api/state?game=3&x=a%20b")
    assert (status, json.loads(body)) == (
        200,
        {"action": "state", "query": {"game": "3", "x": "a b"}},
    )
    assert _post(url + "just-one/api/clue", b'{"word": "sea"}') == (
        200,
        {"action": "clue", "payload": {"word": "sea"}},
    )
    status, reply = _post(url + "echo/api/clue", b'{"word": "bad"}')
    assert (status, reply) == (400, {"error": "`word` 'bad' is not allowed; pick another"})
    assert _post(url + "echo/api/clue", b"[1, 2]")[0] == 400  # not an object
    assert _post(url + "echo/api/clue", b"{not json")[0] == 400
    assert _post(url + "echo/api/clue", b"{}" + b" " * 20000)[0] == 413
    assert _post(url + "nowhere/api/clue", b"{}")[0] == 404
    assert _get(url + "echo/api/boom")[:2] == (500, b'{"error": "the game failed; see the log"}')
    assert _get(url + "echo/files/card.txt")[:3] == (200, b"a card", "text/plain")
    for bad in (
        "echo/files/secret.txt",
        "echo/files/../secret.txt",
        "echo/files/%2e%2e/x",
        "echo/files/",
        "echo/other",
        "nowhere/",
        "echo/api/a/b",
    ):
        assert _get(url + bad)[0] == 404, bad
    rooms = rooms_server.rooms
    assert ("get", "state") in rooms["echo"].calls  # type: ignore[attr-defined]
    with pytest.raises(WeightspaceValueError, match=r"`name` 'dixit' is not a room"):
        rooms_server.room_url("dixit")


def test_game_server_refuses_unusable_rooms(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`rooms` is empty"):
        serve_rooms([], port=0)
    with pytest.raises(WeightspaceValueError, match=r"`rooms` has unusable names \['Just One'\]"):
        serve_rooms([_EchoRoom("Just One", tmp_path)], port=0)
    with pytest.raises(WeightspaceValueError, match=r"`rooms` repeats the names \['echo'\]"):
        serve_rooms([_EchoRoom("echo", tmp_path), _EchoRoom("echo", tmp_path)], port=0)


def test_imagine_is_a_room_beside_others(tmp_path: Path) -> None:
    games = {g.name: g for g in read_games(_games(tmp_path / "games"))}
    room = ImagineRoom(games, tmp_path / "games", tmp_path / "guesses.json")
    srv = serve_rooms([room, _EchoRoom("echo", tmp_path)], port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        base = srv.room_url("imagine")
        status, body, kind = _get(base + "files/g1.png")
        assert (status, body[:4], kind) == (200, b"\x89PNG", "image/png")
        assert _get(base + "files/g9.png")[0] == 404
        status, reply = _post(base + "api/guess", b'{"player": "bo", "game": "g0"}')
        assert (status, reply) == (400, {"error": "the guess has no 'guess' field"})
        status, reply = _post(base + "api/guess", b'{"game": "g0", "guess": "snowman"}')
        assert (status, reply) == (200, {"correct": True, "answer": "snowman"})
        status, reply = _post(base + "api/vote", b"{}")
        assert status == 400 and "unknown action 'vote'" in str(reply["error"])
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    assert [(g["player"], g["game"]) for g in read_guesses(tmp_path / "guesses.json")] == [
        ("", "g0")
    ]
