"""The sound-matching environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import check_env

from weightspace import WeightspaceValueError
from weightspace.audio import SoundMatchEnv, Synth, spectral_distance

SYNTH = Synth(duration=0.25)


def test_passes_gymnasiums_checker() -> None:
    check_env(SoundMatchEnv(SYNTH, max_steps=4), skip_render_check=True)
    targets = SYNTH.render(SYNTH.sample(3, seed=0))
    check_env(
        SoundMatchEnv(SYNTH, targets=targets, max_steps=2, action_mode="absolute"),
        skip_render_check=True,
    )


def test_rewards_add_up_to_the_drop_in_distance() -> None:
    env = SoundMatchEnv(SYNTH, max_steps=5)
    obs, info = env.reset(seed=1)
    assert obs.shape == (2 * 32 * 8 + 16,) and obs.dtype == np.float32
    first = info["distance"]
    total = 0.0
    rng = np.random.default_rng(0)
    for step in range(5):
        obs, reward, terminated, truncated, info = env.step(
            rng.uniform(-1, 1, 16).astype(np.float32)
        )
        total += float(reward)
        assert not terminated and truncated == (step == 4)
        assert info["renders"] == step + 2
    assert total == pytest.approx(first - info["distance"], abs=1e-5)
    assert info["best_distance"] <= min(first, info["distance"])
    assert 0.0 <= info["param_error"] <= 1.0


def test_observation_holds_target_current_and_params() -> None:
    targets = SYNTH.render(SYNTH.sample(2, seed=5))
    env = SoundMatchEnv(SYNTH, targets=targets, target_params=SYNTH.sample(2, seed=5))
    obs, info = env.reset(seed=0, options={"target_index": 1})
    f = 32 * 8
    assert np.allclose(obs[:f], env.features(targets[1:2])[0].numpy())
    centre = SYNTH.render(torch.full((1, 16), 0.5))
    assert np.allclose(obs[f : 2 * f], env.features(centre)[0].numpy(), atol=1e-6)
    assert np.allclose(obs[2 * f :], 0.5)
    assert info["distance"] == pytest.approx(float(spectral_distance(centre, targets[1:2])[0]))
    assert info["target_index"] == 1


def test_delta_and_absolute_actions() -> None:
    env = SoundMatchEnv(SYNTH, step_size=0.1)
    env.reset(seed=0)
    action = np.zeros(16, dtype=np.float32)
    action[0], action[1] = 1.0, -1.0
    _, _, _, _, info = env.step(action)
    assert info["params"][0] == pytest.approx(0.6) and info["params"][1] == pytest.approx(0.4)
    env = SoundMatchEnv(SYNTH, action_mode="absolute", max_steps=1)
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(np.full(16, -1.0, dtype=np.float32))
    assert truncated and np.allclose(info["params"], 0.0)


def test_reset_is_seeded() -> None:
    env = SoundMatchEnv(SYNTH)
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_errors() -> None:
    with pytest.raises(WeightspaceValueError, match=r"`targets` must have shape \[N, 4000\]"):
        SoundMatchEnv(SYNTH, targets=torch.zeros(2, 10))
    with pytest.raises(WeightspaceValueError, match="`target_params` needs `targets`"):
        SoundMatchEnv(SYNTH, target_params=torch.zeros(2, 16))
    with pytest.raises(WeightspaceValueError, match="`action_mode` must be"):
        SoundMatchEnv(SYNTH, action_mode="jump")  # type: ignore[arg-type]
    env = SoundMatchEnv(SYNTH, targets=torch.zeros(2, 4000))
    with pytest.raises(WeightspaceValueError, match=r"`options\['target_index'\]` must be in"):
        env.reset(options={"target_index": 5})


def test_gymnasium_is_imported_only_for_the_environment() -> None:
    import subprocess
    import sys

    code = (
        "import sys, weightspace.audio as a\n"
        "before = 'gymnasium' in sys.modules\n"
        "a.SoundMatchEnv\n"
        "print(before, 'gymnasium' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
