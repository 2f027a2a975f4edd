"""World-model error that measures dynamics: per-column normalised, state and reward apart, beside a no-change baseline.

One aggregate MSE over ``(s' - s, r)`` lets large columns swamp small ones (a reward that changed between tasks
vanishes under 17 state columns that did not). Here each column's squared error is divided by that column's variance
in a reference data set (the first task's held-out transitions), so 1 is the error of predicting the column's mean,
and state and reward are reported apart. The no-change predictor (``s' = s``, ``r = 0``) is the floor a model must
beat to have learned anything.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Tensor = torch.Tensor

#: smallest per-column std of the scale: a column that never moves in the reference data (padding, an object the
#: first task never touches) has its squared error divided by 1e-6 instead of by ~0: a miss of 1e-3 there counts as
#: much as a one-std miss elsewhere
SCALE_FLOOR = 1e-3


def transition_scale(data: Mapping[str, Tensor]) -> Tensor:
    """Per column of ``[next_obs - obs, reward]``, its std in ``data`` (floored at :data:`SCALE_FLOOR`)."""
    target = torch.cat([data["next_obs"] - data["obs"], data["reward"].reshape(-1, 1)], dim=1).double()
    if target.shape[0] < 2:
        raise ValueError(f"the error scale needs at least 2 transitions, got {target.shape[0]}")
    return target.std(0).clamp_min(SCALE_FLOOR).float()


def normalized_errors(next_obs_pred: Tensor, reward_pred: Tensor | None, data: Mapping[str, Tensor],
                      scale: Tensor) -> dict[str, float]:
    """Errors of predicted next observations and rewards on ``data``: ``state`` and ``reward`` (mean over their
    columns of squared error / scale²) and ``raw_mse`` (the plain MSE over every column of ``(s', r)``). A model
    without a reward (``reward_pred`` None) predicts 0."""
    obs, next_obs, reward = data["obs"], data["next_obs"], data["reward"].reshape(-1)
    if next_obs_pred.shape != next_obs.shape:
        raise ValueError(f"predicted next observations have shape {list(next_obs_pred.shape)}, the data "
                         f"{list(next_obs.shape)}")
    if scale.shape != (obs.shape[1] + 1,):
        raise ValueError(f"the scale has {scale.numel()} columns, expected {obs.shape[1] + 1} (state + reward)")
    reward_pred = torch.zeros_like(reward) if reward_pred is None else reward_pred.reshape(-1)
    state_err = next_obs_pred - next_obs
    reward_err = reward_pred - reward
    scale = scale.to(state_err.device)
    return {"state": float(((state_err / scale[:-1]) ** 2).mean()),
            "reward": float(((reward_err / scale[-1]) ** 2).mean()),
            "raw_mse": float(torch.cat([state_err, reward_err[:, None]], dim=1).square().mean())}


def no_change_errors(data: Mapping[str, Tensor], scale: Tensor) -> dict[str, float]:
    """:func:`normalized_errors` of the no-change predictor: ``s' = s`` and ``r = 0``."""
    return normalized_errors(data["obs"], None, data, scale)
