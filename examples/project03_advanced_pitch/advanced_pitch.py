"""
Advanced Pitch: Basic Pitch in PyTorch, on rendered music, fine-tuned on hum-like melodies
==========================================================================================

Basic Pitch (Bittner et al., "A Lightweight Instrument-Agnostic Model for Polyphonic Note
Transcription and Multipitch Estimation", ICASSP 2022, arXiv:2203.09893) is a 16,782-parameter
network that turns audio into notes. :func:`weightspace.models.basic_pitch` loads its released
weights into our PyTorch port (which matches onnxruntime on the released ``nmp.onnx`` to 1e-6
and writes the same notes as the official code; see ``tests/models/test_basic_pitch.py``).

This study, on the offline data of :func:`weightspace.data.rendered_music`:

1. evaluates the released model on two rendered, exactly labelled data sets that differ in
   kind: ``ensemble`` (Bach chorales, one General-MIDI instrument per part, FluidR3 font; a
   small Slakh-like set) and ``piano`` (Palestrina, Monteverdi and Classical quartets played
   as solo piano through another font, TimGM6mb), with the paper's metrics (note F-measure
   with offsets ``F``, without ``F_no``, frame accuracy ``Acc``; ``mir_eval``);
2. trains the same architecture from scratch on the rendered training pieces of both sets with
   the paper's losses (binary cross entropy with label smoothing 0.2, class-balanced onsets),
   over several seeds, through :class:`weightspace.train.Trainer`;
3. fine-tunes the released model on ``melodies``, sung and whistled folk-song lines with
   vibrato, glides, breath noise and a room (a *proxy* for hummed and whistled melodies such as
   MLEnd's, which cannot be downloaded here), fully and with LoRA adapters (PEFT) on its three
   wide convolutions. Both fine-tunes are task vectors (:class:`weightspace.TaskVector`,
   :meth:`weightspace.TaskVector.from_lora`); scaling or negating them is one line, and the
   cost of the fine-tune on the polyphonic sets (forgetting) is measured.

Run ``python advanced_pitch.py`` for the full study (three seeds, one thread; the note of the
report gives the time) or ``python advanced_pitch.py --quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import weightspace as ws
from weightspace import report, train
from weightspace.audio import transcription_scores
from weightspace.data import MusicSet, Piece, rendered_music
from weightspace.models import (
    BASIC_PITCH_SAMPLE_RATE,
    BASIC_PITCH_WINDOW,
    BasicPitch,
    NoteEvent,
    Posteriorgrams,
    basic_pitch,
    basic_pitch_loss,
    note_targets,
    notes_from_posteriorgrams,
)

HERE = Path(__file__).resolve().parent
KINDS = ("ensemble", "piano", "melodies")
METRICS = ("F", "F_no", "Acc")

#: Bittner et al. 2022, table of results (note F-measure without offsets, F_no, in %), as
#: quoted from the paper's ar5iv rendering (arXiv:2203.09893); only this column was available
#: offline. Their data sets are real recordings (MAESTRO: piano; GuitarSet: guitar; Molina:
#: singing) or rendered MIDI (Slakh), none of which can be downloaded here.
PAPER = {
    "source": "Bittner et al., ICASSP 2022 (arXiv:2203.09893), table of results, F_no column",
    "F_no": {
        "Basic Pitch (NMP)": {"MAESTRO": 70.9, "GuitarSet": 81.0, "Slakh": 68.2, "Molina": 64.3},
        "MI-AMT (baseline)": {"MAESTRO": 53.4, "GuitarSet": 69.8, "Slakh": 58.1, "Molina": 52.7},
    },
}


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    train_pieces: dict[str, int]  # training pieces per kind
    test_pieces: dict[str, int]  # test pieces per kind
    train_seconds: float  # scores cut after this many seconds (training)
    test_seconds: float  # (test)
    window_hop: float  # seconds between training windows
    batch_size: int
    scratch_epochs: int
    scratch_lr: float
    finetune_epochs: int
    finetune_lr: float
    lora_rank: int
    lora_lr: float
    scales: tuple[float, ...]  # task-vector scales evaluated for the full fine-tune
    roll_seconds: float  # length of the piano-roll figures
    out: Path


FULL = Config(
    seeds=(0, 1, 2),
    train_pieces={"ensemble": 24, "piano": 12, "melodies": 16},
    test_pieces={"ensemble": 6, "piano": 6, "melodies": 8},
    train_seconds=16.0,
    test_seconds=20.0,
    window_hop=1.0,
    batch_size=8,
    scratch_epochs=3,
    scratch_lr=3e-3,
    finetune_epochs=2,
    finetune_lr=3e-5,
    lora_rank=2,
    lora_lr=3e-4,
    scales=(-1.0, 0.5, 1.0),
    roll_seconds=12.0,
    out=HERE / "results",
)
QUICK = Config(
    seeds=(0,),
    train_pieces={"ensemble": 1, "piano": 1, "melodies": 1},
    test_pieces={"ensemble": 1, "piano": 1, "melodies": 1},
    train_seconds=4.0,
    test_seconds=4.0,
    window_hop=2.0,
    batch_size=2,
    scratch_epochs=1,
    scratch_lr=3e-3,
    finetune_epochs=1,
    finetune_lr=3e-5,
    lora_rank=2,
    lora_lr=3e-4,
    scales=(-1.0, 1.0),
    roll_seconds=4.0,
    out=HERE / "results-quick",
)


# %%
# Data: rendered pieces, training windows with cached features
# ------------------------------------------------------------


def load_data(cfg: Config) -> dict[str, dict[str, MusicSet]]:
    """The train and test pieces of the three kinds (rendered once, then cached)."""
    data: dict[str, dict[str, MusicSet]] = {}
    for kind in KINDS:
        data[kind] = {
            "train": rendered_music(
                kind, split="train", n_pieces=cfg.train_pieces[kind], max_seconds=cfg.train_seconds
            ),
            "test": rendered_music(
                kind, split="test", n_pieces=cfg.test_pieces[kind], max_seconds=cfg.test_seconds
            ),
        }
    return data


def describe(sets: Mapping[str, Mapping[str, MusicSet]]) -> dict[str, Any]:
    """Sizes of every split: pieces, seconds, notes, mean polyphony, instruments."""
    out: dict[str, Any] = {}
    for kind, splits in sets.items():
        for split, music in splits.items():
            notes = [p.notes for p in music]
            sounding = sum(float((n[:, 1] - n[:, 0]).sum()) for n in notes)
            out[f"{kind}/{split}"] = {
                "pieces": len(music),
                "seconds": music.duration,
                "notes": sum(int(n.shape[0]) for n in notes),
                "polyphony": sounding / max(music.duration, 1e-9),
                "programs": sorted({int(q) for p in music for q in p.programs}),
                "names": list(music.names),
            }
    return out


def windows(pieces: Sequence[Piece], hop_seconds: float) -> tuple[Tensor, Posteriorgrams]:
    """Two-second model windows every ``hop_seconds`` and their labels."""
    audio, labels = [], []
    hop = int(hop_seconds * BASIC_PITCH_SAMPLE_RATE)
    for piece in pieces:
        x = piece.mixture
        for start in range(0, max(1, x.shape[0] - BASIC_PITCH_WINDOW // 2), hop):
            chunk = x[start : start + BASIC_PITCH_WINDOW]
            audio.append(torch.nn.functional.pad(chunk, (0, BASIC_PITCH_WINDOW - chunk.shape[0])))
            labels.append(note_targets(piece.notes, start=start / BASIC_PITCH_SAMPLE_RATE))
    return torch.stack(audio), Posteriorgrams(
        contour=torch.stack([t.contour for t in labels]),
        note=torch.stack([t.note for t in labels]),
        onset=torch.stack([t.onset for t in labels]),
    )


def feature_set(pieces: Sequence[Piece], hop_seconds: float) -> TensorDataset:
    """(features, note, onset, contour) per window; the fixed CQT front end runs once."""
    audio, labels = windows(pieces, hop_seconds)
    front = BasicPitch()
    with torch.no_grad():
        feats = torch.cat([front.features(audio[i : i + 32]) for i in range(0, len(audio), 32)])
    return TensorDataset(feats, labels.note, labels.onset, labels.contour)


def window_loss(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
    """The paper's loss on a batch of cached features (the one LossFn convention)."""
    feats, note, onset, contour = batch
    out = model.heads(feats)  # type: ignore[operator]
    return basic_pitch_loss(out, Posteriorgrams(contour=contour, note=note, onset=onset))


