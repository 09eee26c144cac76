"""Load every packaged model, run it on real inputs and compare with its known behaviour."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence

import torch

from weightspace._errors import MissingSourceError, WeightspaceError, WeightspaceValueError
from weightspace.models._common import count_parameters

__all__ = ["CHECKS", "CheckResult", "check", "format_table"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one pretrained model on real inputs.

    Times exclude reading the data sets (MNIST, the sample photos), which are cached after the
    first use.

    Attributes:
        name: The loader's name, such as ``"mnist_cnn"``.
        parameters: Number of scalar parameters (0 when the model could not be loaded).
        load_seconds: Wall time to load the model.
        run_seconds: Wall time to run it on the check's inputs.
        result: What was measured, in a few words (or the pip command that installs a missing
            package, or the error).
        expected: The expectation the result was held to.
        passed: Whether the result met the expectation.
        missing: ``True`` when a package the model needs is not installed; ``result`` then
            holds the pip command that installs it.
    """

    name: str
    parameters: int
    load_seconds: float
    run_seconds: float
    result: str
    expected: str
    passed: bool
    missing: bool = False


#: First names of the ImageNet classes that count as "church-like" for scikit-learn's
#: china.jpg (a pagoda-roofed temple on a lake).
CHURCH_LIKE = frozenset(
    {"bell cote", "church", "palace", "monastery", "mosque", "castle", "dome", "stupa"}
)

#: (sentence, paraphrase, unrelated sentence) triples for the MiniLM check.
SENTENCE_TRIPLES = (
    ("A cat sits on the mat", "A kitten is resting on a rug", "The stock market fell sharply"),
    (
        "How do I bake bread at home?",
        "What is a good recipe for homemade bread?",
        "The train to Berlin leaves at noon",
    ),
)

_MNIST_MIN_ACCURACY = 0.989
_PARAPHRASE_MIN = 0.5
_UNRELATED_MAX = 0.3


def _check_mnist() -> CheckResult:
    from weightspace.data import mnist
    from weightspace.models._mnist import mnist_cnn

    start = time.perf_counter()
    model = mnist_cnn()
    loaded = time.perf_counter()
    data = mnist(split="test")
    run_start = time.perf_counter()
    # channels-last convolutions are about three times faster on CPUs (same predictions).
    model = model.to(memory_format=torch.channels_last)
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data.targets), 1000):
            x = model.preprocess(data.images[i : i + 1000])
            logits = model(x.contiguous(memory_format=torch.channels_last))
            correct += int((logits.argmax(-1) == data.targets[i : i + 1000]).sum())
    accuracy = correct / len(data.targets)
    return CheckResult(
        name="mnist_cnn",
        parameters=count_parameters(model),
        load_seconds=loaded - start,
        run_seconds=time.perf_counter() - run_start,
        result=f"test accuracy {100 * accuracy:.2f} % ({len(data.targets)} images)",
        expected=f"accuracy >= {100 * _MNIST_MIN_ACCURACY:.1f} %",
        passed=accuracy >= _MNIST_MIN_ACCURACY,
    )


def _check_efficientnet() -> CheckResult:
    from weightspace.data import sample_images
    from weightspace.models._efficientnet import (
        efficientnet_lite0,
        efficientnet_lite0_preprocess,
        imagenet_classes,
    )

    start = time.perf_counter()
    model = efficientnet_lite0()
    names = [n.split(",")[0] for n in imagenet_classes()]
    loaded = time.perf_counter()
    photos = sample_images()
    run_start = time.perf_counter()
    keys = sorted(photos)
    with torch.inference_mode():
        batch = torch.cat([efficientnet_lite0_preprocess(photos[k]) for k in keys])
        top5 = model(batch).topk(5, dim=-1).indices
    tops = {k: [names[int(j)] for j in top5[i]] for i, k in enumerate(keys)}
    china = next((v for k, v in tops.items() if k.startswith("china")), [])
    return CheckResult(
        name="efficientnet_lite0",
        parameters=count_parameters(model),
        load_seconds=loaded - start,
        run_seconds=time.perf_counter() - run_start,
        # china's whole top 5 (what is judged), then the top class of the other photos.
        result="; ".join(
            f"{k}: {', '.join(v if k.startswith('china') else v[:1])}" for k, v in tops.items()
        ),
        expected="church-like class in china's top 5",
        passed=bool(CHURCH_LIKE.intersection(china)),
    )


def _check_minilm() -> CheckResult:
    from weightspace.models._minilm import minilm

    start = time.perf_counter()
    encoder = minilm()
    loaded = time.perf_counter()
    texts = [t for triple in SENTENCE_TRIPLES for t in triple]
    emb = encoder.encode(texts)
    parts, passed = [], True
    for i in range(len(SENTENCE_TRIPLES)):
        anchor, para, other = emb[3 * i], emb[3 * i + 1], emb[3 * i + 2]
        sim_para, sim_other = float(anchor @ para), float(anchor @ other)
        passed &= sim_para >= _PARAPHRASE_MIN and sim_other <= _UNRELATED_MAX
        parts.append(f"{sim_para:.3f} vs {sim_other:.3f}")
    return CheckResult(
        name="minilm",
        parameters=count_parameters(encoder),
        load_seconds=loaded - start,
        run_seconds=time.perf_counter() - loaded,
        result="cos paraphrase vs unrelated: " + ", ".join(parts),
        expected=f"paraphrase >= {_PARAPHRASE_MIN}, unrelated <= {_UNRELATED_MAX}",
        passed=passed,
    )


