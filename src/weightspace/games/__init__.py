"""Board-game agents on image-text models: scorers, the Imagine deck and its searches.

**Scorers.** Every player talks to an image-text model through one protocol,
:class:`ImageTextScorer`: ``score(images, texts)`` returns the ``[images, texts]`` matrix of
similarities. No CLIP-like model ships offline, so three scorers are built here:

* :class:`CLIPScorer` loads a real CLIP from a local folder when you have one;
* :class:`ConSEScorer` is ConSE zero-shot (EfficientNet-Lite0's ImageNet probabilities mixed
  over MiniLM embeddings of the class names): nothing trained;
* :class:`LiTScorer` is a locked-tower alignment (projection heads on frozen EfficientNet-Lite0
  and MiniLM features), trained by :func:`train_lit` on Tux Paint's captioned stamps
  (:func:`stamp_images`).

:func:`caption_retrieval` and :func:`zero_shot_accuracy` measure them with their chance levels.

**Imagine.** :func:`default_deck` draws 53 transparent cards (shapes, lines, arrows, nature,
figures, objects); a :class:`Composition` places a few of them (:func:`render`);
:func:`search` looks for the composition a scorer finds closest to a concept, with PGPE,
CMA-ES, a genetic algorithm or random search at equal budgets; :func:`guess` lets other
scorers guess the concept among candidates (:data:`CONCEPTS`). :func:`serve_imagine` serves a
local web page on which people guess, recording their answers to a JSON file
(``weightspace play imagine`` on the command line).

**One server for every game.** Each game a person can play is a :class:`GameRoom` (a page
and a few JSON actions under ``/<name>/``); :func:`serve_rooms` serves several rooms at once
from a :class:`GameServer` on localhost.
"""

from __future__ import annotations

from weightspace.games._compose import PARAMS_PER_CARD as PARAMS_PER_CARD
from weightspace.games._compose import Composition as Composition
from weightspace.games._compose import placement as placement
from weightspace.games._compose import render as render
from weightspace.games._deck import CARD_NAMES as CARD_NAMES
from weightspace.games._deck import Deck as Deck
from weightspace.games._deck import default_deck as default_deck
from weightspace.games._dixit import BOT_KINDS as BOT_KINDS
from weightspace.games._dixit import HAND_SIZE as HAND_SIZE
from weightspace.games._dixit import WINNING_SCORE as WINNING_SCORE
from weightspace.games._dixit import AbstractBot as AbstractBot
from weightspace.games._dixit import DixitBot as DixitBot
from weightspace.games._dixit import DixitGame as DixitGame
from weightspace.games._dixit import DixitRound as DixitRound
from weightspace.games._dixit import Eyes as Eyes
from weightspace.games._dixit import HintWriter as HintWriter
from weightspace.games._dixit import LiteralBot as LiteralBot
from weightspace.games._dixit import LLMHintWriter as LLMHintWriter
from weightspace.games._dixit import RandomBot as RandomBot
from weightspace.games._dixit import StrategistBot as StrategistBot
from weightspace.games._dixit import dixit_deck as dixit_deck
from weightspace.games._dixit import literal_hint as literal_hint
from weightspace.games._dixit import make_bot as make_bot
from weightspace.games._dixit import play_game as play_game
from weightspace.games._dixit import read_dixit_games as read_dixit_games
from weightspace.games._dixit import score_round as score_round
from weightspace.games._dixit import write_dixit_games as write_dixit_games
from weightspace.games._dixit_web import DixitRoom as DixitRoom
from weightspace.games._dixit_web import play_dixit_in_terminal as play_dixit_in_terminal
from weightspace.games._evaluate import RetrievalScore as RetrievalScore
from weightspace.games._evaluate import caption_retrieval as caption_retrieval
from weightspace.games._evaluate import zero_shot_accuracy as zero_shot_accuracy
from weightspace.games._imagine import CONCEPTS as CONCEPTS
from weightspace.games._imagine import ImagineGame as ImagineGame
from weightspace.games._imagine import challenge as challenge
from weightspace.games._imagine import guess as guess
from weightspace.games._imagine import read_games as read_games
from weightspace.games._imagine import write_games as write_games
from weightspace.games._just_one_agents import JustOneBrain as JustOneBrain
from weightspace.games._just_one_agents import JustOneCard as JustOneCard
from weightspace.games._just_one_agents import JustOneRecord as JustOneRecord
from weightspace.games._just_one_agents import JustOneTable as JustOneTable
from weightspace.games._just_one_agents import LMScorer as LMScorer
from weightspace.games._just_one_agents import WordVectors as WordVectors
from weightspace.games._just_one_agents import clue_distribution as clue_distribution
from weightspace.games._just_one_agents import deal_cards as deal_cards
from weightspace.games._just_one_agents import load_just_one_brain as load_just_one_brain
from weightspace.games._just_one_agents import play_just_one as play_just_one
from weightspace.games._just_one_agents import play_just_one_games as play_just_one_games
from weightspace.games._just_one_agents import score_just_one as score_just_one
from weightspace.games._just_one_agents import word_vectors as word_vectors
from weightspace.games._just_one_play import JustOneGame as JustOneGame
from weightspace.games._just_one_play import JustOneRoom as JustOneRoom
from weightspace.games._just_one_play import play_just_one_in_terminal as play_just_one_in_terminal
from weightspace.games._just_one_play import read_just_one_games as read_just_one_games
from weightspace.games._just_one_rules import RULEBOOK_SCALE as RULEBOOK_SCALE
from weightspace.games._just_one_rules import CardOutcome as CardOutcome
from weightspace.games._just_one_rules import FilteredClues as FilteredClues
from weightspace.games._just_one_rules import Lexicon as Lexicon
from weightspace.games._just_one_rules import ScoreSheet as ScoreSheet
from weightspace.games._just_one_rules import check_clue as check_clue
from weightspace.games._just_one_rules import filter_clues as filter_clues
from weightspace.games._just_one_rules import just_one_rating as just_one_rating
from weightspace.games._just_one_rules import same_family as same_family
from weightspace.games._just_one_rules import same_word as same_word
from weightspace.games._just_one_rules import wordnet_lexicon as wordnet_lexicon
from weightspace.games._just_one_words import clue_words as clue_words
from weightspace.games._just_one_words import guess_words as guess_words
from weightspace.games._just_one_words import mystery_words as mystery_words
from weightspace.games._just_one_words import split_words as split_words
from weightspace.games._lit import LiTHeads as LiTHeads
from weightspace.games._lit import LiTScorer as LiTScorer
from weightspace.games._lit import augmented_views as augmented_views
from weightspace.games._lit import stamp_features as stamp_features
from weightspace.games._lit import train_lit as train_lit
from weightspace.games._scorers import CLIPScorer as CLIPScorer
from weightspace.games._scorers import ConSEScorer as ConSEScorer
from weightspace.games._scorers import EmbeddingScorer as EmbeddingScorer
from weightspace.games._scorers import ImageTextScorer as ImageTextScorer
from weightspace.games._scorers import ImageTower as ImageTower
from weightspace.games._search import SEARCH_METHODS as SEARCH_METHODS
from weightspace.games._search import SEARCH_OPTIONS as SEARCH_OPTIONS
from weightspace.games._search import SearchResult as SearchResult
from weightspace.games._search import random_compositions as random_compositions
from weightspace.games._search import search as search
from weightspace.games._server import GameRoom as GameRoom
from weightspace.games._server import GameServer as GameServer
from weightspace.games._server import serve_rooms as serve_rooms
from weightspace.games._stamps import StampImages as StampImages
from weightspace.games._stamps import stamp_images as stamp_images
from weightspace.games._web import ImagineRoom as ImagineRoom
from weightspace.games._web import ImagineServer as ImagineServer
from weightspace.games._web import read_guesses as read_guesses
from weightspace.games._web import serve_imagine as serve_imagine