# %%
# Evaluation
# ----------


def transcribe(model: BasicPitch, piece: Piece) -> list[NoteEvent]:
    """The notes of a whole piece, decoded with the official defaults."""
    return notes_from_posteriorgrams(model.predict(piece.mixture))


def evaluate(model: BasicPitch, sets: Mapping[str, MusicSet]) -> dict[str, Any]:
    """Per data set: the three metrics of every test piece, their means, and the notes
    transcribed from the first piece (for the piano rolls)."""
    out: dict[str, Any] = {}
    for kind, music in sets.items():
        notes = [transcribe(model, p) for p in music]
        per_piece = [transcription_scores(p.notes, n) for p, n in zip(music, notes, strict=True)]
        out[kind] = {
            "per_piece": {m: [s[m] for s in per_piece] for m in METRICS},
            **{m: float(np.mean([s[m] for s in per_piece])) for m in METRICS},
            "first_notes": note_rows(notes[0]),
        }
    return out


class FrozenNorms(BasicPitch):
    """Basic Pitch whose batch norms stay in eval mode while training.

    The released model's batch norms are folded into its convolutions; a fine-tune must use
    them as the fixed affine maps they are, not re-estimate statistics from small batches.
    """

    def train(self, mode: bool = True) -> FrozenNorms:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self


