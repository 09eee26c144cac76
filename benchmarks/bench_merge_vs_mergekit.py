"""weightspace against mergekit: task arithmetic and TIES on a generated Llama-style bf16 model.

Run (after creating the separate mergekit environment, see benchmarks/README.md):

    .venv/bin/python benchmarks/bench_merge_vs_mergekit.py --params 0.5B,1.4B --repeats 2

(one command for both sizes; the table of every size goes to
``benchmarks/results/merge_vs_mergekit.md``, or ``--results PATH``).

The script generates, from a seed, a Llama-style base model in bfloat16 (``--params``
parameters) and three "fine-tunes" (base + small random deltas, rounded to bfloat16), each an
HF-style folder of safetensors shards with ``model.safetensors.index.json`` and a minimal
``config.json``. On these inputs it measures, each run in a fresh subprocess (wall time and
peak RSS of the whole process, interpreter start and imports included):

* the start-up of each tool: the interpreter and its imports (``python -c "import
  weightspace.merge"``, mergekit's ``python -c "import mergekit.merge"``, ``import torch``);
* the I/O floor: read every input byte once and write an output of the size of one model;
* weightspace task arithmetic and TIES (density 0.5), through its Python API (lazy inputs,
  ``TaskVector.from_models``, ``weightspace.merge``, streaming ``save_state_dict``);
* mergekit task arithmetic and TIES (density 0.5), through ``mergekit-yaml ... --lazy-unpickle``
  on the CPU, from its own virtual environment (``--mergekit-python``).

Runs are interleaved (one repeat of every command, then the next repeat), so slow phases of a
noisy machine hit all of them; ``sync`` runs (untimed) before every timed run, so that no run
pays for the previous run's writeback. Before generating a size, the script checks that the
disk (inputs and two outputs) and the memory (mergekit's resident set, about half an input
model at 1.4B) can hold it, and says so when they cannot. Then both outputs are compared,
tensor by tensor, with a float64 reference: the error is ``|out - ref| / ulp_bf16(ref)``
(bf16 rounding steps; a correctly rounded result is within 0.5).

TIES semantics. Both libraries are configured alike: each task vector keeps its
``k = density * numel`` entries of largest magnitude per tensor, the sign is elected from the
sum of the trimmed deltas (mergekit ``consensus: sum``, weightspace ``majority="total"``), the
agreeing deltas are averaged (mergekit ``normalize: true`` with weights 1, weightspace's
disjoint mean), and the result is added to the base (scale / lambda 1). Remaining
differences, which the report counts: (1) entries tied in magnitude at a task's trim threshold
(frequent with bf16 data): weightspace keeps the first ones in row-major order (as the
reference does), mergekit keeps those that ``torch.argsort`` puts first; (2) a sign election
whose sum is exactly 0: weightspace elects no sign (result 0), mergekit elects ``+``. The
mergekit error is reported over all entries and over the entries that neither difference
touches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_FINETUNES = 3
DELTA_STD = 2e-3
GIB = 2**30

# --------------------------------------------------------------------------------- model spec


@dataclass(frozen=True)
class Arch:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        h, i = self.hidden, self.intermediate
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (h, h)),
                (p + "self_attn.v_proj.weight", (h, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
            ]
        out += [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]
        return out

    @property
    def params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())

    def config(self) -> dict[str, Any]:
        """The LlamaConfig fields that mergekit (through transformers) needs."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "head_dim": self.hidden // self.heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        }


def parse_params(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}
    t = text.strip().upper()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(float(t))


