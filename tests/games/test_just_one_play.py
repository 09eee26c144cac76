"""A person plays Just One: the game object, the terminal, the web page (headless Chromium)."""

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

from weightspace import WeightspaceValueError
from weightspace._cli import main
from weightspace.games import (
    GameServer,
    JustOneBrain,
    JustOneGame,
    JustOneRoom,
    JustOneTable,
    deal_cards,
    play_just_one_in_terminal,
    read_just_one_games,
    serve_rooms,
    wordnet_lexicon,
)

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/wordnet/index.noun").is_file(),
    reason="needs Debian's wordnet-base (scripts/setup.sh installs it)",
)

WORDS = ("ocean", "pizza", "guitar", "snow", "castle", "coffee", "rocket", "apple", "train",
         "doctor", "garden", "moon", "bread")  # fmt: skip
# Four bot clues per word: two identical ones cancel where the table says so.
CLUES = {
    "ocean": ["sea", "salt", "Sea", "waves"],  # sea/Sea cancel
    "pizza": ["cheese", "italy", "slice", "oven"],
    "guitar": ["strings", "string", "strings", "string"],  # all cancel: card lost
    "snow": ["winter", "white", "cold", "flake"],
    "castle": ["king", "tower", "moat", "knight"],
    "coffee": ["bean", "cup", "morning", "espresso"],
    "rocket": ["space", "launch", "nasa", "fuel"],
    "apple": ["fruit", "red", "tree", "pie"],
    "train": ["rail", "station", "track", "engine"],
    "doctor": ["nurse", "hospital", "medicine", "patient"],
    "garden": ["flower", "plant", "grow", "soil"],
    "moon": ["night", "crescent", "lunar", "tide"],
    "bread": ["loaf", "toast", "baker", "dough"],
}
# The bot guesser's answer for a set of clues: right unless it is one of these.
WRONG = {"pizza": "pasta"}


class StubBrain(JustOneBrain):
    """Bots with fixed clues and guesses, so that every turn is worked out by hand."""

    def __init__(self) -> None:
        super().__init__(wordnet_lexicon(), ("sea",), ("sea",))

    def give_clue(self, mystery: str, *args: Any, generator: torch.Generator, **_: Any) -> str:
        seat = int(torch.randint(0, 1_000_000, (1,), generator=generator)) % 1  # seeded, unused
        self._seat = getattr(self, "_seat", {})
        k = self._seat.get(mystery, 0)
        self._seat[mystery] = k + 1
        return CLUES[mystery][(k + seat) % 4]

    def guess(self, clues: Sequence[str], kind: Any) -> tuple[str, float]:
        mystery = next(w for w, c in CLUES.items() if set(clues) <= set(c) | {"sun"})
        return WRONG.get(mystery, mystery), 1.0


TABLE = JustOneTable("stub", "embedding", "aware", "embedding")


def _game(role: Any) -> JustOneGame:
    return JustOneGame(StubBrain(), TABLE, WORDS, role=role, player="Ann <b>", seed=1)


def test_a_guesser_game_by_the_rules(tmp_path: Path) -> None:
    game = _game("guesser")
    view = game.view()
    assert view == {
        "phase": "guess",
        "role": "guesser",
        "card": 1,
        "cards": 13,
        "score": 0,
        "lost": 0,
        "clues": ["salt", "waves"],  # "sea" and "Sea" cancelled; no mystery word shown
    }
    assert game.guess("Oceans")["result"]["outcome"] == "right"  # a plural counts
    game.next_card()
    assert game.guess("pasta")["result"]["outcome"] == "wrong"  # loses pizza and guitar
    view = game.next_card()
    assert (view["card"], view["score"], view["lost"]) == (4, 1, 2)
    assert game.guess("")["result"]["outcome"] == "pass"
    with pytest.raises(WeightspaceValueError, match=r"it is not time for a guess"):
        game.guess("snow")
    with pytest.raises(WeightspaceValueError, match=r"it is not time for a clue"):
        game.give_clue("cold")
    while not game.over:
        view = game.next_card()
        if view["phase"] == "guess":
            game.guess(game._current["mystery"] if game._current else "")
    view = game.next_card() if game.view()["phase"] == "result" else game.view()
    # ocean right; pizza wrong (guitar lost with it); snow passed; nine cards right.
    assert (view["phase"], view["score"], view["rating"]) == ("over", 10, "excellent")
    record = game.record()
    assert record["player"] == "Ann b" and record["score"] == 10
    assert [c["outcome"] for c in record["cards"]][:3] == ["right", "wrong", "pass"]


def test_a_giver_game_with_cancellation(tmp_path: Path) -> None:
    game = _game("giver")
    assert game.view()["mystery"] == "ocean" and game.view()["phase"] == "clue"
    with pytest.raises(WeightspaceValueError, match=r"`clue` 'big wave' is not one word"):
        game.give_clue("big wave")
    # The person writes "sea" too: the bots' sea/Sea and the person's all cancel.
    result = game.give_clue("seas")["result"]
    assert result["written"] == ["seas", "sea", "salt", "Sea"]
    assert result["kept"] == ["salt"] and result["outcome"] == "right"
    game.next_card()
    result = game.give_clue("pizza")["result"]  # invalid: the mystery word
    assert result["removed"]["0"] == "invalid: the mystery word"
    assert (result["guess"], result["outcome"]) == ("pasta", "wrong")