def released_copy(released: BasicPitch) -> FrozenNorms:
    model = FrozenNorms()
    model.load_state_dict(released.state_dict())
    return model.eval()


# %%
# The study
# ---------


def train_from_scratch(cfg: Config, seed: int, data: TensorDataset) -> tuple[BasicPitch, Any]:
    torch.manual_seed(seed)
    model = BasicPitch()
    trainer = train.Trainer(model, lr=cfg.scratch_lr, seed=seed)
    history = trainer.fit(
        data, epochs=cfg.scratch_epochs, batch_size=cfg.batch_size, loss=window_loss
    )
    return model.eval(), history


def finetune_full(
    cfg: Config, seed: int, released: BasicPitch, data: TensorDataset
) -> tuple[ws.TaskVector, Any]:
    model = released_copy(released)
    trainer = train.Trainer(model, lr=cfg.finetune_lr, seed=seed)
    history = trainer.fit(
        data, epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, loss=window_loss
    )
    return ws.TaskVector.from_models(base=released, finetuned=model.eval()), history


def finetune_lora(
    cfg: Config, seed: int, released: BasicPitch, data: TensorDataset
) -> tuple[ws.TaskVector, Any]:
    """LoRA adapters (PEFT) on the three wide convolutions; the adapter as a task vector."""
    import peft

    torch.manual_seed(seed)
    targets = ["contour_conv", "note_conv", "onset_conv"]
    config = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, target_modules=targets)
    model = peft.get_peft_model(released_copy(released), config)
    trainer = train.Trainer(model, lr=cfg.lora_lr, seed=seed)
    history = trainer.fit(
        data, epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, loss=window_loss
    )
    adapter = peft.get_peft_model_state_dict(model)
    vector = ws.TaskVector.from_lora(adapter, config=config.to_dict())
    return vector, history


def edited(released: BasicPitch, vector: ws.TaskVector, scale: float) -> BasicPitch:
    """The released model plus ``scale`` times a task vector (a new model)."""
    model = BasicPitch()
    model.load_state_dict(vector.apply_to(released.state_dict(), scale=scale))
    return model.eval()