__all__ = [
    "BOT_KINDS",
    "CARD_NAMES",
    "CONCEPTS",
    "HAND_SIZE",
    "PARAMS_PER_CARD",
    "RULEBOOK_SCALE",
    "SEARCH_METHODS",
    "SEARCH_OPTIONS",
    "WINNING_SCORE",
    "AbstractBot",
    "CLIPScorer",
    "CardOutcome",
    "Composition",
    "ConSEScorer",
    "Deck",
    "DixitBot",
    "DixitGame",
    "DixitRoom",
    "DixitRound",
    "EmbeddingScorer",
    "Eyes",
    "FilteredClues",
    "GameRoom",
    "GameServer",
    "HintWriter",
    "ImageTextScorer",
    "ImageTower",
    "ImagineGame",
    "ImagineRoom",
    "ImagineServer",
    "JustOneBrain",
    "JustOneCard",
    "JustOneGame",
    "JustOneRecord",
    "JustOneRoom",
    "JustOneTable",
    "LLMHintWriter",
    "LMScorer",
    "Lexicon",
    "LiTHeads",
    "LiTScorer",
    "LiteralBot",
    "RandomBot",
    "RetrievalScore",
    "ScoreSheet",
    "SearchResult",
    "StampImages",
    "StrategistBot",
    "WordVectors",
    "augmented_views",
    "caption_retrieval",
    "challenge",
    "check_clue",
    "clue_distribution",
    "clue_words",
    "deal_cards",
    "default_deck",
    "dixit_deck",
    "filter_clues",
    "guess",
    "guess_words",
    "just_one_rating",
    "literal_hint",
    "load_just_one_brain",
    "make_bot",
    "mystery_words",
    "placement",
    "play_dixit_in_terminal",
    "play_game",
    "play_just_one",
    "play_just_one_games",
    "play_just_one_in_terminal",
    "random_compositions",
    "read_dixit_games",
    "read_games",
    "read_guesses",
    "read_just_one_games",
    "render",
    "same_family",
    "same_word",
    "score_just_one",
    "score_round",
    "search",
    "serve_imagine",
    "serve_rooms",
    "split_words",
    "stamp_features",
    "stamp_images",
    "train_lit",
    "word_vectors",
    "wordnet_lexicon",
    "write_dixit_games",
    "write_games",
    "zero_shot_accuracy",
]
