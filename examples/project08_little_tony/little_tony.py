"""
Little Tony: distilling a diffusion separator of rendered multi-instrument music
================================================================================

Project 8 of the catalogue. A small MSDM-style score-based diffusion model (Mariani et al.,
"Multi-Source Diffusion Models for Simultaneous Music Generation and Separation", ICLR 2024)
models the four stems of a Bach chorale (soprano, alto, tenor and bass, each rendered
through FluidSynth on an instrument drawn per piece; :func:`weightspace.data.rendered_music`)
jointly, given their mixture, and separates by sampling. It is the teacher of two students
trained with :class:`weightspace.distill.Distiller`:

* ``pd``: the same network taught to take one step where its teacher takes two, round after
  round (progressive distillation, Salimans and Ho, ICLR 2022): 32 -> 16 -> 8 -> 4 -> 2 steps;
* ``small``: a network with about a quarter of the teacher's parameters, taught to output the
  teacher's denoised estimate at every noise level (output matching);

and of a control, ``small (no teacher)``: the small network trained on the data alone for
the same number of steps. Reported: SI-SDR improvement per stem and averaged, parameters,
network evaluations and wall time per second of audio.

Run ``python little_tony.py`` for the full study (about 25 minutes of one core; writes
``results/separation/``) or ``python little_tony.py --quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (
    Denoiser,
    UNetConfig,
    count_parameters,
    draw_sigma,
    edm_loss,
    karras_sigmas,
    loss_weight,
    markdown_to_rst,
    pd_target,
    separate,
    si_sdr,
)

import weightspace as ws
from weightspace import distill, report, train

STEMS = ("soprano", "alto", "tenor", "bass")


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    sample_rate: int
    clip: int  # samples per clip
    train_pieces: int
    test_pieces: int
    max_seconds: float  # of each piece
    eval_clips: int
    teacher: UNetConfig
    small: UNetConfig
    teacher_epochs: int
    small_epochs: int  # for the distilled small student and its no-teacher control
    pd_clips: int  # training clips of each halving round (one pass), redrawn per round
    steps: int  # the teacher's sampler
    pd_rounds: int
    batch_size: int
    lr: float
    seed: int
    out: Path
    sigma_max: float = 10.0  # the sampler's first noise level (data at sigma_data 0.5)


FULL = Config(
    sample_rate=8000,
    clip=4096,
    train_pieces=48,
    test_pieces=8,
    max_seconds=16.0,
    eval_clips=48,
    teacher=UNetConfig(base=48, channels=(64, 96, 128), factors=(2, 4, 4), blocks=(1, 1, 1),
                       attentions=(False, True, True), heads=4, head_features=32),
    small=UNetConfig(base=24, channels=(32, 48, 64), factors=(2, 4, 4), blocks=(1, 1, 1),
                     attentions=(False, True, True), heads=2, head_features=16),
    teacher_epochs=7,
    small_epochs=3,
    pd_clips=2400,
    steps=32,
    pd_rounds=4,
    batch_size=16,
    lr=1e-3,
    seed=0,
    out=HERE / "results" / "separation",
    sigma_max=3.0,
)  # fmt: skip
QUICK = Config(
    sample_rate=8000,
    clip=1024,
    train_pieces=2,
    test_pieces=1,
    max_seconds=3.0,
    eval_clips=4,
    teacher=UNetConfig(base=16, channels=(16, 24), factors=(2, 4), blocks=(1, 1),
                       attentions=(False, True), heads=2, head_features=8),
    small=UNetConfig(base=8, channels=(8, 16), factors=(2, 4), blocks=(1, 1),
                     attentions=(False, True), heads=1, head_features=8),
    teacher_epochs=1,
    small_epochs=1,
    pd_clips=64,
    steps=8,
    pd_rounds=2,
    batch_size=8,
    lr=1e-3,
    seed=0,
    out=HERE / "results" / "separation",
)  # fmt: skip


# ---- data ----------------------------------------------------------------------------------


def clips_of(pieces: Any, clip: int, hop: int) -> tuple[Tensor, Tensor]:
    """Cut aligned clips of ``clip`` samples every ``hop``: stems ``[N, 4, L]``, mixture
    ``[N, 1, L]``."""
    stems, mixes = [], []
    for piece in pieces:
        if piece.stems.shape[0] != len(STEMS):
            continue
        n = piece.stems.shape[1]
        for start in range(0, n - clip + 1, hop):
            s = piece.stems[:, start : start + clip]
            stems.append(s)
            mixes.append(s.sum(0, keepdim=True))
    return torch.stack(stems), torch.stack(mixes)


def load_data(cfg: Config) -> dict[str, Any]:
    kw = {"kind": "ensemble", "sample_rate": cfg.sample_rate, "max_seconds": cfg.max_seconds}
    tr = ws.data.rendered_music(split="train", n_pieces=cfg.train_pieces, **kw)
    te = ws.data.rendered_music(split="test", n_pieces=cfg.test_pieces, **kw)
    xs, ys = clips_of(tr, cfg.clip, cfg.clip // 2)
    scale = 0.5 / float(xs.std())  # stems at EDM's sigma_data = 0.5
    xt, yt = clips_of(te, cfg.clip, cfg.clip)
    # Keep test clips in which every stem sounds (SI-SDR is undefined on silence).
    rms = xt.pow(2).mean(-1).sqrt()
    keep = (rms > 0.1 * rms.mean()).all(1)
    xt, yt = xt[keep][: cfg.eval_clips], yt[keep][: cfg.eval_clips]
    return {
        "train": (xs * scale, ys * scale),
        "test": (xt * scale, yt * scale),
        "scale": scale,
        "train_pieces": list(tr.names),
        "test_pieces": list(te.names),
        "train_seconds": tr.duration,
        "programs": {p.name: list(p.programs) for p in list(tr) + list(te)},
    }


# ---- training ------------------------------------------------------------------------------


class SharedNoise:
    """The student's and the teacher's forwards of one Distiller step, on the same noise.

    The student's forward (run first) draws the noise level and the noise, from the RNG the
    trainer seeds; the teacher's forward reuses them. Both return ``sqrt(w) * D`` with EDM's
    weight ``w``, so that :class:`weightspace.distill.OutputMatch` is EDM's weighted loss.
    With ``grid`` (progressive distillation) the levels are the student's sampler steps and
    the teacher's output is the two-step target of :func:`pd_target`.
    """

    def __init__(self, grid: Tensor | None = None) -> None:
        self.grid = grid
        self.state: tuple[Tensor, ...] = ()

    def student(self, model: Any, batch: Any) -> Tensor:
        x, y = batch
        b = x.shape[0]
        if self.grid is None:
            sigma = draw_sigma(b)
            mid = nxt = sigma
        else:
            k = torch.randint(0, (len(self.grid) - 1) // 2, (b,))
            sigma, mid, nxt = self.grid[2 * k], self.grid[2 * k + 1], self.grid[2 * k + 2]
        noisy = x + sigma.view(-1, 1, 1) * torch.randn_like(x)
        self.state = (noisy, y, sigma, mid, nxt)
        w = loss_weight(sigma, model.sigma_data).sqrt()
        return w * model(noisy, sigma, y)  # type: ignore[no-any-return]

    def teacher(self, model: Any, batch: Any) -> Tensor:
        noisy, y, sigma, mid, nxt = self.state
        w = loss_weight(sigma, model.sigma_data).sqrt()
        if self.grid is None:
            return w * model(noisy, sigma, y)  # type: ignore[no-any-return]
        return w * pd_target(model, noisy, y, sigma, mid, nxt)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fit_on_data(model: Denoiser, data: tuple[Tensor, Tensor], epochs: int, cfg: Config) -> dict:
    h = train.fit_(model, data, loss=edm_loss, epochs=epochs, batch_size=cfg.batch_size,
                   lr=cfg.lr, max_grad_norm=1.0, seed=cfg.seed)  # fmt: skip
    return {"losses": list(h.losses), "steps": h.steps, "seconds": h.seconds}


def fit_distilled(student: Denoiser, teacher: Denoiser, data: tuple[Tensor, Tensor],
                  epochs: int, cfg: Config, grid: Tensor | None = None) -> dict:  # fmt: skip
    noise = SharedNoise(grid)
    d = distill.Distiller(student, teacher, [distill.OutputMatch("mse")],
                          student_forward=noise.student, teacher_forward=noise.teacher,
                          lr=cfg.lr, max_grad_norm=1.0, seed=cfg.seed)  # fmt: skip
    h = d.fit(data, epochs=epochs, batch_size=cfg.batch_size)
    return {"losses": list(h.losses), "steps": h.steps, "seconds": h.seconds}


# ---- evaluation ----------------------------------------------------------------------------


def evaluate(model: Denoiser, test: tuple[Tensor, Tensor], sigmas: Tensor, cfg: Config,
             batch: int = 16) -> dict[str, Any]:  # fmt: skip
    x, y = test
    estimates = []
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        estimates.append(separate(model, y[i : i + batch], sigmas, seed=cfg.seed + i))
    seconds = time.perf_counter() - t0
    est = torch.cat(estimates)
    sdr = si_sdr(est, x)
    base = si_sdr(y.expand_as(x), x)
    improvement = (sdr - base).double()
    audio_seconds = x.shape[0] * x.shape[-1] / cfg.sample_rate
    return {
        "nfe": len(sigmas) - 1,
        "si_sdr": sdr.mean(0).tolist(),
        "si_sdri_per_clip": improvement.tolist(),  # [clips][stems]
        "si_sdri": improvement.mean(0).tolist(),
        "si_sdri_mean": float(improvement.mean()),
        "seconds_per_audio_second": seconds / audio_seconds,
        "estimate0": est[0].tolist() if cfg.clip <= 4096 else None,
    }


def sub_grid(sigmas: Tensor, steps: int) -> Tensor:
    """The sampler of ``steps`` steps on the teacher's grid (every k-th level)."""
    k = (len(sigmas) - 1) // steps
    return sigmas[::k]


