"""Lifelong imitation: one behaviour-cloning policy learned over a task sequence of demonstrations (LIBERO).

The policy maps a state and a one-hot task id to an action (LIBERO conditions on the task's language; the id is the
state-only stand-in) and is trained with the mean squared error to the demonstrated action. The ``strategy`` says how
it keeps earlier tasks (LIBERO, Liu et al. 2023, section 5):

* ``seql``: sequential finetuning on each task in turn (the lower bound);
* ``er``: experience replay: a memory of ``memory`` transitions split equally over finished tasks (the continual
  issue's :class:`~cadence.replay.selection.ContinualMemory`), half of every batch drawn from it;
* ``ewc``: Elastic Weight Consolidation on the policy's parameters, as LIBERO's ``EWC`` does it (online Fisher with
  decay 0.9 from batch-mean gradients), with lambda 5e2 where LIBERO's is 5e4 (:data:`LIBERO_EWC_LAMBDA`; see
  :class:`LifelongBCConfig`);
* ``multitask``: every task's demonstrations so far (the upper bound).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cadence.agents.oer import one_hot_tasks
from cadence.config import check, check_positive, check_widths
from cadence.nn import adam, input_scale, mlp
from cadence.replay.selection import ContinualMemory, RandomSelector
from cadence.world_models.continual import EWC, sample_batch, train_model_steps

Data = dict[str, torch.Tensor]

#: LIBERO's EWC weight (``configs/lifelong/ewc.yaml``'s ``e_lambda``), for
#: ``LifelongBCConfig(ewc_lambda=LIBERO_EWC_LAMBDA)``
LIBERO_EWC_LAMBDA = 5e4
#: ``LifelongBCConfig.fisher``'s values
FISHERS = ("batch", "per-sample")

STRATEGIES: dict[str, str] = {
    "seql": "nothing: the policy is finetuned on each task in turn",
    "er": "a memory of earlier tasks' transitions, half of every batch",
    "ewc": "an Elastic Weight Consolidation penalty on the policy",
    "multitask": "every task's demonstrations so far",
}


@dataclass(frozen=True)
class LifelongBCConfig:
    """Settings of a lifelong behaviour-cloning learner; a strategy reads only its own keys."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    lr: float = 1e-3
    batch_size: int = 256
    grad_clip: float = 10.0
    memory: int = 5000
    """``er``: transitions kept over all finished tasks."""
    ewc_lambda: float = 5e2
    """``ewc``: the penalty's weight lambda in ``lambda * sum_i F_i (theta_i - theta*_i)^2`` (LIBERO's form, without
    EWC's usual 1/2). LIBERO's ``e_lambda`` is 5e4 (:data:`LIBERO_EWC_LAMBDA`), set for its policy's likelihood loss;
    with this MSE loss it stops the policy solving new tasks: on LIBERO-Object FWT 0.08 at 5e4 (3 seeds), 0.17 at
    5e3, 0.41 at 5e2 against SeqL's 0.52 (seed 1; docs/ARCHITECTURE.md)."""
    ewc_decay: float = 0.9
    """``ewc``: online EWC's factor on the earlier tasks' Fisher at each task's end (LIBERO's ``gamma``)."""
    fisher: str = "batch"
    """``ewc``: how the Fisher is measured at a task's end. ``batch`` (LIBERO's ``EWC.end_task``): one shuffled pass
    over the task's demonstrations in batches of ``fisher_batch_size``, the mean of each batch-mean gradient squared.
    ``per-sample``: ``fisher_samples`` single transitions, each gradient squared (the textbook estimate; near
    convergence it is far larger than the batch one, so the same lambda holds the policy far harder)."""
    fisher_batch_size: int = 32
    """``ewc``, ``fisher=batch``: the batch size of the Fisher's pass (LIBERO's training batch size)."""
    fisher_samples: int = 200
    """``ewc``, ``fisher=per-sample``: how many single transitions of the finished task."""

    def __post_init__(self) -> None:
        check_widths(self, "hidden_sizes")
        for name in ("lr", "grad_clip", "ewc_lambda"):
            check_positive(self, name)
        for name in ("batch_size", "memory", "fisher_batch_size", "fisher_samples"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        check(0.0 < self.ewc_decay <= 1.0, "ewc_decay", self.ewc_decay, "in (0, 1]")
        check(self.fisher in FISHERS, "fisher", self.fisher, f"one of {', '.join(FISHERS)}")


class LifelongBC:
    """A state- and task-conditioned BC policy learned task after task; see the module docstring.

    Per task: :meth:`begin_task` with its demonstrations (``obs``, ``action`` tensors, plus ``reward``,
    ``next_obs``, ``terminated`` for the ER memory), :meth:`train` some steps, :meth:`end_task`. States are
    normalised by the first task's mean and std, as offline learners do.
    """

    def __init__(self, obs_dim: int, act_dim: int, n_tasks: int, strategy: str,
                 config: LifelongBCConfig | None = None, seed: int = 0):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown lifelong strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        self.obs_dim, self.act_dim, self.n_tasks, self.strategy = obs_dim, act_dim, n_tasks, strategy
        self.config = config = config or LifelongBCConfig()
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.policy = mlp(obs_dim + n_tasks, config.hidden_sizes, act_dim)
        self.optimizer = adam(self.policy.parameters(), config.lr)
        self.mean = torch.zeros(obs_dim)
        self.std = torch.ones(obs_dim)
        self.normalizer_set = False
        # EWC's penalty is lam/2 * sum F d^2: twice lambda gives LIBERO's lambda * sum F d^2
        self.ewc = EWC(self.policy, 2 * config.ewc_lambda, config.ewc_decay) if strategy == "ewc" else None
        self.memory = (ContinualMemory.per_task(config.memory, obs_dim, act_dim, RandomSelector(), seed=seed)
                       if strategy == "er" else None)
        self.seen: list[Data] = []  # multitask: every task's data so far
        self.task = -1
        self.data: Data = {}

    # -- the policy --------------------------------------------------------------------------------------------

    def _forward(self, obs: torch.Tensor, task: torch.Tensor | int) -> torch.Tensor:
        x = one_hot_tasks((obs.float() - self.mean) / self.std, task, self.n_tasks)
        return torch.tanh(self.policy(x))

    def loss(self, batch: Data) -> tuple[torch.Tensor, dict[str, float]]:
        """The BC loss: mean squared error to the demonstrated actions (clipped into the action box)."""
        pred = self._forward(batch["obs"], batch["task_id"])
        loss = F.mse_loss(pred, batch["action"].clamp(-1, 1))
        return loss, {"bc/loss": float(loss.detach())}

    @torch.no_grad()
    def act(self, obs: np.ndarray, task: int) -> np.ndarray:
        """The action for one state (or a batch) of task ``task``."""
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        return self._forward(x.reshape(-1, self.obs_dim), task).reshape(*x.shape[:-1], self.act_dim).numpy()

    # -- the task sequence -------------------------------------------------------------------------------------

    def begin_task(self, task: int, data: Data) -> None:
        """Start task ``task`` (0..n_tasks-1, in order) on its demonstrations."""
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"task must be in 0..{self.n_tasks - 1}, got {task}")
        n = data["obs"].shape[0]
        if n == 0 or data["obs"].shape[1:] != (self.obs_dim,) or data["action"].shape[1:] != (self.act_dim,):
            raise ValueError(f"task {task}'s demonstrations must be non-empty, with {self.obs_dim}-D states and "
                             f"{self.act_dim}-D actions; got {tuple(data['obs'].shape)}, "
                             f"{tuple(data['action'].shape)}")
        for key in ("obs", "action"):
            if not torch.isfinite(data[key]).all():
                raise ValueError(f"task {task}'s demonstrations hold NaN or inf in {key!r}")
        if not self.normalizer_set:
            self.mean, self.std = input_scale(data["obs"])
            self.normalizer_set = True
        self.task = task
        self.data = {**data, "task_id": torch.full((n,), task, dtype=torch.int64)}
        if self.strategy == "multitask":
            self.seen.append(self.data)

    def _batch(self, size: int) -> Data:
        """Half a batch from the current task and half from memory (``er``, once it holds old tasks)."""
        current = sample_batch(self.data, size // 2, self.generator)
        old = self.memory.sample(size - size // 2, self.generator)
        keys = ("obs", "action", "task_id")
        return {k: torch.cat([current[k], old[k].to(current[k].dtype)]) for k in keys}

    def train(self, steps: int) -> dict[str, float]:
        """``steps`` minibatch steps of the strategy's objective on the current task; returns mean metrics."""
        if self.task < 0:
            raise RuntimeError("begin_task() before train()")
        cfg = self.config
        keys = ("obs", "action", "task_id")
        data = {k: self.data[k] for k in keys}
        if self.strategy == "multitask":
            data = {k: torch.cat([d[k] for d in self.seen]) for k in keys}
        sampler = None
        if self.strategy == "er" and len(self.memory) > 0:
            sampler = lambda: self._batch(cfg.batch_size)  # noqa: E731
        penalty = self.ewc.penalty if self.ewc is not None else None
        return train_model_steps(self.loss, self.policy.parameters(), data, steps, cfg.batch_size,
                                 self.optimizer, cfg.grad_clip, self.generator, penalty=penalty, sampler=sampler)

    def end_task(self) -> None:
        """Consolidate the finished task: EWC's Fisher, or its share of the ER memory."""
        if self.ewc is not None:
            self.ewc.consolidate(self._fisher_batches(), lambda b: self.loss(b)[0])
        if self.memory is not None:
            fields = ("obs", "action", "reward", "next_obs", "terminated")
            self.memory.end_task({k: self.data[k] for k in fields}, self.task)

    def _fisher_batches(self) -> Iterator[Data]:
        """The batches EWC's Fisher averages over (see ``LifelongBCConfig.fisher``)."""
        cfg = self.config
        if cfg.fisher == "per-sample":
            return (sample_batch(self.data, 1, self.generator) for _ in range(cfg.fisher_samples))
        order = torch.randperm(self.data["obs"].shape[0], generator=self.generator)
        keys = ("obs", "action", "task_id")
        return ({k: self.data[k][rows] for k in keys} for rows in order.split(cfg.fisher_batch_size))

    def snapshot(self) -> dict[str, Any]:
        """A copy of what training on a task changes: the policy's weights and the optimizer's state (the lifelong
        loop's checkpoints; :meth:`restore` goes back to one)."""
        return copy.deepcopy({"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()})

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot`, as if training had stopped there."""
        snapshot = copy.deepcopy(snapshot)  # the optimizer would otherwise share, and later update, its tensors
        self.policy.load_state_dict(snapshot["policy"])
        self.optimizer.load_state_dict(snapshot["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "mean": self.mean,
                "std": self.std, "task": self.task, "strategy": self.strategy}
