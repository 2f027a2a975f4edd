"""Continual-learning penalties over any module's parameters (EWC, SI) and one training loop for every baseline.

The penalties are quadratic anchors ``sum_i importance_i (theta_i - theta*_i)^2`` that the caller adds to a model's
own loss; they differ in how the importance is measured (docs/ARCHITECTURE.md, "World models"):

- :class:`EWC` (Kirkpatrick et al. 2017): the diagonal empirical Fisher of the finished task's loss.
- :class:`SI` (Zenke et al. 2017): each parameter's contribution to the drop of the loss along the training path.

:func:`train_model_steps` runs minibatch steps of any ``loss(batch) -> (loss, metrics)`` with an optional penalty
and SI's bookkeeping, so HyperCRL (regulariser inside its loss), finetune, EWC, SI, coreset and multitask share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

Tensor = torch.Tensor
Batch = dict[str, Tensor]


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s named parameters that require gradients (the ones a penalty anchors)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def _snapshot(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


def _quadratic(module: nn.Module, importance: Mapping[str, Tensor], anchor: Mapping[str, Tensor]) -> Tensor:
    """``sum_i importance_i (theta_i - anchor_i)^2`` over the anchored parameters of ``module`` (0 when none are)."""
    params = dict(module.named_parameters())
    total = torch.zeros((), device=next(module.parameters()).device)
    for name, weight in importance.items():
        total = total + (weight * (params[name] - anchor[name]) ** 2).sum()
    return total


class EWC:
    """Elastic weight consolidation: ``penalty() = lam / 2 * sum_i F_i (theta_i - theta*_i)^2``.

    ``F`` is the diagonal empirical Fisher: the mean over batches of the squared gradient of ``loss_fn``. With
    one-row batches that is the textbook per-sample estimate; larger batches square the gradient of a batch mean,
    which is cheaper and smaller (by up to the batch size), a scale that ``lam`` absorbs. Over several tasks the
    Fishers add up, ``F <- decay * F + F_task`` (online EWC; ``decay`` 1 keeps the plain running sum, LIBERO's EWC
    uses 0.9), and ``theta*`` is the parameters at the last consolidation, so one penalty covers every finished task.

    Args:
        module: the model; the parameters that require gradients at each consolidation are anchored (so a model
            that grows parameters, as HyperDynamics's task embeddings, is covered from the next consolidation).
        lam: penalty weight lambda.
        decay: factor on the earlier tasks' summed Fisher at each consolidation, in (0, 1].
    """

    def __init__(self, module: nn.Module, lam: float, decay: float = 1.0):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"EWC decay must be in (0, 1], got {decay}")
        self.module, self.lam, self.decay = module, lam, decay
        self.fisher: dict[str, Tensor] = {}
        self.star: dict[str, Tensor] = {}
        self.n_consolidations = 0

    def consolidate(self, batches: Iterable[Batch], loss_fn: Callable[[Batch], Tensor]) -> None:
        """At a task's end: add the Fisher of ``loss_fn`` over ``batches`` and anchor at the current parameters.

        Gradients come from ``torch.autograd.grad``, so the parameters' ``.grad`` are left untouched.
        """
        params = trainable(self.module)
        names, tensors = list(params), list(params.values())
        fisher = [torch.zeros_like(p) for p in tensors]
        n = 0
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(batch), tensors, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f.add_(g.detach() ** 2)
            n += 1
        if n == 0:
            raise ValueError("EWC.consolidate needs at least one batch")
        for name, f in zip(names, fisher):
            self.fisher[name] = self.decay * self.fisher.get(name, torch.zeros_like(f)) + f / n
        self.star.update(_snapshot(params))  # parameters frozen since keep their earlier anchors
        self.n_consolidations += 1

    def penalty(self) -> Tensor:
        """``lam / 2 * sum_i F_i (theta_i - theta*_i)^2``; 0 before any consolidation."""
        return 0.5 * self.lam * _quadratic(self.module, self.fisher, self.star)

    def state_dict(self) -> dict[str, Any]:
        """Fisher, anchor and consolidation count (tensors are clones)."""
        return {"fisher": _snapshot(self.fisher), "star": _snapshot(self.star),
                "n_consolidations": self.n_consolidations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.fisher, self.star = _snapshot(state["fisher"]), _snapshot(state["star"])
        self.n_consolidations = int(state["n_consolidations"])


class SI:
    """Synaptic intelligence (Zenke et al. 2017): ``penalty() = c * sum_i Omega_i (theta_i - theta*_i)^2``.

    Along a task, ``omega_i += -g_i * delta_theta_i`` for every optimiser step, with ``g`` the (unclipped) gradient
    of the task loss alone (recorded by :meth:`before_step` after ``backward`` of that loss, before the penalty's
    gradient is added: the penalty is not part of the path integral of the task's loss). At the task's end
    ``Omega_i += omega_i / ((theta_end_i - theta_start_i)^2 + xi)``, ``theta* = theta_end`` and ``omega`` restarts.

    Per task: :meth:`begin_task`; per step: ``backward(task loss)``, :meth:`before_step`, add the penalty's
    gradient, ``optimizer.step()``, :meth:`after_step`; then :meth:`end_task`. :func:`train_model_steps` does this.

    Args:
        module: the model; the parameters that require gradients at :meth:`begin_task` are tracked for that task.
        c: penalty weight.
        xi: damping of the normaliser, so parameters that barely moved do not get huge importances.
    """

    def __init__(self, module: nn.Module, c: float, xi: float = 0.1):
        self.module, self.c, self.xi = module, c, xi
        self.omega: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] = {}
        self.star: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] | None = None
        self._before: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}

    def begin_task(self) -> None:
        """Record the parameters at the task's start (and start tracking any new ones)."""
        self.start = _snapshot(trainable(self.module))
        for name, p in self.start.items():
            self.omega.setdefault(name, torch.zeros_like(p))

    @torch.no_grad()
    def before_step(self) -> None:
        """Record the parameters and their current gradients (those of the task loss) before ``optimizer.step``."""
        if self.start is None:
            raise RuntimeError("SI.before_step before begin_task")
        params = {name: p for name, p in self.module.named_parameters() if name in self.start}
        self._before = _snapshot(params)
        self._grads = {name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                       for name, p in params.items()}

    @torch.no_grad()
    def after_step(self) -> None:
        """``omega += -g * delta_theta`` for the step just taken."""
        if not self._before:
            raise RuntimeError("SI.after_step without before_step")
        params = dict(self.module.named_parameters())
        for name, before in self._before.items():
            self.omega[name].sub_(self._grads[name] * (params[name] - before))
        self._before, self._grads = {}, {}

    @torch.no_grad()
    def end_task(self) -> None:
        """Fold this task's path integral into the importance and anchor at the current parameters."""
        if self.start is None:
            raise RuntimeError("SI.end_task before begin_task")
        params = dict(self.module.named_parameters())
        for name, start in self.start.items():
            new = self.omega[name] / ((params[name].detach() - start) ** 2 + self.xi)
            self.importance[name] = self.importance.get(name, torch.zeros_like(new)) + new
            self.omega[name].zero_()
        self.star.update(_snapshot({name: params[name] for name in self.start}))  # untracked ones keep theirs
        self.start = None

    def penalty(self) -> Tensor:
        """``c * sum_i Omega_i (theta_i - theta*_i)^2``; 0 before the first task ends."""
        return self.c * _quadratic(self.module, self.importance, self.star)

    def state_dict(self) -> dict[str, Any]:
        """Importance, anchor, running path integral and task start (tensors are clones)."""
        return {"importance": _snapshot(self.importance), "star": _snapshot(self.star),
                "omega": _snapshot(self.omega), "start": None if self.start is None else _snapshot(self.start)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.importance, self.star = _snapshot(state["importance"]), _snapshot(state["star"])
        self.omega = _snapshot(state["omega"])
        self.start = None if state["start"] is None else _snapshot(state["start"])


def sample_batch(data: Mapping[str, Tensor], batch_size: int, generator: torch.Generator | None) -> Batch:
    """``batch_size`` rows of ``data`` drawn uniformly with replacement (indices drawn on the generator's device)."""
    n = next(iter(data.values())).shape[0]
    idx = torch.randint(n, (batch_size,), generator=generator)
    idx = idx.to(next(iter(data.values())).device)
    return {k: v[idx] for k, v in data.items()}


def train_model_steps(model_loss: Callable[[Batch], tuple[Tensor, dict[str, float]]], params: Iterable[Tensor],
                      data: Mapping[str, Tensor], steps: int, batch_size: int, optimizer: torch.optim.Optimizer,
                      grad_clip: float | None, generator: torch.Generator | None,
                      penalty: Callable[[], Tensor] | None = None, si: SI | None = None,
                      sampler: Callable[[], Batch] | None = None) -> dict[str, float]:
    """``steps`` minibatch steps of ``model_loss`` (+ ``penalty()``) on rows of ``data``; returns mean metrics.

    Each step: a uniform batch, ``backward`` of the task loss, SI's ``before_step`` (so SI sees the task loss's
    gradient only), ``backward`` of the penalty, gradient-norm clipping of ``params`` to ``grad_clip``, the optimiser
    step, SI's ``after_step``. SI's ``begin_task``/``end_task`` are the caller's (tasks span several calls).
    Returned: the mean over steps of ``model_loss``'s metrics, ``model/loss`` (the task loss) and ``model/penalty``.
    ``sampler`` replaces the uniform batches of ``data`` (e.g. half from a replay memory).
    """
    params = list(params)
    sums: dict[str, float] = {}
    for _ in range(steps):
        loss, metrics = model_loss(sampler() if sampler is not None else sample_batch(data, batch_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if si is not None:
            si.before_step()
        pen = penalty() if penalty is not None else None
        if pen is not None and pen.requires_grad:
            pen.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if si is not None:
            si.after_step()
        metrics = {**metrics, "model/loss": loss.item(), "model/penalty": 0.0 if pen is None else pen.item()}
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: value / max(steps, 1) for key, value in sums.items()}
