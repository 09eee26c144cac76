"""A gymnasium environment for sound matching: turn the synthesizer's knobs towards a target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, SupportsFloat

import gymnasium
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace.audio._features import LogMel
from weightspace.audio._losses import spectral_distance
from weightspace.audio._synth import Synth

__all__ = ["SoundMatchEnv"]

Obs = npt.NDArray[np.float32]
Act = npt.NDArray[np.float32]

_FEATURE_CLIP = 3.0


class SoundMatchEnv(gymnasium.Env[Obs, Act]):
    """Match a target sound by changing the synthesizer's parameters, a step at a time.

    An episode: a target is drawn (a random patch of the synthesizer, or one of the given
    waveforms), the current patch starts at ``init`` (default: every normalised parameter at
    0.5), and each step renders the changed patch and scores it.

    * **Observation** (float32, ``2 F + P`` values): the target's features, the current
      sound's features and the current normalised parameters. Features are the log-mel
      spectrogram (:class:`~weightspace.audio.LogMel`: ``n_mels`` bands, 512-sample frames,
      hop 256, floor :math:`10^{-4}`) averaged into ``time_bins`` equal spans of time,
      divided by 6 and clipped to [-3, 3]:
      ``F = n_mels * time_bins``.
    * **Action** (float32, ``P`` values in [-1, 1]): with ``action_mode="delta"`` the
      parameters move by ``step_size * action`` (then are clipped to [0, 1]); with
      ``"absolute"`` they are set to ``(action + 1) / 2`` (the one-step, contextual-bandit
      form: use ``max_steps=1``).
    * **Reward**: the drop of ``distance`` (default
      :func:`~weightspace.audio.spectral_distance`) from the previous patch to the new one, so
      that an episode's return is the initial distance minus the final one.
    * **End**: truncated after ``max_steps`` steps; never terminated.
    * **Info**: ``distance`` (current), ``best_distance``, ``renders`` (synth renders of
      candidates this episode, counting the initial one), ``params`` (current, normalised),
      ``target_index`` and, when the target's parameters are known, ``param_error`` (mean
      absolute error of the normalised parameters).

    Args:
        synth: The synthesizer; a default :class:`~weightspace.audio.Synth` when ``None``.
        targets: ``None`` draws a fresh random patch each episode; a ``[N, T]`` tensor of
            waveforms (``T = synth.num_samples``) draws one of them.
        target_params: Normalised parameters of ``targets``, ``[N, P]``, when known.
        max_steps: Steps per episode, positive.
        step_size: Largest change of a normalised parameter per step (``"delta"``).
        action_mode: ``"delta"`` or ``"absolute"``.
        init: Starting normalised parameters, ``[P]``.
        n_mels: Mel bands of the features.
        time_bins: Time spans of the features.
        distance: ``distance(candidate [1, T], target [1, T]) -> [1]``.

    Example:
        >>> env = SoundMatchEnv(Synth(duration=0.25), max_steps=3)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.action_space.shape
        ((528,), (16,))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> info["renders"], truncated
        (2, False)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        synth: Synth | None = None,
        *,
        targets: Tensor | None = None,
        target_params: Tensor | None = None,
        max_steps: int = 16,
        step_size: float = 0.2,
        action_mode: Literal["delta", "absolute"] = "delta",
        init: Tensor | None = None,
        n_mels: int = 32,
        time_bins: int = 8,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.synth = synth if synth is not None else Synth()
        p = self.synth.num_params
        if targets is not None and (
            targets.ndim != 2 or targets.shape[1] != self.synth.num_samples or not len(targets)
        ):
            raise WeightspaceValueError(
                f"`targets` must have shape [N, {self.synth.num_samples}] (N > 0), "
                f"got {tuple(targets.shape)}"
            )
        if target_params is not None:
            if targets is None:
                raise WeightspaceValueError(
                    "`target_params` needs `targets`; pass the waveforms rendered from them"
                )
            if tuple(target_params.shape) != (len(targets), p):
                raise WeightspaceValueError(
                    f"`target_params` must have shape [{len(targets)}, {p}], "
                    f"got {tuple(target_params.shape)}"
                )
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise WeightspaceValueError(
                f"`max_steps` must be a positive integer, got {max_steps!r}"
            )
        if not 0 < step_size <= 1:
            raise WeightspaceValueError(f"`step_size` must be in (0, 1], got {step_size!r}")
        if action_mode not in ("delta", "absolute"):
            raise WeightspaceValueError(
                f"`action_mode` must be 'delta' or 'absolute', got {action_mode!r}"
            )
        if init is not None and tuple(init.shape) != (p,):
            raise WeightspaceValueError(f"`init` must have shape [{p}], got {tuple(init.shape)}")
        self.targets = None if targets is None else targets.detach().float()
        self.target_params = None if target_params is None else target_params.detach().float()
        self.max_steps = max_steps
        self.step_size = float(step_size)
        self.action_mode = action_mode
        self.init = torch.full((p,), 0.5) if init is None else init.detach().float().clamp(0, 1)
        self.n_mels = n_mels
        self.time_bins = time_bins
        self.distance = distance if distance is not None else spectral_distance
        self._log_mel = LogMel(
            sample_rate=self.synth.sample_rate, n_fft=512, hop_length=256, n_mels=n_mels, eps=1e-4
        )
        f = n_mels * time_bins
        low = np.concatenate([np.full(2 * f, -_FEATURE_CLIP), np.zeros(p)]).astype(np.float32)
        high = np.concatenate([np.full(2 * f, _FEATURE_CLIP), np.ones(p)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(p,), dtype=np.float32)
        self._target = torch.zeros(1, self.synth.num_samples)
        self._target_features = torch.zeros(f)
        self._target_index = -1
        self._target_params: Tensor | None = None
        self._params = self.init.clone()
        self._features = torch.zeros(f)
        self._distance = 0.0
        self._best = 0.0
        self._steps = 0
        self._renders = 0

    def features(self, audio: Tensor) -> Tensor:
        """Observation features of sounds: ``[B, T]`` -> ``[B, n_mels * time_bins]``."""
        logmel = self._log_mel(audio.float())
        pooled = torch.nn.functional.adaptive_avg_pool1d(logmel, self.time_bins)
        return (pooled / 6.0).clamp(-_FEATURE_CLIP, _FEATURE_CLIP).flatten(1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        """Start an episode with a new target.

        Args:
            seed: Seeds the environment's random generator (gymnasium's convention).
            options: ``{"target_index": i}`` picks target ``i`` of ``targets``;
                ``{"init": params}`` starts from other normalised parameters ``[P]``.

        Returns:
            The first observation and the info dictionary.
        """
        super().reset(seed=seed)
        options = options or {}
        if self.targets is None:
            draw = int(self.np_random.integers(0, 2**31 - 1))
            params = self.synth.sample(1, seed=draw)
            with torch.no_grad():
                self._target = self.synth.render(params)
            self._target_params = params[0]
            self._target_index = -1
        else:
            index = options.get("target_index")
            if index is None:
                index = int(self.np_random.integers(0, len(self.targets)))
            if not 0 <= int(index) < len(self.targets):
                raise WeightspaceValueError(
                    f"`options['target_index']` must be in [0, {len(self.targets)}), got {index!r}"
                )
            self._target_index = int(index)
            self._target = self.targets[self._target_index : self._target_index + 1]
            self._target_params = (
                None if self.target_params is None else self.target_params[self._target_index]
            )
        self._target_features = self.features(self._target)[0]
        start = options.get("init")
        self._params = self.init.clone() if start is None else torch.as_tensor(start).float()
        self._steps = 0
        self._renders = 0
        self._distance = self._score(self._params)
        self._best = self._distance
        return self._observation(), self._info()

    def step(self, action: Act) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply an action: change the parameters, render, and reward the drop in distance."""
        a = torch.as_tensor(np.asarray(action, dtype=np.float32)).clamp(-1.0, 1.0)
        if tuple(a.shape) != (self.synth.num_params,):
            raise WeightspaceValueError(
                f"`action` must have shape [{self.synth.num_params}], got {tuple(a.shape)}"
            )
        if self.action_mode == "delta":
            self._params = (self._params + self.step_size * a).clamp(0.0, 1.0)
        else:
            self._params = (a + 1.0) * 0.5
        previous = self._distance
        self._distance = self._score(self._params)
        self._best = min(self._best, self._distance)
        self._steps += 1
        reward = previous - self._distance
        truncated = self._steps >= self.max_steps
        return self._observation(), float(reward), False, truncated, self._info()

    def _score(self, params: Tensor) -> float:
        with torch.no_grad():
            audio = self.synth.render(params.unsqueeze(0))
            self._features = self.features(audio)[0]
            d = float(self.distance(audio, self._target).reshape(-1)[0])
        self._renders += 1
        return d

    def _observation(self) -> Obs:
        obs = torch.cat([self._target_features, self._features, self._params])
        return obs.numpy().astype(np.float32)

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "distance": self._distance,
            "best_distance": self._best,
            "renders": self._renders,
            "params": self._params.numpy().copy(),
            "target_index": self._target_index,
        }
        if self._target_params is not None:
            info["param_error"] = float((self._params - self._target_params).abs().mean())
        return info