def test_the_terminal_plays_a_game_and_saves_it(tmp_path: Path) -> None:
    game = _game("guesser")
    answers = iter(["ocean", "pasta", "", *["x"] * 20])
    lines: list[str] = []
    record = tmp_path / "games.json"
    play_just_one_in_terminal(game, read=lambda _: next(answers), write=lines.append, record=record)
    assert lines[0] == "Card 1 of 13. Clues: salt, waves"
    assert (
        lines[1]
        == 'The word was "ocean". Clues: salt, waves (sea, Sea removed). Guess: ocean, right.'
    )
    assert lines[2] == "Score 1, cards lost 0."
    # Four wrong guesses lose eight cards; the last card's wrong guess costs ocean too.
    assert lines[-1] == "Game over: 0 of 13 (try again)."
    saved = read_just_one_games(record)
    assert len(saved) == 1 and saved[0]["score"] == 0 and saved[0]["role"] == "guesser"
    assert [c["outcome"] for c in saved[0]["cards"]] == ["right", "wrong", "pass"] + ["wrong"] * 5
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(WeightspaceValueError, match=r"is not a Just One games file"):
        read_just_one_games(tmp_path / "bad.json")
    with pytest.raises(SystemExit) as info:
        main(["play", "just-one", "--bots", "nope"])
    assert info.value.code == 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GameServer]:
    room = JustOneRoom(StubBrain(), TABLE, WORDS, tmp_path / "games.json", seed=5)
    srv = serve_rooms([room], port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _post(url: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_the_room_api(server: GameServer) -> None:
    base = server.room_url("just-one")
    status, view = _post(base + "api/new", {"player": "bo", "role": "guesser"})
    deck = deal_cards(WORDS, 5)
    assert status == 200 and view["game"] == "g5" and view["phase"] in ("guess", "result")
    assert "mystery" not in view
    with urllib.request.urlopen(base + "api/state?game=g5", timeout=20) as r:
        assert json.loads(r.read()) == view
    assert _post(base + "api/guess", {"game": "nope", "guess": "x"}) == (
        400,
        {"error": "unknown game 'nope'; start one with 'new'"},
    )
    status, reply = _post(base + "api/new", {"role": "dealer"})
    assert status == 400 and "`role` must be 'guesser' or 'giver'" in reply["error"]
    for _ in range(13):
        if view["phase"] == "guess":
            view = _post(base + "api/guess", {"game": "g5", "guess": deck[view["card"] - 1]})[1]
        if view["phase"] == "over":
            break
        view = _post(base + "api/next", {"game": "g5"})[1]
    assert view["phase"] == "over"
    saved = read_just_one_games(server.rooms["just-one"].record)  # type: ignore[attr-defined]
    assert [g["player"] for g in saved] == ["bo"] and saved[0]["score"] == view["score"]


def test_a_person_plays_a_full_game_in_headless_chromium(server: GameServer, browser: Any) -> None:
    driver, by, ec = browser.driver, browser.by, browser.ec
    deck = deal_cards(WORDS, 5)
    results: list[str] = []
    guesses = 0

    def shown(d: Any, name: str) -> bool:
        return bool(d.find_element(by.ID, name).is_displayed())

    wait = browser.wait(30)
    driver.get(server.url)
    driver.find_element(by.LINK_TEXT, "Just One: a cooperative word game with the bots").click()
    driver.find_element(by.ID, "player").send_keys("tester")
    driver.find_element(by.ID, "begin").click()
    for _ in range(14):
        wait.until(lambda d: any(shown(d, i) for i in ("guess-phase", "result-phase", "done")))
        if shown(driver, "done"):
            break
        if shown(driver, "guess-phase"):
            card = int(driver.find_element(by.ID, "progress").text.split()[1])
            clues = [e.text for e in driver.find_elements(by.CLASS_NAME, "clue")]
            assert clues and all(c in CLUES[deck[card - 1]] for c in clues)
            # Right on every card but the second one guessed, where the person passes.
            guesses += 1
            if guesses == 2:
                driver.find_element(by.ID, "pass").click()
            else:
                driver.find_element(by.ID, "guess").send_keys(deck[card - 1].upper())
                driver.find_element(by.ID, "send-guess").click()
            wait.until(lambda d: shown(d, "result-phase"))
        results.append(driver.find_element(by.ID, "result").text)
        before = driver.find_element(by.ID, "progress").text
        driver.find_element(by.ID, "next").click()
        wait.until(
            lambda d, before=before: (
                shown(d, "done") or d.find_element(by.ID, "progress").text != before
            )
        )
    wait.until(ec.visibility_of_element_located((by.ID, "done")))
    done = driver.find_element(by.ID, "done").text
    saved = read_just_one_games(server.rooms["just-one"].record)  # type: ignore[attr-defined]
    assert len(saved) == 1 and saved[0]["player"] == "tester"
    outcomes = [c["outcome"] for c in saved[0]["cards"]]
    lost_to_cancelling = sum(o == "no clues" for o in outcomes)
    assert outcomes.count("pass") == 1 and "wrong" not in outcomes
    score = 13 - 1 - lost_to_cancelling
    assert saved[0]["score"] == score
    assert done.endswith(f"Game over: {score} of 13 ({saved[0]['rating']}).")
    assert sum("Guess: (no guess), pass." in r for r in results) == 1
    assert len(results) == 13 and guesses == 13 - lost_to_cancelling
