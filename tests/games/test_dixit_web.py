"""The Dixit room: a person's moves through its API, and a full game in headless Chromium."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from weightspace import WeightspaceValueError
from weightspace._cli import main
from weightspace.games import (
    DixitRoom,
    Eyes,
    GameServer,
    LiteralBot,
    RandomBot,
    play_dixit_in_terminal,
    read_dixit_games,
    serve_rooms,
)

CARDS = 30  # four players: two rounds, then the deck cannot refill the hands


class ColourScorer:
    """Cards are plain colours; a hint ``"c<k>"`` matches card ``k`` best, the rest by distance."""

    name = "colour"

    def score(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        ids = images[:, 0, 0, 0].long()
        cols = []
        for t in texts:
            k = int(t[1:]) if t.startswith("c") and t[1:].isdigit() else -100
            cols.append(-(ids - k).abs().float())
        return torch.stack(cols, dim=1)


def _deck() -> Tensor:
    ids = torch.arange(CARDS, dtype=torch.uint8) * 8
    return ids.view(CARDS, 1, 1, 1).expand(CARDS, 3, 32, 32).contiguous()


def _room(tmp_path: Path) -> DixitRoom:
    images = _deck()
    eyes = Eyes(ColourScorer(), images)
    hints = [f"c{8 * i}" for i in range(CARDS)]  # each card's literal hint names its colour
    bots = [LiteralBot(eyes, hints), RandomBot(hints), LiteralBot(eyes, hints, name="lit2")]
    return DixitRoom(images, bots, tmp_path / "games.json", folder=tmp_path / "cards", seed=4)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GameServer]:
    srv = serve_rooms([_room(tmp_path)], port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_a_person_plays_a_game_through_the_room_api(tmp_path: Path) -> None:
    room = _room(tmp_path)
    assert room.get("state", {}) == {"phase": "start"}
    with pytest.raises(WeightspaceValueError, match=r"no game yet; post 'start' first"):
        room.post("tell", {"card": 0, "hint": "x"})
    state = room.post("start", {"player": "ann"})
    assert (state["phase"], state["round"], state["storyteller"]) == ("tell", 1, 0)
    assert len(state["hand"]) == 6 and state["players"][0] == "ann"
    with pytest.raises(WeightspaceValueError, match=r"`card` must be a card id"):
        room.post("tell", {"card": "3", "hint": "x"})
    not_mine = next(c for c in range(CARDS) if c not in state["hand"])
    with pytest.raises(WeightspaceValueError, match=r"is not in the storyteller's hand"):
        room.post("tell", {"card": not_mine, "hint": "x"})
    secret = state["hand"][0]
    state = room.post("tell", {"card": secret, "hint": "a colour"})
    # The bots played and voted; round 2 is told by seat 1 and the person must put in a card.
    assert (state["phase"], state["round"], state["storyteller"]) == ("play", 2, 1)
    assert state["last"]["card"] == secret and state["last"]["hint"] == "a colour"
    assert state["scores"] == state["last"]["points"]
    state = room.post("play", {"card": state["hand"][0]})
    assert state["phase"] == "vote" and state["your_card"] in state["table"]
    assert len(state["table"]) == 4
    with pytest.raises(WeightspaceValueError, match=r"is seat 0's own card"):
        room.post("vote", {"card": state["your_card"]})
    vote = next(c for c in state["table"] if c != state["your_card"])
    state = room.post("vote", {"card": vote})
    assert (state["phase"], state["end"]) == ("over", "deck")
    assert state["last"]["votes"][0] == vote
    saved = read_dixit_games(tmp_path / "games.json")
    assert len(saved) == 1
    game = saved[0]
    assert (game["person"], game["seat"], game["end"]) == ("ann", 0, "deck")
    assert game["bots"] == ["literal", "random", "lit2"]
    assert game["scores"] == state["scores"] and len(game["rounds"]) == 2
    assert game["rounds"][0]["hint"] == "a colour"
    assert game["rounds"][0]["played"]["0"] == secret
    assert game["rounds"][1]["votes"]["0"] == vote
    with pytest.raises(WeightspaceValueError, match=r"unknown action 'peek'"):
        room.get("peek", {})
    assert room.file("cards/3.png") == tmp_path / "cards" / "3.png"
    assert room.file("../games.json") is None and room.file("cards/99.png") is None


def test_a_person_plays_a_full_game_in_the_terminal(tmp_path: Path) -> None:
    room = _room(tmp_path)
    # Round 1: card 7 is no number, 9 is out of range, then card 2 of the hand and a hint;
    # round 2: card 1 of the hand, a vote for the own card (refused), then another card.
    answers = iter(["seven", "9", "2", "a red one", "1", "OWN", "OTHER"])
    lines: list[str] = []

    def read(prompt: str) -> str:
        answer = next(answers)
        if answer in ("OWN", "OTHER"):
            state = room.state()
            table = state["table"]
            own = table.index(state["your_card"])
            pick = own if answer == "OWN" else next(k for k in range(4) if k != own)
            return str(pick + 1)
        return answer

    labels = [f"colour {8 * i}" for i in range(CARDS)]
    state = play_dixit_in_terminal(room, labels, player="cy", read=read, write=lines.append)
    assert next(answers, None) is None  # every answer was used
    assert state["phase"] == "over"
    assert "type a number from 1 to 6" in lines
    assert any(line.startswith("not allowed: `card` ") for line in lines)
    assert lines[-1].startswith(f"Game over: you scored {state['scores'][0]}; ")
    saved = read_dixit_games(tmp_path / "games.json")
    assert saved[0]["person"] == "cy" and saved[0]["rounds"][0]["hint"] == "a red one"
    assert any(line.startswith("cy told 'a red one' for colour ") for line in lines)


def test_room_refuses_a_foreign_record_file(tmp_path: Path) -> None:
    (tmp_path / "games.json").write_text('{"guesses": []}')
    with pytest.raises(WeightspaceValueError, match=r"is not a Dixit games file"):
        _room(tmp_path)
    assert main(["play", "dixit", "--bots", "literal,wizard"]) == 2


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_room_over_http_answers_illegal_moves_with_400(server: GameServer) -> None:
    base = server.room_url("dixit")
    status, state = _post(base + "api/start", {"player": "bo"})
    assert status == 200 and state["phase"] == "tell"
    status, reply = _post(base + "api/vote", {"card": 1})
    assert status == 400 and "in its 'tell' phase, not 'vote'" in str(reply["error"])
    with urllib.request.urlopen(base + "files/cards/0.png", timeout=10) as r:
        assert r.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_person_plays_a_full_game_in_headless_chromium(server: GameServer, browser: Any) -> None:
    driver, by, ec = browser.driver, browser.by, browser.ec
    wait = browser.wait(20)
    driver.get(server.room_url("dixit"))
    driver.find_element(by.ID, "player").send_keys("tester")
    driver.find_element(by.ID, "begin").click()
    # Round 1: the person tells a card.
    wait.until(ec.text_to_be_present_in_element((by.ID, "phase"), "you are the storyteller"))
    hand = driver.find_elements(by.CSS_SELECTOR, "#hand .card")
    assert len(hand) == 6
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", hand[0]) == 32)
    secret = int(hand[0].get_attribute("data-card"))
    hand[0].click()
    driver.find_element(by.ID, "hint").send_keys("something blue")
    driver.find_element(by.ID, "tell").click()
    # Round 2: a bot tells; the person puts in a card, then votes.
    wait.until(ec.text_to_be_present_in_element((by.ID, "phase"), "Put in the card"))
    summary = driver.find_element(by.ID, "last-summary").text
    assert summary.startswith('tester told "something blue"; ')
    driver.find_elements(by.CSS_SELECTOR, "#hand .card")[2].click()
    wait.until(ec.text_to_be_present_in_element((by.ID, "phase"), "Which card is"))
    table = driver.find_elements(by.CSS_SELECTOR, "#table .card")
    assert len(table) == 4 and len(driver.find_elements(by.CSS_SELECTOR, "#table .mine")) == 1
    vote = driver.find_elements(by.CSS_SELECTOR, "#table .vote")[0]
    voted = int(vote.get_attribute("data-card"))
    vote.click()
    wait.until(ec.visibility_of_element_located((by.ID, "done")))
    done = driver.find_element(by.ID, "done").text
    room = server.rooms["dixit"]
    assert isinstance(room, DixitRoom)
    saved = read_dixit_games(room.record)
    assert len(saved) == 1
    game = saved[0]
    assert game["person"] == "tester" and game["rounds"][0]["played"]["0"] == secret
    assert game["rounds"][0]["hint"] == "something blue"
    assert game["rounds"][1]["votes"]["0"] == voted
    assert done.startswith("Game over (the deck ran out): you scored ")
    assert f"you scored {game['scores'][0]};" in done