# ---- the study -----------------------------------------------------------------------------


def run(cfg: Config) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = load_data(cfg)
    print(f"data: {data['train'][0].shape[0]} train clips, {data['test'][0].shape[0]} test "
          f"clips ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    full = karras_sigmas(cfg.steps, sigma_max=cfg.sigma_max)
    models: dict[str, dict[str, Any]] = {}

    torch.manual_seed(cfg.seed)
    teacher = Denoiser(cfg.teacher)
    fit = fit_on_data(teacher, data["train"], cfg.teacher_epochs, cfg)
    teacher.eval()
    ev = evaluate(teacher, data["test"], full, cfg)
    models["teacher"] = {"parameters": parameters(teacher), "fit": fit, "eval": ev}
    print(f"teacher: {fit['seconds']:.0f} s, SI-SDRi {ev['si_sdri_mean']:.2f} dB", flush=True)

    # The teacher's own sampler with fewer steps, without distillation: the curve PD beats.
    curve = {}
    steps = cfg.steps
    while steps >= 1:
        if steps != cfg.steps:
            curve[steps] = evaluate(teacher, data["test"], sub_grid(full, steps), cfg)
        steps //= 2
    models["teacher"]["fewer_steps"] = {str(k): v for k, v in curve.items()}
    print("teacher, fewer steps:", {k: round(v["si_sdri_mean"], 2) for k, v in curve.items()},
          "losses", [round(v, 4) for v in fit["losses"]], flush=True)  # fmt: skip

    prev, grid = teacher, full
    for r in range(cfg.pd_rounds):
        student = copy.deepcopy(prev)
        g = torch.Generator().manual_seed(cfg.seed + 100 + r)
        xs, ys = data["train"]
        idx = torch.randperm(xs.shape[0], generator=g)[: cfg.pd_clips]
        fit = fit_distilled(student, prev, (xs[idx], ys[idx]), 1, cfg, grid=grid)
        student.eval()
        grid = grid[::2]
        ev = evaluate(student, data["test"], grid, cfg)
        models[f"pd{len(grid) - 1}"] = {"parameters": parameters(student), "fit": fit, "eval": ev}
        print(f"pd -> {len(grid) - 1} steps: SI-SDRi {ev['si_sdri_mean']:.2f} dB", flush=True)
        prev = student

    torch.manual_seed(cfg.seed + 1)
    small = Denoiser(cfg.small)
    control = copy.deepcopy(small)  # the same initialisation for both
    fit = fit_distilled(small, teacher, data["train"], cfg.small_epochs, cfg)
    ev = evaluate(small.eval(), data["test"], full, cfg)
    models["small"] = {"parameters": parameters(small), "fit": fit, "eval": ev}
    print(f"small: SI-SDRi {ev['si_sdri_mean']:.2f} dB", flush=True)
    fit = fit_on_data(control, data["train"], cfg.small_epochs, cfg)
    ev = evaluate(control.eval(), data["test"], full, cfg)
    models["small_no_teacher"] = {"parameters": parameters(control), "fit": fit, "eval": ev}
    print(f"small (no teacher): SI-SDRi {ev['si_sdri_mean']:.2f} dB", flush=True)

    test_x, test_y = data["test"]
    return {
        "data": {k: v for k, v in data.items() if k not in ("train", "test")}
        | {"train_clips": int(data["train"][0].shape[0]), "test_clips": int(test_x.shape[0])},
        "models": models,
        "paper_size_parameters": count_parameters(UNetConfig.msdm()),
        "example": {"mixture": test_y[0, 0].tolist(), "stems": test_x[0].tolist()},
    }


# ---- outputs -------------------------------------------------------------------------------

ORDER = ("teacher", "pd16", "pd8", "pd4", "pd2", "pd1", "small", "small_no_teacher")
LABEL = {"teacher": "teacher", "small": "small (distilled)",
         "small_no_teacher": "small (no teacher)"}  # fmt: skip


def label(name: str) -> str:
    return LABEL.get(name, f"pd ({name[2:]} steps)")


def tables(results: dict[str, Any]) -> str:
    models = results["models"]
    teacher = models["teacher"]
    t_speed = teacher["eval"]["seconds_per_audio_second"]
    rows = []
    for name in [n for n in ORDER if n in models]:
        m = models[name]
        ev = m["eval"]
        per_clip = np.array(ev["si_sdri_per_clip"])
        stems = [report.summarize(per_clip[:, k].tolist()) for k in range(per_clip.shape[1])]
        mean = report.summarize(per_clip.mean(1).tolist())
        speed = ev["seconds_per_audio_second"]
        rows.append([label(name), *stems, mean, m["parameters"], ev["nfe"], speed,
                     t_speed / speed])  # fmt: skip
    header = ["model", *[f"{s} SI-SDRi (dB)" for s in STEMS], "mean SI-SDRi (dB)", "parameters",
              "network evaluations", "s per s of audio", "speed-up"]  # fmt: skip
    text = "### Separation of the test clips (mean ± std over clips)\n\n"
    text += report.markdown_table(header, rows,
                                  formats=[None, ".2f", ".2f", ".2f", ".2f", ".2f", ",d", "d",
                                           ".3f", ".1f"])  # fmt: skip
    curve_rows = []
    for k, ev in sorted(teacher["fewer_steps"].items(), key=lambda kv: -int(kv[0])):
        pd = models.get(f"pd{k}")
        own = report.summarize(np.array(ev["si_sdri_per_clip"]).mean(1).tolist())
        taught = None
        if pd is not None:
            taught = report.summarize(np.array(pd["eval"]["si_sdri_per_clip"]).mean(1).tolist())
        curve_rows.append([int(k), own, taught])
    text += "\n### Fewer steps: the teacher's own sampler against the distilled one\n\n"
    text += report.markdown_table(["network evaluations", "teacher, fewer steps (dB)",
                                   "progressive distillation (dB)"], curve_rows,
                                  formats=["d", ".2f", ".2f"])  # fmt: skip
    return text


def write_wav(path: Path, audio: Tensor, sample_rate: int, peak: float) -> None:
    pcm = (audio.clamp(-peak, peak) / peak * 0.9 * 32767).round().to(torch.int16).numpy()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def outputs(results: dict[str, Any], cfg: Config, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    # SI-SDRi against network evaluations.
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    t = models["teacher"]
    pts = {int(k): v["si_sdri_mean"] for k, v in t["fewer_steps"].items()}
    pts[t["eval"]["nfe"]] = t["eval"]["si_sdri_mean"]
    ks = sorted(pts)
    ax.plot(ks, [pts[k] for k in ks], "o-", label="teacher, fewer steps")
    pd = sorted((m["eval"]["nfe"], m["eval"]["si_sdri_mean"]) for n, m in models.items()
                if n.startswith("pd"))  # fmt: skip
    ax.plot([p[0] for p in pd], [p[1] for p in pd], "s-", label="progressive distillation")
    for name, marker in (("small", "^"), ("small_no_teacher", "v")):
        ev = models[name]["eval"]
        ax.plot([ev["nfe"]], [ev["si_sdri_mean"]], marker, ms=8, label=label(name))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network evaluations per separation")
    ax.set_ylabel("mean SI-SDRi (dB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "si_sdr_vs_nfe.png", dpi=120)
    plt.close(fig)

    # Spectrograms of one test clip: reference stems, teacher and a 4-step student.
    ex = results["example"]
    mix = torch.tensor(ex["mixture"])
    ref = torch.tensor(ex["stems"])
    rows = [("reference", ref), ("teacher", torch.tensor(t["eval"]["estimate0"]))]
    fast = min((m["eval"]["nfe"], n) for n, m in models.items() if n.startswith("pd"))[1]
    rows.append((label(fast), torch.tensor(models[fast]["eval"]["estimate0"])))
    win = torch.hann_window(256)
    fig, axes = plt.subplots(len(rows), len(STEMS) + 1, figsize=(12, 2.1 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (name, audio) in enumerate(rows):
        signals = [mix, *audio]
        for c, sig in enumerate(signals):
            spec = torch.stft(sig, 256, 64, window=win, return_complex=True).abs()
            axes[r][c].imshow((spec + 1e-4).log10().numpy(), origin="lower", aspect="auto",
                              vmin=-3, vmax=1.5, cmap="magma")  # fmt: skip
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            title = "mixture" if c == 0 else STEMS[c - 1]
            axes[r][c].set_title(f"{name}: {title}" if c else title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "spectrograms.png", dpi=60)
    plt.close(fig)

    peak = float(mix.abs().max())
    audio_dir = out / "audio"
    audio_dir.mkdir(exist_ok=True)
    write_wav(audio_dir / "mixture.wav", mix, cfg.sample_rate, peak)
    for name, audio in rows:
        tag = name.split(" ")[0] if name != label(fast) else fast
        for k, s in enumerate(STEMS):
            write_wav(audio_dir / f"{tag}_{s}.wav", audio[k], cfg.sample_rate, peak)


def write_tables(results: dict[str, Any], out: Path) -> None:
    """``results.md`` (Markdown) and ``results.rst`` (for the report) from the results."""
    text = tables(results)
    (out / "results.md").write_text(text)
    (out / "results.rst").write_text(markdown_to_rst(text))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--sigma-max", type=float, default=None, help="the first noise level")
    parser.add_argument(
        "--rebuild", action="store_true", help="rewrite the tables from results.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.out is not None:
        cfg.out = args.out
    if args.sigma_max is not None:
        cfg.sigma_max = args.sigma_max
    cfg.out.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        write_tables(json.loads((cfg.out / "results.json").read_text()), cfg.out)
        return
    start = time.perf_counter()
    results = run(cfg)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.pop("out")
    results = {"mode": "quick" if args.quick else "full", "config": config,
               "seconds": time.perf_counter() - start,
               "torch_threads": torch.get_num_threads(), **results}  # fmt: skip
    outputs(results, cfg, cfg.out)
    for m in results["models"].values():  # the example waveforms are in audio/ already
        m["eval"].pop("estimate0", None)
        for ev in m.get("fewer_steps", {}).values():
            ev.pop("estimate0", None)
    results.pop("example")
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1))
    write_tables(results, cfg.out)
    print(f"total {results['seconds']:.0f} s; wrote {cfg.out}")


if __name__ == "__main__":
    main()
