"""Tests of weightspace.arithmetic: selection rules, baselines, identities and errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightspace import TaskVector, WeightspaceValueError, arithmetic, merge, train

GOALS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.0, 0.0, 1.0]}


def task(name: str, goal: list[float], offset: float = 0.0) -> arithmetic.Task:
    target = torch.tensor(goal)

    def score(sd: dict[str, torch.Tensor]) -> float:
        return 3.0 - float(((sd["w"] - target) ** 2).sum()) + offset

    return arithmetic.Task(name, validate=score, test=score)


def vec(x: list[float]) -> TaskVector:
    return TaskVector({"w": torch.tensor(x)})


BASE = {"w": torch.zeros(3), "other": torch.ones(2)}


def test_forget_picks_most_forgetting_scale_that_keeps_controls() -> None:
    # target likes w[0] large, control likes w[1] large; tau moves both
    first = arithmetic.Task("first", lambda sd: float(sd["w"][0]), lambda sd: float(sd["w"][0]))
    second = arithmetic.Task(
        "second", lambda sd: 1.0 + float(sd["w"][1]), lambda sd: 1.0 + float(sd["w"][1])
    )
    tau = vec([1.0, 0.2, 0.0])
    r = arithmetic.forget(BASE, tau, target=first, control=second, grid=(0.0, 0.2, 0.4, 0.8))
    # control must keep >= 0.95 * 1.0: 1 - 0.2 c >= 0.95 -> c <= 0.25
    assert r.scale == 0.2
    assert r.target.pretrained == 0.0 and r.target.finetuned == 1.0
    assert r.target.edited == pytest.approx(-0.2)
    assert r.control["second"].edited == pytest.approx(0.96)
    assert [c for c, _, _ in r.curve] == [0.0, 0.2, 0.4, 0.8]
    # the random vector has the same norm; its chosen scale obeys the same rule
    assert r.random is not None and r.random_scale is not None
    assert r.random["second"].edited >= 0.95 - 1e-6
    d = r.to_dict()
    assert d["task"] == "first" and d["control"]["second"]["edited"] == pytest.approx(0.96)


def test_forget_falls_back_to_pretrained_when_nothing_qualifies() -> None:
    first = arithmetic.Task("first", lambda sd: float(sd["w"][0]), lambda sd: float(sd["w"][0]))
    ctrl = arithmetic.Task("ctrl", lambda sd: 1 + float(sd["w"][1]), lambda sd: 1.0)
    r = arithmetic.forget(
        BASE,
        vec([1.0, 5.0, 0.0]),
        target=first,
        control=[ctrl],
        grid=(0.5, 1.0),
        random_baseline=False,
    )
    assert r.scale == 0.0 and r.target.edited == r.target.pretrained and r.random is None


def test_add_chooses_scale_on_validation_and_normalises() -> None:
    tasks = {n: task(n, g) for n, g in GOALS.items()}
    vectors = {n: vec(g) for n, g in GOALS.items()}
    r = arithmetic.add(BASE, vectors, tasks)
    assert list(r.rows)[:2] == ["pretrained", "finetuned"]
    assert set(r.rows) >= {"average", "task_arithmetic", "ties", "tall_masks", "consensus"}
    ft = r.rows["finetuned"]
    assert all(v == 3.0 for v in ft.scores.values()) and ft.normalized_mean == 1.0
    # the sum (c, c, c) is closest to each goal at c = 1/3 -> nearest grid value 0.35
    ta = r.rows["task_arithmetic"]
    assert ta.scale == pytest.approx(0.35)
    assert ta.scores["a"] == pytest.approx(3 - (0.65**2 + 2 * 0.35**2))
    assert ta.normalized["a"] == pytest.approx(ta.scores["a"] / 3.0)
    # TALL masks: disjoint vectors are recovered exactly, so each task gets its own vector
    tall = r.rows["tall_masks"]
    assert tall.scale == 1.0 and tall.normalized_mean == pytest.approx(1.0)
    assert r.rows["average"].scale == 1.0
    assert len(ta.curve) == len(arithmetic.DEFAULT_GRID)


def test_add_custom_method_and_grid() -> None:
    tasks = {n: task(n, GOALS[n]) for n in "ab"}
    vectors = {n: vec(GOALS[n]) for n in "ab"}
    r = arithmetic.add(
        BASE,
        vectors,
        tasks,
        methods={"sum": arithmetic.Method(merge.task_arithmetic)},
        grid=(0.0, 0.5, 1.0),
    )
    assert list(r.rows) == ["pretrained", "finetuned", "sum"]
    assert r.rows["sum"].scale == 0.5


@given(
    st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    st.lists(st.floats(-2, 2), min_size=3, max_size=3),
)
def test_analogy_with_equal_a_and_b_is_c_alone(a: list[float], c: list[float]) -> None:
    # identity: tau_C + (tau_B - tau_A) == tau_C when A == B, so both rows agree exactly
    t = task("d", [0.5, -0.5, 1.0])
    r = arithmetic.analogy(BASE, a=vec(a), b=vec(a), c=vec(c), task=t, grid=(0.0, 0.5, 1.0))
    assert r.scales["analogy"] == r.scales["c_only"]
    assert r.scores["analogy"] == pytest.approx(r.scores["c_only"], abs=1e-5)


def test_analogy_recovers_missing_task() -> None:
    # A = (1,0,0), B = (1,1,0), C = (0,0,1) -> D = (0,1,1)
    d = task("d", [0.0, 1.0, 1.0])
    r = arithmetic.analogy(
        BASE,
        a=vec([1.0, 0, 0]),
        b=vec([1.0, 1.0, 0]),
        c=vec([0, 0, 1.0]),
        task=d,
        reference=vec([0, 1.0, 1.0]),
    )
    assert r.scales["analogy"] == 1.0
    assert r.scores["analogy"] == pytest.approx(3.0) == r.scores["reference"]
    assert r.scores["c_only"] < r.scores["analogy"]
    assert list(r.scores) == ["pretrained", "c_only", "analogy", "reference"]


@given(st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=20))
def test_summarize_matches_definition(values: list[float]) -> None:
    s = arithmetic.summarize(values)
    mean = sum(values) / len(values)
    assert s.mean == pytest.approx(mean, abs=1e-9)
    if len(values) > 1:
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        assert s.std == pytest.approx(math.sqrt(var), rel=1e-6, abs=1e-9)
    else:
        assert s.std == 0.0
    assert s.n == len(values)


def test_tables_of_all_kinds() -> None:
    tasks = {n: task(n, g) for n, g in GOALS.items()}
    vectors = {n: vec(g) for n, g in GOALS.items()}
    runs = [arithmetic.add(BASE, vectors, tasks, grid=(0.0, 0.3, 0.6)) for _ in range(2)]
    text = arithmetic.table(runs)
    assert text.splitlines()[0] == "| method | scale | a | b | c | mean | normalised mean |"
    assert "| finetuned |  | 3.000 ± 0.000 |" in text
    first = arithmetic.Task("a", lambda sd: float(sd["w"][0]), lambda sd: float(sd["w"][0]))
    ctrl = arithmetic.Task("b", lambda sd: 1.0, lambda sd: 1.0)
    f = [
        arithmetic.forget(BASE, vec([1.0, 0, 0]), target=first, control=ctrl, seed=s)
        for s in range(2)
    ]
    text = arithmetic.table(f)
    assert "| negated task vector | 1.00 ± 0.00 | -1.000 ± 0.000 | 1.000 ± 0.000 |" in text
    assert "negated random vector" in text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: arithmetic.summarize([]), "non-empty"),
        (lambda: arithmetic.summarize([1.0, float("nan")]), r"values\[1\]"),
        (lambda: arithmetic.table([]), "non-empty"),
        (lambda: arithmetic.Task("", lambda sd: 0.0, lambda sd: 0.0), "non-empty string"),
        (lambda: arithmetic.Task("x", 3, lambda sd: 0.0), "`validate`"),  # type: ignore[arg-type]
        (lambda: arithmetic.Method(3), "`fn`"),  # type: ignore[arg-type]
        (lambda: arithmetic.Method(merge.average, grid=(-1.0,)), r"grid\[0\]"),
        (
            lambda: arithmetic.add(BASE, {"a": vec(GOALS["a"])}, {"a": task("a", GOALS["a"])}),
            "at least two",
        ),
        (
            lambda: arithmetic.add(
                BASE,
                {"a": vec(GOALS["a"]), "b": vec(GOALS["b"])},
                {"a": task("a", GOALS["a"]), "c": task("c", GOALS["c"])},
            ),
            "same names",
        ),
        (
            lambda: arithmetic.forget(
                BASE,
                {"w": torch.ones(3)},
                target=task("a", GOALS["a"]),  # type: ignore[arg-type]
                control=task("b", GOALS["b"]),
            ),
            "TaskVector.from_models",
        ),
        (
            lambda: arithmetic.forget(
                BASE,
                vec(GOALS["a"]),
                target=task("a", GOALS["a"]),
                control=task("b", GOALS["b"]),
                keep=2.0,
            ),
            "`keep`",
        ),
        (
            lambda: arithmetic.forget(
                BASE,
                vec(GOALS["a"]),
                target=task("a", GOALS["a"]),
                control=task("a", GOALS["b"]),
            ),
            "distinct",
        ),
        (
            lambda: arithmetic.analogy(
                BASE,
                a=vec(GOALS["a"]),
                b=vec(GOALS["b"]),
                c=vec(GOALS["c"]),
                task=arithmetic.Task("d", lambda sd: "high", lambda sd: 0.0),  # type: ignore[arg-type,return-value]
            ),
            "must be a number",
        ),
    ],
)
def test_errors_name_the_argument(call: object, message: str) -> None:
    with pytest.raises(WeightspaceValueError, match=message):
        call()  # type: ignore[operator]


def test_method_returning_wrong_type_is_reported() -> None:
    tasks = {n: task(n, GOALS[n]) for n in "ab"}
    vectors = {n: vec(GOALS[n]) for n in "ab"}
    bad = arithmetic.Method(lambda vs: [vs[0]])  # one vector for two tasks
    with pytest.raises(WeightspaceValueError, match="sequence of 2 TaskVectors"):
        arithmetic.add(BASE, vectors, tasks, methods={"bad": bad})


def test_base_is_not_mutated_and_other_keys_kept() -> None:
    before = {k: v.clone() for k, v in BASE.items()}
    seen: list[torch.Tensor] = []

    def score(sd: dict[str, torch.Tensor]) -> float:
        seen.append(sd["other"])
        return 1.0

    t = arithmetic.Task("x", score, score)
    arithmetic.forget(BASE, vec([1.0, 0, 0]), target=t, control=task("y", GOALS["b"]))
    assert all(torch.equal(BASE[k], before[k]) for k in BASE)
    assert all(torch.equal(s, torch.ones(2)) for s in seen)


def test_results_survive_a_json_round_trip() -> None:
    import json

    tasks = {n: task(n, g) for n, g in GOALS.items()}
    vectors = {n: vec(g) for n, g in GOALS.items()}
    added = arithmetic.add(BASE, vectors, tasks, grid=(0.0, 0.3, 0.6))
    first = arithmetic.Task("a", lambda sd: float(sd["w"][0]), lambda sd: float(sd["w"][0]))
    forgot = arithmetic.forget(BASE, vec([1.0, 0, 0]), target=first, control=tasks["b"])
    analog = arithmetic.analogy(
        BASE, a=vec(GOALS["a"]), b=vec(GOALS["b"]), c=vec(GOALS["c"]), task=tasks["a"]
    )
    for result in (added, forgot, analog):
        text = json.dumps(result.to_dict())
        again = type(result).from_dict(json.loads(text))
        assert json.dumps(again.to_dict()) == text  # equal but for NaN != NaN
        assert arithmetic.table([again]) == arithmetic.table([result])


def test_add_normalises_by_given_finetuned_vectors() -> None:
    tasks = {n: task(n, GOALS[n]) for n in "ab"}
    half = {n: vec([0.5 * v for v in GOALS[n]]) for n in "ab"}  # e.g. transferred, weaker
    own = {n: vec(GOALS[n]) for n in "ab"}
    methods = {"sum": arithmetic.Method(merge.task_arithmetic)}
    r = arithmetic.add(BASE, half, tasks, methods=methods, finetuned=own)
    assert r.rows["finetuned"].scores == {"a": 3.0, "b": 3.0}
    assert r.rows["sum"].normalized["a"] == pytest.approx(r.rows["sum"].scores["a"] / 3.0)
    with pytest.raises(WeightspaceValueError, match="`finetuned`"):
        arithmetic.add(BASE, half, tasks, methods=methods, finetuned={"a": own["a"]})


def test_gap_normalisation_is_the_fraction_of_the_gain_kept() -> None:
    # scores below zero (as R² can be): ratio is meaningless, the gap is not
    tasks = {n: task(n, GOALS[n], offset=-5.0) for n in "ab"}  # pretrained -3, fine-tuned -2
    vectors = {n: vec(GOALS[n]) for n in "ab"}
    methods = {"sum": arithmetic.Method(merge.task_arithmetic)}
    r = arithmetic.add(BASE, vectors, tasks, methods=methods, grid=(0.0, 0.5, 1.0), normalize="gap")
    assert r.normalize == "gap"
    assert r.rows["pretrained"].normalized == {"a": 0.0, "b": 0.0}
    assert r.rows["finetuned"].normalized == {"a": 1.0, "b": 1.0}
    row = r.rows["sum"]  # (0.5, 0.5, 0): score 3 - (0.25 + 0.25) - 5 = -2.5, half the gain
    assert row.scale == 0.5 and row.normalized["a"] == pytest.approx(0.5)
    assert "gain kept (mean)" in arithmetic.table([r])
    again = arithmetic.AdditionResult.from_dict(r.to_dict())
    assert again.normalize == "gap"
    with pytest.raises(WeightspaceValueError, match="`normalize`"):
        arithmetic.add(BASE, vectors, tasks, methods=methods, normalize="percent")  # type: ignore[arg-type]


def test_a_classifier_task_scores_state_dicts_by_train_accuracy() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2, bias=False)
    before = net.weight.detach().clone()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 0, 0])
    task = arithmetic.Task.from_classifier("t", net, validation=(x, y), test=(x[:2], y[:2]))
    identity = torch.nn.Linear(2, 2, bias=False)
    identity.load_state_dict({"weight": torch.eye(2)})
    assert task.validate({"weight": torch.eye(2)}) == 0.75 == train.accuracy(identity, (x, y))
    assert task.test({"weight": torch.eye(2)}) == 1.0
    assert task.test({"weight": 1 - torch.eye(2)}) == 0.0
    assert torch.equal(net.weight, before)  # scored on a private copy
    # negating the identity's vector at scale 2 turns every prediction around
    control = arithmetic.Task.from_classifier("c", net, validation=(x, y), test=(x, y))
    result = arithmetic.forget(
        {"weight": torch.eye(2)},
        TaskVector({"weight": torch.eye(2)}),
        target=task,
        control=control,
        grid=(0.0, 2.0),
        keep=0.0,
        random_baseline=False,
    )
    assert result.scale == 2.0 and result.target.edited == 0.0
    with pytest.raises(WeightspaceValueError, match="`model` must be an nn.Module, got dict"):
        arithmetic.Task.from_classifier("t", {}, validation=(x, y), test=(x, y))  # type: ignore[arg-type]


def test_best_by_family_keeps_the_best_validation_per_family() -> None:
    def row(validation: float) -> arithmetic.MethodRow:
        return arithmetic.MethodRow(
            1.0, {"a": validation}, {"a": validation}, validation=validation
        )

    rows = {
        "pretrained": row(0.99),
        "finetuned": row(1.0),
        "average": row(0.5),
        "ties@0.2": row(0.7),
        "ties@0.5": row(0.8),
        "ties@0.8": row(0.8),  # a tie: the first configuration stays
        "tall_masks@0.4": row(0.3),
        "tall_masks@0.6": row(0.2),
    }
    best = arithmetic.AdditionResult(rows, ("a",)).best_by_family()
    assert best == {"average": "average", "ties": "ties@0.5", "tall_masks": "tall_masks@0.4"}
    assert list(best) == ["average", "ties", "tall_masks"]