def run_seed(
    cfg: Config,
    seed: int,
    released: BasicPitch,
    train_sets: Mapping[str, TensorDataset],
    test_sets: Mapping[str, MusicSet],
    rolls: dict[str, Any],
) -> dict[str, Any]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    poly = torch.utils.data.ConcatDataset([train_sets["ensemble"], train_sets["piano"]])
    scratch, scratch_history = train_from_scratch(cfg, seed, poly)  # type: ignore[arg-type]
    times["scratch_train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores: dict[str, Any] = {"scratch": evaluate(scratch, test_sets)}
    times["scratch_eval"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    full, full_history = finetune_full(cfg, seed, released, train_sets["melodies"])
    lora, lora_history = finetune_lora(cfg, seed, released, train_sets["melodies"])
    times["finetune_train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for scale in cfg.scales:
        scores[f"full x{scale:g}"] = evaluate(edited(released, full, scale), test_sets)
    scores["lora x1"] = evaluate(edited(released, lora, 1.0), test_sets)
    times["finetune_eval"] = time.perf_counter() - t0
    if seed == cfg.seeds[0]:
        for kind in test_sets:
            rolls[kind]["from scratch"] = scores["scratch"][kind]["first_notes"]
        rolls["melodies"]["full fine-tune"] = scores["full x1"]["melodies"]["first_notes"]
        rolls["melodies"]["LoRA fine-tune"] = scores["lora x1"]["melodies"]["first_notes"]
    for variant in scores.values():
        for kind_scores in variant.values():
            del kind_scores["first_notes"]
    return {
        "seed": seed,
        "scores": scores,
        "losses": {
            "scratch": list(scratch_history.losses),
            "full": list(full_history.losses),
            "lora": list(lora_history.losses),
        },
        "steps": {
            "scratch": scratch_history.steps,
            "full": full_history.steps,
            "lora": lora_history.steps,
        },
        "vector_norms": {"full": float(full.norm()), "lora": float(lora.norm())},
        "lora_parameters": cfg.lora_rank
        * sum(
            (w.shape[1] * w.shape[2] * w.shape[3] + w.shape[0])
            for w in (
                released.contour_conv.weight,
                released.note_conv.weight,
                released.onset_conv.weight,
            )
        ),
        "seconds": times,
    }


def note_rows(notes: Sequence[NoteEvent]) -> list[list[float]]:
    return [[round(n.start, 4), round(n.end, 4), float(n.pitch)] for n in notes]


# %%
# Tables and figures
# ------------------


def ci(cell: report.Cell) -> str:
    """A summary as ``mean ± half-width of its 95 % t interval`` (``mean`` for one value)."""
    if isinstance(cell, report.Summary):
        if np.isnan(cell.mean):
            return "n/a"
        if cell.n < 2:
            return f"{cell.mean:.3f}"
        return f"{cell.mean:.3f} ± {cell.half_width:.3f}"
    if isinstance(cell, float):
        return f"{cell:.3f}"
    return str(cell)


def per_seed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def tables(result: Mapping[str, Any]) -> dict[str, str]:
    """Markdown tables (by name) from ``results.json`` alone."""
    runs = result["runs"]
    seeds = [r["seed"] for r in runs]
    out: dict[str, str] = {}
    rows: list[list[report.Cell]] = []
    for name, d in result["data"].items():
        rows.append(
            [name, d["pieces"], f"{d['seconds'] / 60:.1f}", d["notes"], f"{d['polyphony']:.2f}"]
        )
    out["data"] = report.markdown_table(
        ["set/split", "pieces", "minutes", "notes", "mean polyphony"], rows
    )
    rows = []
    for kind in KINDS:
        released = result["released"][kind]["per_piece"]
        rows.append([kind, *(report.summarize(released[m]) for m in METRICS)])
    out["released"] = report.markdown_table(
        ["data set (test)", "F", "F_no", "Acc"], rows, formats=ci
    )
    rows = []
    for model, values in PAPER["F_no"].items():
        rows.append([model, *(f"{v:.1f}" for v in values.values())])
    out["paper"] = report.markdown_table(["model", *PAPER["F_no"]["Basic Pitch (NMP)"]], rows)
    rows = []
    for kind in ("ensemble", "piano"):
        for m in METRICS:
            ours = [r["scores"]["scratch"][kind][m] for r in runs]
            rows.append(
                [
                    kind,
                    m,
                    result["released"][kind][m],
                    report.summarize(ours),
                    per_seed(ours),
                ]
            )
    out["scratch"] = report.markdown_table(
        [
            "data set (test)",
            "metric",
            "released",
            f"ours from scratch ({len(seeds)} seeds)",
            "per seed",
        ],
        rows,
        formats=ci,
    )
    variants = [k for k in runs[0]["scores"] if k != "scratch"]
    columns = ("melodies", "ensemble", "piano")
    rows = []
    for m in METRICS:
        rows.append(["released", m, *(result["released"][k][m] for k in columns), ""])
        for v in variants:
            vals = {k: [r["scores"][v][k][m] for r in runs] for k in columns}
            rows.append(
                [v, m, *(report.summarize(vals[k]) for k in columns), per_seed(vals["melodies"])]
            )
    out["finetune"] = report.markdown_table(
        ["model", "metric", "melodies", "ensemble", "piano", "melodies per seed"], rows, formats=ci
    )
    return out


def markdown(result: Mapping[str, Any], parts: Mapping[str, str]) -> str:
    n = len(result["runs"])
    titles = {
        "data": "Data sets",
        "released": "Released model (mean ± 95 % interval over test pieces)",
        "paper": f"Paper, for comparison in kind ({PAPER['source']}; %)",
        "scratch": f"Trained from scratch here (mean ± 95 % interval over {n} seeds)",
        "finetune": f"Fine-tuned on melodies: task vectors (mean ± 95 % interval over {n} seeds)",
    }
    return "".join(f"### {titles[k]}\n\n{v}\n" for k, v in parts.items())


def rst(parts: Mapping[str, str]) -> str:
    """The same tables as RST list-tables, each under a ``.. _p3-<name>:`` comment marker."""
    out = []
    for name, table in parts.items():
        lines = [ln for ln in table.strip().split("\n") if not ln.startswith("|---")]
        cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
        body = [f".. p3-table: {name}", "", ".. list-table::", "   :header-rows: 1", ""]
        for row in cells:
            body.append("   * - " + row[0])
            body.extend(f"     - {c}" for c in row[1:])
        out.append("\n".join(body) + "\n")
    return "\n".join(out)


def figures(result: Mapping[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = result["config"]["roll_seconds"]
    for kind, rolls in result["rolls"].items():
        names = list(rolls)
        fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.7 * len(names) + 0.6), sharex=True)
        ref = np.asarray(rolls["reference"]).reshape(-1, 3)
        lo = ref[:, 2].min() - 3 if len(ref) else 40
        hi = ref[:, 2].max() + 3 if len(ref) else 80
        for ax, name in zip(np.atleast_1d(axes), names, strict=True):
            notes = np.asarray(rolls[name]).reshape(-1, 3)
            colour = "black" if name == "reference" else "tab:blue"
            for onset, offset, pitch in notes:
                if onset < span:
                    ax.broken_barh([(onset, offset - onset)], (pitch - 0.4, 0.8), color=colour)
            ax.set_ylim(lo, hi)
            ax.set_ylabel("MIDI")
            ax.set_title(name, fontsize=9, loc="left")
        np.atleast_1d(axes)[-1].set_xlim(0, span)
        np.atleast_1d(axes)[-1].set_xlabel("seconds")
        fig.suptitle(f"{kind}: {result['rolls_piece'][kind]}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"pianoroll_{kind}.png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes, ("scratch", "full", "lora"), strict=True):
        for r in result["runs"]:
            ax.plot(
                range(1, len(r["losses"][key]) + 1),
                r["losses"][key],
                marker="o",
                label=f"seed {r['seed']}",
            )
        ax.set_title(f"training loss: {key}", fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
    scales = [0.0, *result["config"]["scales"]]
    for ax, kind in zip(axes, KINDS, strict=True):
        for r in result["runs"]:
            ys = [result["released"][kind]["F_no"]] + [
                r["scores"][f"full x{s:g}"][kind]["F_no"] for s in result["config"]["scales"]
            ]
            order = np.argsort(scales)
            ax.plot(
                np.array(scales)[order], np.array(ys)[order], marker="o", label=f"seed {r['seed']}"
            )
        ax.axvline(0.0, color="grey", lw=0.5)
        ax.set_title(f"{kind}: F_no", fontsize=9)
        ax.set_xlabel("scale of the fine-tune vector")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "finetune_scale.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--tables",
        type=Path,
        default=None,
        help="only rebuild results.md, tables.rst and the figures from this results.json",
    )
    args = parser.parse_args()
    if args.tables is not None:
        result = json.loads(args.tables.read_text())
        write_outputs(result, args.tables.parent)
        return
    logging.getLogger("weightspace").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    if args.out is not None:
        cfg.out = args.out
    cfg.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    sets = load_data(cfg)
    test_sets = {k: sets[k]["test"] for k in KINDS}
    t0 = time.perf_counter()
    train_sets = {k: feature_set(list(sets[k]["train"]), cfg.window_hop) for k in KINDS}
    prep = time.perf_counter() - t0
    print(f"data: {time.perf_counter() - start:.0f} s", flush=True)
    released = basic_pitch()
    t0 = time.perf_counter()
    released_scores = evaluate(released, test_sets)
    released_seconds = time.perf_counter() - t0
    rolls: dict[str, Any] = {
        kind: {
            "reference": [
                [round(v, 4) for v in row] for row in test_sets[kind][0].notes[:, :3].tolist()
            ],
            "released": released_scores[kind].pop("first_notes"),
        }
        for kind in KINDS
    }
    runs = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(cfg, seed, released, train_sets, test_sets, rolls))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s {runs[-1]['seconds']}", flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "seconds": time.perf_counter() - start,
        "seconds_detail": {"features": prep, "released_eval": released_seconds},
        "load_average": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
        "paper": PAPER,
        "data": describe(sets),
        "train_windows": {k: len(v) for k, v in train_sets.items()},
        "released": released_scores,
        "runs": runs,
        "rolls": rolls,
        "rolls_piece": {k: test_sets[k][0].name for k in KINDS},
    }
    result["seconds"] = time.perf_counter() - start
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    print(write_outputs(result, cfg.out))
    print(f"total {result['seconds']:.0f} s; wrote {cfg.out}")


def write_outputs(result: Mapping[str, Any], out: Path) -> str:
    """``results.md``, ``tables.rst`` and the figures, from the contents of ``results.json``."""
    parts = tables(result)
    text = markdown(result, parts)
    (out / "results.md").write_text(text)
    (out / "tables.rst").write_text(rst(parts))
    figures(result, out)
    return text


if __name__ == "__main__":
    main()
