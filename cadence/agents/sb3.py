"""stable-baselines3 policies as cadence policies: an SB3 model saved to a zip, swept for FAS like a cadence agent.

    policy = load_sb3_policy("runs/sb3_sac.zip", "InvertedPendulum-v5")
    cadence.runs.evaluate_policy_fas(policy, "InvertedPendulum-v5", out_dir, policy.algo.upper())

An SB3 policy decides one action per state. For FAS (an agent decides once from a state and its next ASL actions
run open loop) it repeats that action ``length`` times, exactly as cadence's :meth:`SAC.act_sequence` does, so an
SB3 policy's FAS is comparable with cadence SAC-1's.

The policy sees the env's raw observations: a model trained under SB3's ``VecNormalize`` (whose statistics are saved
apart from the model zip) would need them applied first, which this module does not do.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cadence.envs import make

__all__ = ["SB3_ALGOS", "SB3Policy", "detect_sb3_algo", "load_sb3_policy"]

#: Algorithms whose saved models load here, by the name used in ``SB3Policy.algo`` ("sb3-<name>").
SB3_ALGOS: tuple[str, ...] = ("sac", "td3", "ppo")


def _sb3_class(name: str) -> Any:
    import stable_baselines3

    return {"sac": stable_baselines3.SAC, "td3": stable_baselines3.TD3, "ppo": stable_baselines3.PPO}[name]


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file() and path.suffix != ".zip" and path.with_name(path.name + ".zip").is_file():
        path = path.with_name(path.name + ".zip")  # SB3's save() adds .zip to a name without it
    if not path.is_file():
        raise FileNotFoundError(f"no stable-baselines3 model file at {path}")
    return path


def _saved_data(path: Path) -> dict[str, Any]:
    """The ``data`` JSON that SB3's ``save()`` writes into the model zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a stable-baselines3 model file (a zip written by model.save() with a "
                         f"'data' entry): {err}") from None


def detect_sb3_algo(path: str | Path) -> str | None:
    """``"sac"``, ``"td3"`` or ``"ppo"`` from the policy class recorded in the model zip; None if it names none."""
    data = _saved_data(_resolve(path))
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for name in ("sac", "td3"):
        if module.startswith(f"stable_baselines3.{name}."):
            return name
    if module.startswith("stable_baselines3.common.") and "clip_range" in data:
        return "ppo"  # PPO's actor-critic policy lives in common.policies; clip_range is PPO's own
    return None


class SB3Policy:
    """A loaded SB3 model with cadence's policy interface (``act``, ``act_sequence``; batched or not)."""

    def __init__(self, model: Any, algo_name: str, env_id: str):
        self.model = model
        self.algo = f"sb3-{algo_name}"
        self.env_id = env_id
        self.obs_shape = tuple(model.observation_space.shape)
        self.act_shape = tuple(model.action_space.shape)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for one observation ``[obs_dim] -> [act_dim]``, or for a batch ``[m, obs_dim] -> [m, act_dim]``
        (SB3's ``predict``, actions in the env's bounds)."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[-len(self.obs_shape):] != self.obs_shape or obs.ndim not in (len(self.obs_shape),
                                                                                  len(self.obs_shape) + 1):
            raise ValueError(f"observation of shape {obs.shape} for a policy of observation shape {self.obs_shape} "
                             f"(one observation {self.obs_shape} or a batch [m, *{self.obs_shape}])")
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return np.asarray(action, dtype=np.float32)

    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """``[length, act_dim]`` actions decided from one state (``[m, length, act_dim]`` from a batch), run open
        loop: the policy acts once and its action is repeated, as cadence's SAC does."""
        return np.repeat(self.act(obs, deterministic)[..., None, :], length, axis=-2)

    def __repr__(self) -> str:
        return f"SB3Policy({self.algo}, {self.env_id}, obs {self.obs_shape}, act {self.act_shape})"


def load_sb3_policy(path: str | Path, env_id: str) -> SB3Policy:
    """Load a SAC, TD3 or PPO model saved by stable-baselines3 and check it fits ``cadence.envs.make(env_id)``.

    The algorithm is read from the zip's recorded policy class, else each of :data:`SB3_ALGOS` is tried.
    Raises FileNotFoundError for a missing file, ValueError for a file that is no SB3 model of these
    algorithms and for observation/action shapes that differ from the env's.
    """
    path = _resolve(path)
    detected = detect_sb3_algo(path)
    order = [detected] if detected else list(SB3_ALGOS)
    errors = []
    for name in order:
        try:
            model = _sb3_class(name).load(path, device="cpu")
            break
        except Exception as err:  # report every algorithm tried
            errors.append(f"{name.upper()}: {type(err).__name__}: {err}")
    else:
        raise ValueError(f"{path} did not load as a stable-baselines3 {'/'.join(a.upper() for a in order)} model: "
                         + "; ".join(errors))
    env = make(env_id)
    try:
        env_obs, env_act = tuple(env.observation_space.shape), tuple(env.action_space.shape)
    finally:
        env.close()
    policy = SB3Policy(model, name, env_id)
    if (policy.obs_shape, policy.act_shape) != (env_obs, env_act):
        raise ValueError(f"the SB3 model in {path} does not fit {env_id}: model observation shape {policy.obs_shape}, "
                         f"action shape {policy.act_shape}; {env_id} observation shape {env_obs}, "
                         f"action shape {env_act}")
    return policy