def choose_arch(params: int) -> Arch:
    """A Llama-style shape with about ``params`` parameters (hidden 1024 from 0.1B, 2048 from 1B).

    From 1B up the MLP is 2.75x the hidden size (TinyLlama's 2048/5632 shape): 1.4B gives
    25 layers.
    """
    if params >= 1_000_000_000:
        hidden, vocab = 2048, 32000
        inter = 5632
        per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
        layers = max(1, round((params - 2 * vocab * hidden - hidden) / per_layer))
        return Arch(hidden, inter, layers, hidden // 64, vocab)
    if params >= 100_000_000:
        hidden, vocab = 1024, 32000
    elif params >= 20_000_000:
        hidden, vocab = 512, 16000
    else:
        hidden, vocab = 256, 4000
    inter = 4 * hidden
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((params - 2 * vocab * hidden - hidden) / per_layer))
    return Arch(hidden, inter, layers, max(1, hidden // 64), vocab)


# --------------------------------------------------------------------------------- generation


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class _ShardWriter:
    """Collect tensors and write HF-style shards of at most ``shard_bytes`` bytes."""

    def __init__(self, folder: Path, shard_bytes: int, config: dict[str, Any]) -> None:
        self.folder = folder
        self.shard_bytes = shard_bytes
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.pending: dict[str, Any] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []
        self.total = 0

    def add(self, name: str, tensor: Any) -> None:
        n = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + n > self.shard_bytes:
            self._flush()
        self.pending[name] = tensor
        self.pending_bytes += n
        self.total += n

    def _flush(self) -> None:
        from safetensors.torch import save_file

        index = len(self.shards)
        save_file(
            self.pending, str(self.folder / f"shard-{index:05d}.safetensors"), {"format": "pt"}
        )
        self.shards.append(list(self.pending))
        self.pending = {}
        self.pending_bytes = 0

    def close(self) -> None:
        if self.pending:
            self._flush()
        n = len(self.shards)
        weight_map = {}
        for index, names in enumerate(self.shards):
            final = f"model-{index + 1:05d}-of-{n:05d}.safetensors"
            os.rename(self.folder / f"shard-{index:05d}.safetensors", self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        index_json = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


def generate(workdir: Path, arch: Arch, seed: int, shard_bytes: int) -> None:
    """Write ``base/`` and ``ft0/`` ... ``ft{N-1}/`` under ``workdir``."""
    import torch

    config = arch.config()
    writers = [_ShardWriter(workdir / "base", shard_bytes, config)]
    writers += [_ShardWriter(workdir / f"ft{i}", shard_bytes, config) for i in range(N_FINETUNES)]
    for name, shape in arch.tensors():
        gen = torch.Generator().manual_seed(_seed(seed, "base", name))
        if len(shape) == 1:  # RMSNorm weights, around 1
            base = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            base = 0.02 * torch.randn(shape, generator=gen)
        base_bf16 = base.to(torch.bfloat16)
        writers[0].add(name, base_bf16)
        ref = base_bf16.float()
        for i in range(N_FINETUNES):
            gen = torch.Generator().manual_seed(_seed(seed, "ft", i, name))
            delta = DELTA_STD * torch.randn(shape, generator=gen)
            writers[i + 1].add(name, (ref + delta).to(torch.bfloat16))
        del base, ref
    for writer in writers:
        writer.close()


# --------------------------------------------------------------------------------- workers


def _input_dirs(workdir: Path) -> list[Path]:
    return [workdir / "base"] + [workdir / f"ft{i}" for i in range(N_FINETUNES)]


def worker_io_floor(workdir: Path, out: Path, read: bool = True, write: bool = True) -> None:
    """Read every input byte once, write as many bytes as one model holds (no fsync)."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    for folder in _input_dirs(workdir) if read else []:
        for file in sorted(folder.glob("*.safetensors")):
            with open(file, "rb", buffering=0) as f:
                while f.readinto(view):
                    pass
    if not write:
        return
    size = sum(f.stat().st_size for f in (workdir / "base").glob("*.safetensors"))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.safetensors", "wb", buffering=0) as f:
        while size > 0:
            n = min(size, len(buf))
            f.write(view[:n])
            size -= n


class _Applied(Mapping[str, Any]):
    """``base + merged`` tensor by tensor, lazily, with ``shape()``/``dtype()`` for streaming."""

    def __init__(self, base: Any, merged: Any) -> None:
        self._base = base
        self._merged = merged

    def __getitem__(self, name: str) -> Any:
        target = {name: self._base[name]}
        if name not in self._merged:
            return target[name]
        return self._merged.intersection([name]).apply_to(target)[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def shape(self, name: str) -> Any:
        return self._base.shape(name)

    def dtype(self, name: str) -> Any:
        return self._base.dtype(name)


def worker_weightspace(workdir: Path, out: Path, method: str, density: float) -> None:
    from weightspace import TaskVector, merge
    from weightspace.io import open_state_dict, save_state_dict

    base = open_state_dict(workdir / "base")
    vectors = [
        TaskVector.from_models(finetuned=open_state_dict(folder), base=base)
        for folder in _input_dirs(workdir)[1:]
    ]
    if method == "ta":
        merged = merge.task_arithmetic(vectors)
    else:
        merged = merge.ties(vectors, density=density)
    save_state_dict(_Applied(base, merged), out, max_shard_size="5GB", inputs=_input_dirs(workdir))


def weightspace_config(workdir: Path, method: str, density: float) -> str:
    """The ``weightspace merge`` config of the run (output: one-shard folder, like mergekit)."""
    lines = [
        f"base: {workdir / 'base'}",
        "models:",
        *(f"  - {folder}" for folder in _input_dirs(workdir)[1:]),
        f"method: {'task_arithmetic' if method == 'ta' else 'ties'}",
    ]
    if method == "ties":
        lines.append(f"parameters: {{density: {density}}}")
    lines.append("max_shard_size: 5GB")
    return "\n".join(lines) + "\n"


def mergekit_config(workdir: Path, method: str, density: float) -> str:
    lines = [
        f"merge_method: {'task_arithmetic' if method == 'ta' else 'ties'}",
        f"base_model: {workdir / 'base'}",
        "models:",
    ]
    for folder in _input_dirs(workdir)[1:]:
        lines.append(f"  - model: {folder}")
        params = "weight: 1.0" if method == "ta" else f"weight: 1.0, density: {density}"
        lines.append(f"    parameters: {{{params}}}")
    if method == "ties":
        lines.append("parameters: {normalize: true, int8_mask: false, lambda: 1.0}")
    lines.append("dtype: bfloat16")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    wall: float
    rss: int  # bytes


# A tiny launcher, run with `python -I -S`: it starts the command, waits for it and prints its
# wall time and peak RSS. Peak RSS survives `exec` (Linux records the pre-exec resident set
# too), so the measured command must not be started straight from this big process.
_LAUNCHER = """
import os, shutil, sys, time
cmd = sys.argv[1:]
start = time.perf_counter()
pid = os.posix_spawn(shutil.which(cmd[0]) or cmd[0], cmd, dict(os.environ))
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
sys.stderr.write("@@MEASURE %r %d %d\\n" % (wall, usage.ru_maxrss, code))
"""


def measure(cmd: list[str], env: Mapping[str, str], log: Path) -> Run:
    """Run ``cmd``; return its wall time and the peak RSS of its process (``wait4``)."""
    with open(log, "ab") as sink:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, *cmd],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=dict(env),
            check=False,
        )
        sink.write(done.stderr)
    lines = [ln for ln in done.stderr.decode(errors="replace").splitlines() if "@@MEASURE" in ln]
    code = int(lines[-1].split()[3]) if lines else done.returncode
    if code != 0 or not lines:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{tail}")
    _, wall, maxrss, _ = lines[-1].split()
    return Run(float(wall), int(maxrss) * 1024)  # ru_maxrss is in KiB on Linux


# --------------------------------------------------------------------------------- accuracy


def _ulp_bf16(ref: Any) -> Any:
    import torch

    _, exponent = torch.frexp(ref)  # ref = m * 2**e with 0.5 <= |m| < 1
    exponent = torch.where(ref == 0, torch.full_like(exponent, -200), exponent)
    # bf16 keeps 8 significant bits: the spacing in [2**(e-1), 2**e) is 2**(e-8); subnormal
    # spacing is 2**-133.
    return torch.exp2((exponent - 8).clamp(min=-133).to(torch.float64))


def _keep_mask(delta: Any, density: float) -> tuple[Any, Any]:
    """Reference trim: top-k by magnitude, ties at the threshold kept in row-major order.

    Returns the mask and the entries tied at the threshold (where tie-breaking matters).
    """
    import torch

    flat = delta.reshape(-1).abs()
    numel = flat.numel()
    k = round(density * numel)
    if k >= numel:
        return torch.ones_like(flat, dtype=torch.bool), torch.zeros_like(flat, dtype=torch.bool)
    threshold = torch.kthvalue(flat.float(), numel - k + 1).values.double()
    keep = flat > threshold
    tied = flat == threshold
    missing = k - int(keep.sum())
    keep |= tied & (torch.cumsum(tied, 0) <= missing)
    if int(tied.sum()) == missing:  # every tied entry is kept: no choice was made
        tied = torch.zeros_like(tied)
    return keep, tied


#: Entries per block of the accuracy comparison.
_BLOCK = 1 << 22


def compare(workdir: Path, outputs: Mapping[str, Path], method: str, density: float) -> dict:
    """Max error (bf16 rounding steps) of each output against a float64 reference."""
    import torch
    from safetensors import safe_open

    def opener(folder: Path) -> dict[str, Any]:
        index = folder / "model.safetensors.index.json"
        files = (
            sorted(set(json.loads(index.read_text())["weight_map"].values()))
            if index.exists()
            else [p.name for p in folder.glob("*.safetensors")]
        )
        handles = {}
        for file in files:
            h = safe_open(str(folder / file), framework="pt")
            for key in h.keys():  # noqa: SIM118 - safe_open handles are not mappings
                handles[key] = h
        return handles

    base = opener(workdir / "base")
    fts = [opener(folder) for folder in _input_dirs(workdir)[1:]]
    outs = {label: opener(folder) for label, folder in outputs.items()}
    stats: dict[str, dict[str, float]] = {
        label: {"max": 0.0, "over_half": 0, "over_one": 0, "max_clean": 0.0} for label in outs
    }
    numel = 0
    excluded = 0
    for name in sorted(base):
        # The trim masks need whole tensors; everything else runs on blocks of entries, so
        # that memory stays at a few float64 blocks (a 1.4B model's embedding would otherwise
        # take a dozen 0.5 GB float64 copies).
        b_flat = base[name].get_tensor(name).reshape(-1)
        f_flat = [ft[name].get_tensor(name).reshape(-1) for ft in fts]
        o_flat = {label: h[name].get_tensor(name).reshape(-1) for label, h in outs.items()}
        keeps: list[Any] = []
        tied_any = torch.zeros(b_flat.shape, dtype=torch.bool)
        if method != "ta":
            for f in f_flat:
                keep, tied = _keep_mask(f.double() - b_flat.double(), density)
                keeps.append(keep)
                tied_any |= tied
        total = b_flat.numel()
        numel += total
        for start in range(0, total, _BLOCK):
            stop = min(total, start + _BLOCK)
            b = b_flat[start:stop].double()
            deltas = [f[start:stop].double() - b for f in f_flat]
            semantic = tied_any[start:stop].clone()
            if method == "ta":
                ref = b + sum(deltas)
            else:
                kept = [
                    torch.where(k[start:stop], d, 0.0) for k, d in zip(keeps, deltas, strict=True)
                ]
                stacked = torch.stack(kept)
                elected = torch.sign(stacked.sum(0))
                semantic |= (elected == 0) & (stacked != 0).any(0)
                agree = (torch.sign(stacked) == elected) & (stacked != 0)
                count = agree.sum(0).clamp(min=1)
                ref = b + torch.where(agree, stacked, 0.0).sum(0) / count
            ulp = _ulp_bf16(ref)
            excluded += int(semantic.sum())
            for label, flat in o_flat.items():
                out = flat[start:stop].double()
                err = (out - ref).abs() / ulp
                st = stats[label]
                st["max"] = max(st["max"], float(err.max()))
                st["over_half"] += int((err > 0.5).sum())
                st["over_one"] += int((err > 1.0).sum())
                clean = err[~semantic]
                if clean.numel():
                    st["max_clean"] = max(st["max_clean"], float(clean.max()))
    return {"stats": stats, "numel": numel, "excluded": excluded}


# --------------------------------------------------------------------------------- main


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux/macOS
        return "unknown"


def _fmt_gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def _summary(runs: list[Run]) -> tuple[float, float, float, float]:
    walls = [r.wall for r in runs]
    return statistics.median(walls), min(walls), max(walls), max(r.rss for r in runs)


def _versions(mergekit_python: Path | None) -> str:
    import torch

    from weightspace._version import __version__

    parts = [f"weightspace {__version__}", f"torch {torch.__version__}"]
    if mergekit_python is not None:
        done = subprocess.run(
            [str(mergekit_python), "-c",
             "import importlib.metadata as m; print(m.version('mergekit'), m.version('torch'))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            mk, mk_torch = done.stdout.split()
            parts.append(f"mergekit {mk} (its torch {mk_torch})")
    parts.append(f"Python {sys.version.split()[0]}")
    return ", ".join(parts)


def check_room(workdir: Path, arch: Arch) -> str | None:
    """Why the machine cannot hold this size (disk for inputs and outputs, memory), or None."""
    model = arch.params * 2
    # The inputs, the four merge outputs kept for the accuracy comparison, and the floor's
    # output (removed after each run) or a margin.
    need_disk = (N_FINETUNES + 1) * model + 5 * model + (1 << 30)
    have = workdir / "base" / "model.safetensors.index.json"
    if have.exists():
        need_disk -= (N_FINETUNES + 1) * model
    free = shutil.disk_usage(workdir).free
    if free < need_disk:
        return f"{free / 1e9:.1f} GB free on disk, {need_disk / 1e9:.1f} GB needed"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        avail = int(meminfo.split("MemAvailable:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    need_mem = int(0.6 * model) + (2 << 30)  # mergekit's peak at 1.4B: about half a model
    if avail < need_mem:
        return f"{avail / GIB:.1f} GiB of memory available, {need_mem / GIB:.1f} GiB needed"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--params", default="0.5B", help="model size(s), comma-separated, e.g. 0.5B,1.4B"
    )
    parser.add_argument("--size", dest="params", help="alias of --params")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", default="300MB", help="input shard size (bytes or MB)")
    parser.add_argument("--workdir", type=Path, help="where to write the models (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument(
        "--mergekit-python",
        type=Path,
        default=ROOT / ".bench-venv" / "bin" / "python",
        help="python of the environment where mergekit is installed",
    )
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument("--methods", default="ta,ties", help="comma-separated: ta, ties")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument(
        "--weightspace-api",
        action="store_true",
        help="also time the Python-API route (lazy TaskVector merge + save_state_dict)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "results" / "merge_vs_mergekit.md",
        help="markdown file for the tables (default: benchmarks/results/merge_vs_mergekit.md)",
    )
    parser.add_argument(
        "--note", default="", help="a line written under the title of the results file"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker in ("io", "io-read", "io-write"):
            worker_io_floor(
                args.workdir, args.out, args.worker != "io-write", args.worker != "io-read"
            )
        else:
            worker_weightspace(args.workdir, args.out, args.worker, args.density)
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    mergekit_yaml = args.mergekit_python.parent / "mergekit-yaml"
    use_mergekit = not args.skip_mergekit
    if use_mergekit and not (args.mergekit_python.exists() and mergekit_yaml.exists()):
        print(
            f"mergekit not found: {args.mergekit_python} (with mergekit-yaml next to it) does "
            "not exist.\nCreate the benchmark-only environment with\n"
            "    python3 -m venv .bench-venv && .bench-venv/bin/pip install mergekit\n"
            "or pass --mergekit-python PATH, or --skip-mergekit.",
            file=sys.stderr,
        )
        return 2

    import torch

    sizes = [t.strip() for t in args.params.split(",") if t.strip()]
    shard_bytes = parse_params(args.shard_size.upper().replace("MB", "M").replace("GB", "G"))
    owned = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="ws-bench-")) if owned else args.workdir
    root.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    sections: list[str] = []
    command = "python benchmarks/bench_merge_vs_mergekit.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    versions = _versions(args.mergekit_python if use_mergekit else None)

    def write_results(done: bool) -> None:
        """The tables so far (after each size, so that a stopped run keeps what it measured)."""
        text = [
            "# weightspace merge against mergekit",
            "",
            *([args.note, ""] if args.note else []),
            *sections,
            *([] if done else ["(the run was still going: later sizes are missing)", ""]),
            f"- load average (1, 5, 15 min) before: {load_before}; after: {_load()} "
            f"(on {os.cpu_count()} cores)",
            f"- versions: {versions}",
            f"- command: `{command.strip()}`",
            "",
        ]
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("\n".join(text), encoding="utf-8")

    try:
        for size in sizes:
            arch = choose_arch(parse_params(size))
            workdir = root if len(sizes) == 1 else root / size
            workdir.mkdir(parents=True, exist_ok=True)
            why = check_room(workdir, arch)
            if why is not None:
                line = f"size {size}: this machine cannot hold it ({why}); skipped"
                print(line)
                sections.append(f"## {size}\n\n{line}\n")
                continue
            sections.append(
                _run(
                    args,
                    arch,
                    size,
                    workdir,
                    shard_bytes,
                    methods,
                    use_mergekit,
                    mergekit_yaml,
                    torch,
                )
            )
            write_results(done=False)
            if not args.keep:  # the next size needs the disk
                for child in ["base", "out", "logs"] + [f"ft{i}" for i in range(N_FINETUNES)]:
                    shutil.rmtree(workdir / child, ignore_errors=True)
    finally:
        if args.keep:
            print(f"data kept in {root}")
        elif owned:
            shutil.rmtree(root, ignore_errors=True)
    write_results(done=True)
    print(f"tables written to {args.results}")
    return 0


def _run(
    args: argparse.Namespace,
    arch: Arch,
    size: str,
    workdir: Path,
    shard_bytes: int,
    methods: list[str],
    use_mergekit: bool,
    mergekit_yaml: Path,
    torch: Any,
) -> str:
    """Generate, time and compare one size; return its markdown section."""
    title = (
        f"Llama-style, {arch.params / 1e9:.3f}B parameters (hidden {arch.hidden}, "
        f"{arch.layers} layers, vocab {arch.vocab}), bf16, base + {N_FINETUNES} fine-tunes; "
        f"seed {args.seed}"
    )
    print(f"model: {title}")
    load_start = _load()
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}, load average {load_start} (1, 5, 15 min)"
    )
    if not (workdir / "base" / "model.safetensors.index.json").exists():
        for child in ["base"] + [f"ft{i}" for i in range(N_FINETUNES)]:
            shutil.rmtree(workdir / child, ignore_errors=True)
        start = time.perf_counter()
        generate(workdir, arch, args.seed, shard_bytes)
        print(f"generated inputs in {workdir} in {time.perf_counter() - start:.1f} s")
    in_bytes = sum(f.stat().st_size for d in _input_dirs(workdir) for f in d.glob("*.safetensors"))
    out_root = workdir / "out"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    script = str(Path(__file__).resolve())

    commands: dict[str, list[str]] = {}
    commands["torch"] = [sys.executable, "-c", "import torch"]
    commands["start-ws"] = [sys.executable, "-c", "import weightspace.merge"]
    if use_mergekit:
        commands["start-mk"] = [str(args.mergekit_python), "-c", "import mergekit.merge"]
    for io in ("io", "io-read", "io-write"):
        commands[io] = [sys.executable, script, "--worker", io, "--workdir", str(workdir)]
    ws_cli = Path(sys.executable).parent / "weightspace"
    for method in methods:
        ws_config = workdir / f"weightspace-{method}.yml"
        ws_config.write_text(weightspace_config(workdir, method, args.density))
        commands[f"ws-{method}"] = [str(ws_cli), "merge", str(ws_config), "-o", "OUT"]
        commands[f"ws-{method}"] += ["--no-progress"]
        if args.weightspace_api:
            commands[f"api-{method}"] = [
                sys.executable,
                script,
                "--worker",
                method,
                "--workdir",
                str(workdir),
                "--density",
                str(args.density),
            ]
        if use_mergekit:
            config = workdir / f"mergekit-{method}.yml"
            config.write_text(mergekit_config(workdir, method, args.density))
            commands[f"mk-{method}"] = [
                str(mergekit_yaml),
                str(config),
                "OUT",
                "--lazy-unpickle",
                "--no-cuda",
                "--no-copy-tokenizer",
                "--no-write-model-card",
                "--quiet",
            ]

    runs: dict[str, list[Run]] = {key: [] for key in commands}
    for repeat in range(args.repeats):
        for key, cmd in commands.items():
            out = out_root / key
            shutil.rmtree(out, ignore_errors=True)
            out_root.mkdir(exist_ok=True)
            full = [str(out) if c == "OUT" else c for c in cmd]
            if key.startswith(("io", "api-")):
                full += ["--out", str(out)]
            os.sync()  # the previous run's writeback is not this run's cost
            run = measure(full, env, logs / f"{key}.log")
            runs[key].append(run)
            if key.startswith("io"):  # not compared: free the disk for the next outputs
                shutil.rmtree(out, ignore_errors=True)
            print(
                f"  repeat {repeat + 1}/{args.repeats} {key:8s} {run.wall:7.2f} s "
                f"{_fmt_gib(run.rss)} GiB",
                flush=True,
            )

    load_end = _load()
    print(f"load average after the runs: {load_end} (1, 5, 15 min)")
    io_med = _summary(runs["io"])[0]
    print()
    intro = (
        f"inputs {in_bytes / 1e9:.2f} GB read, output {in_bytes / (N_FINETUNES + 1) / 1e9:.2f} "
        f"GB written; wall = median of {args.repeats} (min-max), peak RSS = max over repeats; "
        f"`sync` before every run; load average {load_start} before, {load_end} after"
    )
    print(intro)
    header = (
        f"{'run':<26} {'wall s':>8} {'min-max':>13} {'RSS GiB':>8} {'x I/O':>7} "
        f"{'ws/mk wall':>11} {'ws/mk RSS':>10}"
    )
    print(header)
    print("-" * len(header))
    labels = {
        "io": "I/O floor (read + write)",
        "io-read": "I/O floor: read only",
        "io-write": "I/O floor: write only",
        "torch": "import torch only",
        "start-ws": "start-up weightspace",
        "start-mk": "start-up mergekit",
        "ta": "task arithmetic",
        "ties": f"TIES d={args.density}",
    }
    md = [
        f"## {size}: {title}",
        "",
        intro + ".",
        "",
        "| run | wall s (median) | min-max s | peak RSS GiB | x I/O floor | "
        "ws/mk wall | ws/mk RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = ["torch", "start-ws", "start-mk", "io", "io-read", "io-write"] + [
        f"{lib}-{m}" for m in methods for lib in ("ws", "api", "mk")
    ]
    for key in [k for k in rows if k in runs]:
        med, lo, hi, rss = _summary(runs[key])
        if key in labels:
            name = labels[key]
        else:
            lib, method = key.split("-", 1)
            tool = {"ws": "weightspace", "api": "ws Python API", "mk": "mergekit"}[lib]
            name = f"{tool} {labels[method]}"
        ratio = ""
        md_ratio = " | "
        method_key = key.split("-", 1)[-1]
        if key.startswith(("ws-", "api-")) and "mk-" + method_key in runs:
            mk = _summary(runs["mk-" + method_key])
            ratio = f"{med / mk[0]:>11.3f} {rss / mk[3]:>10.3f}"
            md_ratio = f"{med / mk[0]:.3f} | {rss / mk[3]:.3f}"
        print(
            f"{name:<26} {med:>8.2f} {f'{lo:.2f}-{hi:.2f}':>13} {_fmt_gib(rss):>8} "
            f"{med / io_med:>7.2f} {ratio}"
        )
        md.append(
            f"| {name} | {med:.2f} | {lo:.2f}-{hi:.2f} | {_fmt_gib(rss)} | "
            f"{med / io_med:.2f} | {md_ratio} |"
        )
    md.append("")
    start_ws = _summary(runs["start-ws"])[0]
    for method in methods:
        ws = _summary(runs[f"ws-{method}"])
        floor = io_med + start_ws
        line = (
            f"{labels[method]}: weightspace {ws[0]:.2f} s = {ws[0] / floor:.2f}x of the I/O "
            f"floor plus its start-up ({io_med:.2f} + {start_ws:.2f} s)"
        )
        if f"mk-{method}" in runs:
            mk = _summary(runs[f"mk-{method}"])
            torch_rss = _summary(runs["torch"])[3]
            above_ws, above_mk = ws[3] - torch_rss, mk[3] - torch_rss
            line += (
                f"; {mk[0] / ws[0]:.2f}x faster than mergekit ({mk[0]:.2f} s), peak RSS "
                f"{ws[3] / mk[3]:.2f} of mergekit's; above `import torch` "
                f"({_fmt_gib(torch_rss)} GiB): {_fmt_gib(above_ws)} vs {_fmt_gib(above_mk)} GiB"
                f"; at the I/O floor plus start-up, weightspace would be {mk[0] / floor:.2f}x "
                "faster than mergekit"
            )
        print(line)
        md.append(f"- {line}")
    md.append("")

    if not args.no_accuracy:
        print()
        head = "accuracy against a float64 reference, in bf16 rounding steps |out - ref| / ulp(ref)"
        print(head)
        md += [f"Accuracy: {head}.", ""]
        for method in methods:
            outputs = {"weightspace": out_root / f"ws-{method}"}
            if f"mk-{method}" in runs:
                outputs["mergekit"] = out_root / f"mk-{method}"
            start = time.perf_counter()
            result = compare(workdir, outputs, method, args.density)
            numel = result["numel"]
            for label, s in result["stats"].items():
                line = (
                    f"  {labels[method]:<16} {label:<12} max {s['max']:.3g}  "
                    f">0.5: {s['over_half'] / numel:.2e}  >1: {s['over_one'] / numel:.2e}"
                )
                if method == "ties":
                    line += f"  max outside semantic differences {s['max_clean']:.3g}"
                print(line)
                md.append(f"- {line.strip()}")
            if method == "ties":
                note = (
                    f"({result['excluded']} of {numel} entries ({result['excluded'] / numel:.2%})"
                    " are tied at a trim threshold or have an election sum of exactly 0)"
                )
                print("  " + note)
                md.append(f"- {note}")
            print(f"  (compared in {time.perf_counter() - start:.0f} s)")
        md.append("")
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