def _check_smollm2() -> CheckResult:
    from weightspace.models._smollm2 import smollm2

    start = time.perf_counter()
    chat = smollm2()
    loaded = time.perf_counter()
    answer = chat.generate("What is the capital of France?", max_new_tokens=16)
    short = answer if len(answer) <= 60 else answer[:57] + "..."
    return CheckResult(
        name="smollm2",
        parameters=count_parameters(chat),
        load_seconds=loaded - start,
        run_seconds=time.perf_counter() - loaded,
        result=f"capital of France? {short!r}",
        expected='answer contains "Paris"',
        passed="Paris" in answer,
    )


#: The checks that :func:`check` runs, by model name, in order.
CHECKS: dict[str, Callable[[], CheckResult]] = {
    "mnist_cnn": _check_mnist,
    "efficientnet_lite0": _check_efficientnet,
    "minilm": _check_minilm,
    "smollm2": _check_smollm2,
}

_PIP = re.compile(r"`(pip install [^`]+)`")


def _failed_row(name: str, exc: WeightspaceError) -> CheckResult:
    message = str(exc)
    missing = isinstance(exc, MissingSourceError)
    match = _PIP.search(message) if missing else None
    if match is not None:
        result = f"not installed: {match.group(1)}"
    else:
        result = f"{type(exc).__name__}: {message}"
    return CheckResult(
        name=name,
        parameters=0,
        load_seconds=0.0,
        run_seconds=0.0,
        result=result,
        expected="the model loads and runs",
        passed=False,
        missing=missing,
    )


def check(*, models: Sequence[str] | None = None, progress: bool = True) -> list[CheckResult]:
    """Load the pretrained models shipped in packages and run each on real inputs.

    ========================  ====================================================================
    model                     check
    ========================  ====================================================================
    ``mnist_cnn``             accuracy on the 10,000 MNIST test images (expect >= 98.9 %)
    ``efficientnet_lite0``    top-5 ImageNet classes of scikit-learn's two sample photos (expect a
                              church-like class for china.jpg)
    ``minilm``                cosine of two sentence pairs against an unrelated sentence (expect
                              paraphrase >= 0.5, unrelated <= 0.3)
    ``smollm2``               "What is the capital of France?" (expect "Paris" in the answer)
    ========================  ====================================================================

    A model whose package (or data source) is missing gives a failed row whose ``result``
    names the pip command that installs it, rather than an exception. The whole check takes
    under a minute on two CPU cores (SmolLM2's GGUF parsing is most of it).

    Args:
        models: Names of the models to check (``"mnist_cnn"``, ``"efficientnet_lite0"``,
            ``"minilm"``, ``"smollm2"``); ``None`` checks them all.
        progress: Show a progress bar over the models.

    Returns:
        One :class:`CheckResult` per model, in the order of ``models``.

    Raises:
        WeightspaceValueError: if ``models`` names an unknown model.

    Example:
        >>> print(format_table(check(models=["mnist_cnn"], progress=False)))  # doctest: +SKIP
        model      params  load s  run s  status  result                                  ...
        mnist_cnn  421.6k    0.02   1.31  ok      test accuracy 99.05 % (10000 images)    ...
    """
    if isinstance(models, str):
        models = [models]
    names = list(CHECKS) if models is None else list(models)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise WeightspaceValueError(
            f"`models` names unknown models {unknown}; choose from {list(CHECKS)}"
        )
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(names, desc="checking models", unit="model", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            row = CHECKS[name]()
        except WeightspaceError as exc:
            row = _failed_row(name, exc)
        logger.info(
            "%s: %s (%s)", name, row.result, "passed" if row.passed else "FAILED " + row.expected
        )
        results.append(row)
    return results


def _format_count(n: int) -> str:
    if n <= 0:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.4g}M"
    if n >= 1_000:
        return f"{n / 1e3:.4g}k"
    return str(n)


def format_table(results: Sequence[CheckResult]) -> str:
    """Format check results as a plain fixed-width text table.

    Args:
        results: Rows from :func:`check`.

    Returns:
        The table: a header, a rule and one line per result, without a trailing newline.
        The ``status`` column reads ``ok``, ``FAIL`` or ``missing``.

    Example:
        >>> row = CheckResult("mnist_cnn", 421642, 0.02, 1.3, "acc 99.05 %", "acc >= 98.9 %", True)
        >>> print(format_table([row]))
        model      params  load s  run s  status  result       expected
        ---------  ------  ------  -----  ------  -----------  -------------
        mnist_cnn  421.6k    0.02   1.30  ok      acc 99.05 %  acc >= 98.9 %
    """
    header = ("model", "params", "load s", "run s", "status", "result", "expected")
    right = {1, 2, 3}
    rows = [
        (
            r.name,
            _format_count(r.parameters),
            f"{r.load_seconds:.2f}",
            f"{r.run_seconds:.2f}",
            "missing" if r.missing else ("ok" if r.passed else "FAIL"),
            r.result,
            r.expected,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
