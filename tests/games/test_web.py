"""The Imagine page: its HTTP API, and a full game in headless Chromium."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace._cli import main
from weightspace.games import (
    Composition,
    ImagineGame,
    ImagineServer,
    challenge,
    default_deck,
    read_games,
    read_guesses,
    serve_imagine,
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


@pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)",
)
def test_a_person_plays_a_full_game_in_headless_chromium(server: ImagineServer) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    by = pytest.importorskip("selenium.webdriver.common.by").By
    wait_mod = pytest.importorskip("selenium.webdriver.support.wait")
    ec = pytest.importorskip("selenium.webdriver.support.expected_conditions")
    service_mod = pytest.importorskip("selenium.webdriver.chrome.service")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=service_mod.Service(shutil.which("chromedriver")), options=options
    )
    try:
        wait = wait_mod.WebDriverWait(driver, 20)
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
    finally:
        driver.quit()
    guesses = read_guesses(server.record)
    assert [(g["player"], g["game"], g["guess"], g["answer"], g["correct"]) for g in guesses] == [
        ("tester", "g0", picks[0], "snowman", True),
        ("tester", "g1", picks[1], "boat", True),
        ("tester", "g2", picks[2], "rain", False),
    ]
