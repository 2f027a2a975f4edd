"""HyperCRL's dynamics model: a hypernetwork turns a learned task embedding into all weights of a Gaussian MLP.

Huang et al., arXiv 2009.11997 (ICRA 2021); docs/ARCHITECTURE.md, "HyperCRL". Each task ``t`` has a learned embedding
``e_t`` (size 10). A hypernetwork ``h(e; Theta)`` outputs every weight and bias of the target dynamics MLP, which
predicts a diagonal Gaussian over ``(s' - s[, r])`` from normalised ``(s, a)`` with the same SiLU layers, bounded
log-variance head, targets and NLL as :class:`~cadence.world_models.ensemble.GaussianEnsemble` (shared functions).

Continual training (only the current task's data, old data never revisited):
``add_task()`` a new embedding, ``start_task(t)`` to snapshot ``h(e_s; Theta*)`` for every earlier task ``s < t``,
then minimise ``loss(batch)`` = NLL on task ``t`` + ``beta * mean_{s<t} ||h(e_s; Theta) - h(e_s; Theta*)||^2``.
The snapshot stores the generated weights rather than ``Theta*``: the regulariser only ever needs those outputs,
so this is equivalent and cheaper (no second hypernetwork forward per step).

HyperCRL's own training differs in several switchable ways (``HyperConfig``: ReLU target net, Xavier init, fixed
log-variance bounds, summed loss, per-task input normaliser, its "look-ahead" regulariser evaluated one Adam step
ahead; and :func:`train_two_optimizers`, one Adam over Theta and one over the current embedding). The defaults keep
cadence's form: one optimiser over the plain gradient of the loss above.

The model itself takes a task argument; :meth:`HyperDynamics.for_task` gives a
:class:`~cadence.world_models.base.DynamicsModel` bound to one task for planners and rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadence.config import check, check_positive, check_widths
from cadence.nn import adam, input_scale, mlp
from cadence.world_models.continual import sample_batch
from cadence.world_models.ensemble import (
    bounded_logvar,
    gaussian_nll,
    logvar_bound_penalty,
    next_state_normal,
    split_next_state,
    transition_targets,
)

Tensor = torch.Tensor
Task = int | Tensor

#: hypernetwork hidden widths when ``hnet_hidden_sizes`` is None: HyperCRL's presets for a (200, 200, 200)
#: target net (plain) and for its chunked hypernetwork (``tools/default_arg.py``)
PLAIN_HNET_HIDDEN = (100, 100)
CHUNKED_HNET_HIDDEN = (25, 30)

#: target-net activations by name: SiLU as GaussianEnsemble's members, ReLU as HyperCRL's MLP
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": F.silu, "relu": F.relu}
#: hypernetwork initialisations: PyTorch's Linear default, or HyperCRL's Xavier-uniform weights with zero biases
INITS = ("default", "xavier")
#: "mean": 0.5 * mean NLL + beta R; "sum": HyperCRL's summed NLL + beta * batch size * R
LOSS_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class HyperConfig:
    """Architecture and training settings of a HyperDynamics model (HyperCRL's defaults)."""

    embedding_size: int = 10
    """Size of each task embedding e_t."""
    hidden_sizes: tuple[int, ...] = (200, 200, 200)
    """Hidden widths of the target dynamics MLP (whose weights the hypernetwork generates)."""
    hnet_hidden_sizes: tuple[int, ...] | None = None
    """Hidden widths of the hypernetwork (ReLU); None: (100, 100), or (25, 30) when chunked (HyperCRL's presets)."""
    chunked: bool = False
    """Generate the target weights chunk by chunk from [e_t, c_k] (learned chunk embeddings c_k): a far smaller
    hypernetwork output layer."""
    chunk_size: int = 4000
    """Target-net weights produced per hypernetwork call in the chunked variant."""
    chunk_embedding_size: int = 20
    """Size of each chunk embedding c_k in the chunked variant."""
    beta: float | None = None
    """Weight of the output regulariser; None: 0.05 (plain), 0.005 (chunked). HyperCRL uses 0.5 for door/pusher."""
    plastic_embeddings: bool | None = None
    """Keep training earlier tasks' embeddings (through the regulariser only); None: False for the plain
    variant, True for the chunked one, as HyperCRL's ``plastic_prev_tembs``."""
    lr: float = 1e-4
    """Adam learning rate of the hypernetwork and embeddings."""
    grad_clip: float | None = 5.0
    """Gradient-norm clip per step; None: no clipping."""
    learn_reward: bool = True
    """Also predict the reward."""
    batch_size: int = 256
    """Transitions per gradient step."""
    activation: str = "silu"
    """Target-net activation: "silu" (as GaussianEnsemble's members) or "relu" (HyperCRL's)."""
    init: str = "default"
    """Hypernetwork init: "default" (PyTorch's Linear init) or "xavier" (Xavier-uniform weights, zero biases: HyperCRL's
    ``hnet_init``; its initial generated weights are 11-13x smaller)."""
    train_logvar_bounds: bool = True
    """Train the shared log-variance bounds; HyperCRL keeps them at 0.5 / -10 (no optimiser holds them)."""
    loss_reduction: str = "mean"
    """"mean": NLL = 0.5 * mean over rows and columns, plus beta R; "sum": HyperCRL's, sum over rows and columns / the
    column count (no 0.5), plus beta * batch size * R (the same relative weight as "mean" with beta / 2, but a
    gradient about 2 x batch size larger, which matters for the gradient clip)."""
    normalize_per_task: bool = False
    """One input normaliser per task (HyperCRL's, refitted on the task's data at every fit), instead of one shared."""
    look_ahead: bool = False
    """Evaluate the regulariser at Theta + dTheta, dTheta the Adam step the task loss alone would take (HyperCRL's
    ``no_look_ahead=False``); used by :func:`train_two_optimizers`."""
    output_bias_l1: float = 0.0
    """Weight of the L1 norm of the task's generated output bias in its loss: HyperCRL's ``TaskLoss.regularize`` adds
    it with weight 1 (its loop keeps only the last generated tensor and never applies ``reg_lambda``)."""

    def __post_init__(self) -> None:
        for name in ("embedding_size", "chunk_size", "chunk_embedding_size", "lr", "batch_size"):
            check_positive(self, name)
        check_widths(self, "hidden_sizes")
        if self.hnet_hidden_sizes is not None:
            check_widths(self, "hnet_hidden_sizes")
        check(self.beta is None or (self.beta >= 0 and math.isfinite(self.beta)), "beta", self.beta, ">= 0")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "> 0")
        check(self.activation in ACTIVATIONS, "activation", self.activation, f"one of {', '.join(ACTIVATIONS)}")
        check(self.init in INITS, "init", self.init, f"one of {', '.join(INITS)}")
        check(self.loss_reduction in LOSS_REDUCTIONS, "loss_reduction", self.loss_reduction,
              f"one of {', '.join(LOSS_REDUCTIONS)}")
        check(self.output_bias_l1 >= 0 and math.isfinite(self.output_bias_l1), "output_bias_l1", self.output_bias_l1,
              ">= 0 and finite")

    @property
    def reg_beta(self) -> float:
        """``beta``, or its default for the variant: 0.05 plain, 0.005 chunked."""
        if self.beta is not None:
            return self.beta
        return 0.005 if self.chunked else 0.05

    @property
    def hnet_hidden(self) -> tuple[int, ...]:
        """``hnet_hidden_sizes``, or its default for the variant."""
        if self.hnet_hidden_sizes is not None:
            return self.hnet_hidden_sizes
        return CHUNKED_HNET_HIDDEN if self.chunked else PLAIN_HNET_HIDDEN

    @property
    def plastic(self) -> bool:
        """``plastic_embeddings``, or its default for the variant."""
        if self.plastic_embeddings is not None:
            return self.plastic_embeddings
        return self.chunked


def mlp_shapes(dims: list[int]) -> list[tuple[int, ...]]:
    """Weight ``(out, in)`` and bias ``(out,)`` shapes of an MLP through ``dims``, in layer order."""
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(dims[:-1], dims[1:]):
        shapes += [(b, a), (b,)]
    return shapes


def functional_mlp(x: Tensor, weights: list[Tensor], act: Callable[[Tensor], Tensor] = F.silu) -> Tensor:
    """The target MLP with given ``[weight, bias, ...]``: ``act`` between layers (SiLU, as GaussianEnsemble's
    members, unless the config says otherwise)."""
    n_layers = len(weights) // 2
    for i in range(n_layers):
        x = F.linear(x, weights[2 * i], weights[2 * i + 1])
        if i < n_layers - 1:
            x = act(x)
    return x


def batched_functional_mlp(x: Tensor, weights: list[Tensor], act: Callable[[Tensor], Tensor] = F.silu) -> Tensor:
    """:func:`functional_mlp` for ``K`` tasks at once: ``x [K, n, in]`` and per-task stacked weights ``[K, out, in]``,
    biases ``[K, out]`` -> ``[K, n, out]``."""
    n_layers = len(weights) // 2
    for i in range(n_layers):
        w, b = weights[2 * i], weights[2 * i + 1]
        x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        if i < n_layers - 1:
            x = act(x)
    return x


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases in every Linear layer of ``module`` (HyperCRL's ``hnet_init``)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class HyperDynamics(nn.Module):
    """Predicts ``p(s' - s, r | s, a, task)`` with a target MLP whose weights a hypernetwork generates per task.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        config: architecture and regulariser settings.

    Optimiser: build a fresh Adam over ``parameters_for_optimizer()`` (or ``model.parameters()``, the same set)
    after every ``add_task``/``start_task``: embeddings added later are new parameters that an existing optimiser
    does not hold, and earlier tasks' embeddings stop requiring gradients unless ``config.plastic``.
    The log-variance bounds and input normaliser are shared by all tasks and not regularised (as HyperCRL's
    ``mlp_var_minmax``); set the normaliser once, from the first task's data (or, with
    ``config.normalize_per_task``, each task's own from its data: ``set_normalizer(obs, act, task)``).
    HyperCRL's two optimisers: :class:`HyperOptimizers` and :func:`train_two_optimizers`.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: HyperConfig = HyperConfig()):
        super().__init__()
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.out_dim = obs_dim + int(config.learn_reward)
        self.target_shapes = mlp_shapes([obs_dim + act_dim, *config.hidden_sizes, 2 * self.out_dim])
        self.n_weights = sum(math.prod(s) for s in self.target_shapes)
        self.task_embeddings = nn.ParameterList()
        self._build_hnet(config)
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5), requires_grad=config.train_logvar_bounds)
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0), requires_grad=config.train_logvar_bounds)
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        if config.normalize_per_task:  # one row per task, grown by add_task (absent otherwise: old states load)
            self.register_buffer("task_in_mean", torch.zeros(0, obs_dim + act_dim))
            self.register_buffer("task_in_std", torch.ones(0, obs_dim + act_dim))
        self._act = ACTIVATIONS[config.activation]
        # h(e_t; Theta*) for t < current task, recorded by start_task: [current_task, n_weights]
        self.register_buffer("reg_targets", torch.zeros(0, self.n_weights))
        self.register_buffer("current_task_id", torch.zeros((), dtype=torch.long))
        # inside frozen_weights(): every task's generated weights, made once, and the weights stacked per layer for
        # the last per-row ids (a planner asks with the same ids at every horizon step)
        self._frozen = 0
        self._cache: Tensor | None = None
        self._stacked_cache: tuple[tuple[int, ...], list[Tensor]] | None = None
        # the grouping of the last per-row ids (compared by value; it depends on no parameter)
        self._groups: tuple[Tensor, Any] | None = None

    def _build_hnet(self, config: HyperConfig) -> None:
        """The hypernetwork (ReLU MLP, as HyperCRL) and, when chunked, its chunk embeddings."""
        if config.chunked:
            n_chunks = math.ceil(self.n_weights / config.chunk_size)
            self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, config.chunk_embedding_size))
            in_dim, out_dim = config.embedding_size + config.chunk_embedding_size, config.chunk_size
        else:
            in_dim, out_dim = config.embedding_size, self.n_weights
        self.hnet = mlp(in_dim, config.hnet_hidden, out_dim, nn.ReLU)
        if config.init == "xavier":
            xavier_init(self.hnet)

    # ---- tasks -------------------------------------------------------------------------------------------------

    @property
    def n_tasks(self) -> int:
        """Number of task embeddings."""
        return len(self.task_embeddings)

    @property
    def current_task(self) -> int:
        """The task set by the last ``start_task`` (0 before any)."""
        return int(self.current_task_id)

    @property
    def predicts_reward(self) -> bool:
        """Whether the last output column is the reward (``config.learn_reward``)."""
        return self.config.learn_reward

    def add_task(self) -> int:
        """Append a new task embedding, drawn from N(0, 1) as HyperCRL's, and return its id."""
        device = self.max_logvar.device
        self.task_embeddings.append(nn.Parameter(torch.randn(self.config.embedding_size, device=device)))
        if self.config.normalize_per_task:
            self._grow_normalizers()
        return self.n_tasks - 1

    @torch.no_grad()
    def _grow_normalizers(self) -> None:
        """A new task's normaliser row: a copy of the last task's (the shared one's for the first), so the task
        plans sensibly before its first fit sets its own."""
        mean = self.task_in_mean[-1:] if len(self.task_in_mean) else self.in_mean[None]
        std = self.task_in_std[-1:] if len(self.task_in_std) else self.in_std[None]
        self.task_in_mean = torch.cat([self.task_in_mean, mean])
        self.task_in_std = torch.cat([self.task_in_std, std])

    @torch.no_grad()
    def start_task(self, task: int) -> None:
        """Make ``task`` the current one: snapshot ``h(e_t; Theta)`` of every task ``t < task`` as the regulariser's
        targets, and freeze those tasks' embeddings unless ``config.plastic``."""
        self._check_task(task)
        self.reg_targets = self.generate(torch.arange(task, device=self.in_mean.device)).detach().clone()
        self.current_task_id.fill_(task)
        self._set_plasticity()

    def _set_plasticity(self) -> None:
        """Embeddings of tasks before the current one train only when ``config.plastic``."""
        for t, emb in enumerate(self.task_embeddings):
            emb.requires_grad_(t >= self.current_task or self.config.plastic)

    def _check_task(self, task: int) -> None:
        if not 0 <= task < self.n_tasks:
            raise IndexError(f"task {task} out of range: the model has {self.n_tasks} tasks (add_task adds one)")

    def parameters_for_optimizer(self) -> list[nn.Parameter]:
        """Parameters to train now: hypernetwork, chunk embeddings, log-variance bounds (unless fixed) and the
        embeddings that require gradients (the current task's and later ones, and earlier ones when
        ``config.plastic``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The current task's embedding (empty before the first ``add_task``): HyperCRL's second optimiser."""
        return [self.task_embeddings[self.current_task]] if self.current_task < self.n_tasks else []

    def theta_parameters(self) -> list[nn.Parameter]:
        """Every parameter to train but the current task's embedding: HyperCRL's Theta optimiser (hypernetwork,
        chunk embeddings, earlier embeddings when plastic, the log-variance bounds when trained)."""
        current = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters_for_optimizer() if id(p) not in current]

    # ---- weight generation -------------------------------------------------------------------------------------

    def generate(self, tasks: Tensor) -> Tensor:
        """All target-net weights of each task, flat: ``tasks [K] -> [K, n_weights]``."""
        if tasks.numel() == 0:
            return self.reg_targets.new_zeros(0, self.n_weights)
        emb = torch.stack(list(self.task_embeddings))[tasks]
        return self._weights_from(emb, self.hnet, getattr(self, "chunk_embeddings", None))

    def _weights_from(self, emb: Tensor, hnet: Callable[[Tensor], Tensor], chunks: Tensor | None) -> Tensor:
        """Flat weights ``[K, n_weights]`` of embeddings ``emb [K, embedding_size]`` through ``hnet`` (and, chunked,
        the chunk embeddings ``chunks``)."""
        if not self.config.chunked:
            return hnet(emb)
        k, (n_chunks, _) = emb.shape[0], chunks.shape
        x = torch.cat([emb[:, None].expand(-1, n_chunks, -1), chunks.expand(k, -1, -1)], dim=-1)
        return hnet(x).reshape(k, -1)[:, : self.n_weights]  # concatenated chunks, cut to the weight count

    def generate_shifted(self, tasks: Tensor, delta: Mapping[int, Tensor]) -> Tensor:
        """:meth:`generate` with every parameter ``p`` moved to ``p + delta[id(p)]`` (those without a delta stay):
        the outputs one optimiser step ahead, for the look-ahead regulariser."""
        def moved(p: Tensor) -> Tensor:
            return p + delta[id(p)] if id(p) in delta else p

        emb = torch.stack([moved(e) for e in self.task_embeddings])[tasks]
        params = {name: moved(p) for name, p in self.hnet.named_parameters()}
        chunks = getattr(self, "chunk_embeddings", None)
        hnet = lambda x: torch.func.functional_call(self.hnet, params, (x,))  # noqa: E731
        return self._weights_from(emb, hnet, None if chunks is None else moved(chunks))

    def split_weights(self, flat: Tensor) -> list[Tensor]:
        """One task's flat weights ``[n_weights]`` as tensors of ``target_shapes``."""
        sizes = [math.prod(s) for s in self.target_shapes]
        return [w.view(s) for w, s in zip(flat.split(sizes), self.target_shapes)]

    def task_weights(self, task: int) -> list[Tensor]:
        """The target-net weights of ``task``, shaped as ``target_shapes``."""
        self._check_task(task)
        return self.split_weights(self._flat_weights([task])[0])

    @contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """Within this block, no-grad calls generate every task's weights once and reuse them: a planner's thousands
        of calls between two optimiser steps. The parameters must not change inside the block; outside it every call
        generates the weights from the current parameters, whatever changed them (the fused Adam step, for one, does
        not bump a parameter's ``_version``, so no cache keyed on it can be trusted). Blocks nest."""
        self._frozen += 1
        try:
            yield
        finally:
            self._frozen -= 1
            if not self._frozen:
                self._cache = self._stacked_cache = None

    def _flat_weights(self, tasks: list[int]) -> list[Tensor]:
        """Each task's flat weights ``[n_weights]``: generated now, or inside :meth:`frozen_weights` without autograd
        rows of a table of every task made once per block. Rows are taken by integer indexing: a view, where tensor
        indexing copies (and is slow on CPU)."""
        if torch.is_grad_enabled() or not self._frozen:
            flat = self.generate(torch.tensor(tasks, device=self.in_mean.device))
            return [flat[k] for k in range(len(tasks))]
        if self._cache is None or self._cache.shape[0] != self.n_tasks:
            self._cache = self.generate(torch.arange(self.n_tasks, device=self.in_mean.device))
        return [self._cache[t] for t in tasks]

    # ---- prediction --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def set_normalizer(self, obs: Tensor, act: Tensor, task: int | None = None) -> None:
        """Input normaliser from data: per-column mean and std of ``(s, a)``; with ``config.normalize_per_task``
        the one of ``task`` (required then)."""
        mean, std = input_scale(torch.cat([obs, act], dim=-1))
        if not self.config.normalize_per_task:
            self.in_mean.copy_(mean)
            self.in_std.copy_(std)
            return
        if task is None:
            raise ValueError("normalize_per_task: set_normalizer needs the task whose normaliser the data sets")
        self._check_task(task)
        self.task_in_mean[task] = mean
        self.task_in_std[task] = std

    def _normalize(self, x: Tensor, task: int | Tensor) -> Tensor:
        """``x`` scaled by the shared normaliser, or by each row's task's one (``normalize_per_task``)."""
        if not self.config.normalize_per_task:
            return (x - self.in_mean) / self.in_std
        return (x - self.task_in_mean[task]) / self.task_in_std[task]

    def forward(self, obs: Tensor, act: Tensor, task: Task) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``(s' - s[, r])``: each ``[1, B, out_dim]`` (one member).

        ``task``: one id for the whole batch, or a ``long`` tensor ``[B]`` of ids, one per row; rows are grouped
        by id and each group runs through its task's MLP (no per-row weights are materialised).
        """
        x = torch.cat([obs, act], dim=-1)
        if isinstance(task, Tensor) and task.dim() == 0:
            task = int(task)
        if isinstance(task, int):
            self._check_task(task)
            out = functional_mlp(self._normalize(x, task), self.task_weights(task), self._act)
        else:
            task = task.to(x.device, torch.long)
            out = self._forward_grouped(self._normalize(x, task), task)
        mean, raw_logvar = out.float().chunk(2, dim=-1)  # float32 under bf16-mixed autocast too
        return mean[None], bounded_logvar(raw_logvar, self.min_logvar, self.max_logvar)[None]

    def _forward_grouped(self, x: Tensor, tasks: Tensor) -> Tensor:
        """Target-net outputs ``[B, 2 out_dim]`` for rows with per-row task ids, one MLP call per distinct id."""
        if tasks.shape != x.shape[:1]:
            raise ValueError(f"per-row task ids must be [B] = [{x.shape[0]}], got {list(tasks.shape)}")
        ids, rows, order, back = self._grouping(tasks)
        flat = self._flat_weights(ids)
        if len(flat) == 1:  # one task in every row (a planner's usual call): no gather and scatter
            return functional_mlp(x, self.split_weights(flat[0]), self._act)
        if len({len(r) for r in rows}) == 1:  # equal groups (a batched evaluation's worlds): one product per layer
            out = batched_functional_mlp(x[order].view(len(rows), len(rows[0]), -1), self._stacked(ids, flat),
                                         self._act)
            out = out.flatten(0, 1)
        else:
            out = torch.cat([functional_mlp(x[r], self.split_weights(w), self._act) for r, w in zip(rows, flat)])
        return out.index_select(0, back)  # back to the input row order

    def _grouping(self, tasks: Tensor) -> tuple[list[int], list[Tensor], Tensor, Tensor]:
        """Distinct ids, each id's rows, the rows in group order and the permutation back; cached for no-grad calls
        with equal ids (compared by value: a planner asks with the same ids at every horizon step)."""
        cached = self._groups[0] if self._groups is not None else None
        fresh = cached is None or cached.shape != tasks.shape or not torch.equal(cached, tasks)
        if torch.is_grad_enabled() or fresh:
            ids = torch.unique(tasks)
            if ids.numel() and (ids[0] < 0 or ids[-1] >= self.n_tasks):
                raise IndexError(f"task ids {ids.tolist()} out of range: the model has {self.n_tasks} tasks")
            rows = [torch.nonzero(tasks == t).squeeze(1) for t in ids]
            order = torch.cat(rows)
            self._groups = (tasks.clone(), (ids.tolist(), rows, order, torch.argsort(order)))
        return self._groups[1]

    def _stacked(self, ids: list[int], flat: list[Tensor]) -> list[Tensor]:
        """The target weights of ``ids`` stacked per layer (``[K, out, in]``, ``[K, out]``); kept inside
        :meth:`frozen_weights` without autograd while the ids stay the same."""
        cacheable = self._frozen and not torch.is_grad_enabled()
        if cacheable and self._stacked_cache is not None and self._stacked_cache[0] == tuple(ids):
            return self._stacked_cache[1]
        layers = [torch.stack(per_task) for per_task in zip(*(self.split_weights(w) for w in flat))]
        if cacheable:
            self._stacked_cache = (tuple(ids), layers)
        return layers

    # ---- training ----------------------------------------------------------------------------------------------

    def regularizer(self, task: int | None = None, delta: Mapping[int, Tensor] | None = None) -> Tensor:
        """``beta * mean_{t < task} ||h(e_t; Theta) - h(e_t; Theta*)||^2`` (sum of squares over every generated
        weight, as HyperCRL); ``task`` defaults to the current one. Zero before the second task. ``delta`` (by
        ``id`` of the parameter) evaluates it at ``Theta + delta`` (HyperCRL's look-ahead)."""
        task = self.current_task if task is None else task
        if task > self.reg_targets.shape[0]:
            raise ValueError(f"no regulariser targets for tasks before {task}: call start_task({task}) first")
        if task == 0:
            return self.reg_targets.new_zeros(())
        tasks = torch.arange(task, device=self.reg_targets.device)
        out = self.generate(tasks) if delta is None else self.generate_shifted(tasks, delta)
        sq = ((out - self.reg_targets[:task]) ** 2).sum(dim=1)
        return self.config.reg_beta * sq.mean()

    def reg_scale(self, batch_size: int) -> int:
        """The regulariser's factor in the loss: 1, or the batch size with ``loss_reduction="sum"`` (HyperCRL's
        ``loss_reg * beta * Y.size(0)``, which keeps its weight relative to a summed NLL)."""
        return batch_size if self.config.loss_reduction == "sum" else 1

    def task_loss(self, batch: Mapping[str, Tensor], task: Task | None = None) -> tuple[Tensor, dict[str, float]]:
        """The loss of ``batch`` under ``task`` (default: the current one) without the regulariser: the Gaussian NLL
        (reduced as ``config.loss_reduction``), the log-variance bound penalty and ``output_bias_l1`` times the L1
        norm of the task's generated output bias. Metrics ``model/nll`` (0.5 * mean NLL whatever the reduction, so
        runs compare) and ``model/mse``."""
        task = self.current_task if task is None else task
        target = transition_targets(dict(batch), self.config.learn_reward)
        mean, logvar = self(batch["obs"], batch["action"], task)
        nll = gaussian_nll(mean, logvar, target).sum()
        fit = nll if self.config.loss_reduction == "mean" else summed_nll(mean, logvar, target)
        loss = fit + logvar_bound_penalty(self.min_logvar, self.max_logvar)
        if self.config.output_bias_l1:
            loss = loss + self.config.output_bias_l1 * self._output_biases(task).abs().sum()
        mse = ((mean - target) ** 2).mean()
        return loss, {"model/nll": nll.item(), "model/mse": mse.item()}

    def _output_biases(self, task: Task) -> Tensor:
        """The generated output-layer bias of ``task`` (each distinct task's, stacked, for per-row ids)."""
        ids = [task] if isinstance(task, int) else torch.as_tensor(task).unique().tolist()
        return torch.stack([self.task_weights(int(t))[-1] for t in ids])

    def loss(self, batch: Mapping[str, Tensor], task: Task | None = None) -> tuple[Tensor, dict[str, float]]:
        """:meth:`task_loss` + the regulariser over every task before the current one (times :meth:`reg_scale`).
        Metrics ``model/nll``, ``model/mse``, ``model/hnet_reg``."""
        loss, metrics = self.task_loss(batch, task)
        reg = self.regularizer()
        scale = self.reg_scale(len(batch["obs"]))
        if scale != 1:
            reg = reg * scale
        return loss + reg, {**metrics, "model/hnet_reg": reg.item()}

    def for_task(self, task: Task) -> HyperTaskView:
        """A :class:`~cadence.world_models.base.DynamicsModel` view bound to ``task`` (see :class:`HyperTaskView`)."""
        if isinstance(task, int):
            self._check_task(task)
        return HyperTaskView(self, task)

    # ---- state -------------------------------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        """Grow the task embeddings and the regulariser targets to the saved counts before loading, so a fresh model
        loads a state saved after any number of tasks (runs before the children load, also when nested)."""
        n_saved = sum(1 for k in state_dict if k.startswith(prefix + "task_embeddings."))
        while self.n_tasks < n_saved:
            self.add_task()
        targets = state_dict.get(prefix + "reg_targets")
        if targets is not None:
            self.reg_targets = self.reg_targets.new_zeros(targets.shape)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._set_plasticity()


def summed_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """HyperCRL's NLL: ``sum_{b,d} [(mu - y)^2 exp(-logvar) + logvar] / D`` (constants dropped, no 0.5)."""
    return (((mean - target) ** 2) * torch.exp(-logvar) + logvar).sum() / target.shape[-1]


@torch.no_grad()
def adam_lookahead(optimizer: torch.optim.Adam) -> dict[int, Tensor]:
    """The change ``optimizer.step()`` would make now to each parameter with a gradient, by ``id`` of the parameter,
    from the optimiser's state and the current gradients; nothing is changed. HyperCRL's ``calc_delta_theta`` for
    Adam, with PyTorch's own update (its copy puts ``eps`` before the bias correction of the second moment)."""
    out: dict[int, Tensor] = {}
    for group in optimizer.param_groups:
        if group.get("amsgrad") or group.get("maximize"):
            raise NotImplementedError("adam_lookahead: amsgrad and maximize are not supported")
        (beta1, beta2), lr, eps, decay = group["betas"], group["lr"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad if decay == 0 else p.grad + decay * p
            state = optimizer.state.get(p, {})
            step = float(state["step"]) + 1 if "step" in state else 1.0
            # two new tensors and in-place arithmetic: the hypernetwork's output layer has tens of millions of
            # parameters, and each temporary of that size costs as much as the arithmetic
            m = grad.mul(1 - beta1)
            v = grad.square().mul_(1 - beta2)
            if "exp_avg" in state:
                m.add_(state["exp_avg"], alpha=beta1)
                v.add_(state["exp_avg_sq"], alpha=beta2)
            denom = v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(eps)
            out[id(p)] = m.div_(denom).mul_(-(lr / (1 - beta1**step)))
    return out


class HyperOptimizers:
    """HyperCRL's two Adams (``hnet_exp.augment_model``): ``theta`` over :meth:`HyperDynamics.theta_parameters`,
    ``embedding`` over the current task's embedding (None before the first task). Build new ones after every
    ``start_task``, as HyperCRL does per task."""

    def __init__(self, model: HyperDynamics, lr: float):
        self.theta = adam(model.theta_parameters(), lr)
        embedding = model.embedding_parameters()
        self.embedding = adam(embedding, lr) if embedding else None

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.state_dict(),
                "embedding": None if self.embedding is None else self.embedding.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.theta.load_state_dict(state["theta"])
        if (state["embedding"] is None) != (self.embedding is None):
            raise ValueError("the saved optimisers and this model disagree on whether a task embedding is trained")
        if self.embedding is not None:
            self.embedding.load_state_dict(state["embedding"])


def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def two_optimizer_step(model: HyperDynamics, batch: Mapping[str, Tensor], optimizers: HyperOptimizers,
                       grad_clip: float | None) -> dict[str, float]:
    """One update as HyperCRL's ``hnet_exp.train``: backward of the task loss; the embedding's gradient clipped on
    its own and its Adam step (so it never sees the regulariser); then, from the second task, the regulariser
    (at ``Theta + dTheta`` with ``config.look_ahead``, dTheta the Adam step of the task loss's gradient) times
    :meth:`HyperDynamics.reg_scale` is backpropagated, Theta's gradient clipped and Theta stepped."""
    theta, embedding = optimizers.theta, optimizers.embedding
    theta.zero_grad(set_to_none=True)
    if embedding is not None:
        embedding.zero_grad(set_to_none=True)
    task_loss, metrics = model.task_loss(batch)
    task_loss.backward()
    if embedding is not None:
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(_params(embedding), grad_clip)
        embedding.step()
    reg = torch.zeros(())
    if model.current_task > 0 and model.config.reg_beta > 0:
        delta = adam_lookahead(theta) if model.config.look_ahead else None
        reg = model.regularizer(delta=delta) * model.reg_scale(len(batch["obs"]))
        reg.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(_params(theta), grad_clip)
    theta.step()
    return {**metrics, "model/hnet_reg": reg.item(), "model/loss": task_loss.item() + reg.item(),
            "model/penalty": 0.0}


def train_two_optimizers(model: HyperDynamics, data: Mapping[str, Tensor], steps: int, batch_size: int,
                         optimizers: HyperOptimizers, grad_clip: float | None,
                         generator: torch.Generator | None) -> dict[str, float]:
    """``steps`` of :func:`two_optimizer_step` on uniform batches of ``data``; the mean metrics (the keys of
    :func:`~cadence.world_models.continual.train_model_steps`)."""
    sums: dict[str, float] = {}
    for _ in range(steps):
        metrics = two_optimizer_step(model, sample_batch(data, batch_size, generator), optimizers, grad_clip)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: value / max(steps, 1) for key, value in sums.items()}


class HyperTaskView:
    """A :class:`HyperDynamics` bound to one task: a one-member :class:`~cadence.world_models.base.DynamicsModel`.

    ``task`` is an id, or a ``long`` tensor with one id per row (then every call's batch must have that many rows).
    The view holds no weights: each call generates them from the model's current parameters, so it sees later
    training. ``state_dict`` is the whole model's.
    """

    def __init__(self, model: HyperDynamics, task: Task):
        self.model, self.task = model, task
        self.obs_dim, self.act_dim = model.obs_dim, model.act_dim
        self.elites = torch.zeros(1, dtype=torch.long, device=model.in_mean.device)

    @property
    def predicts_reward(self) -> bool:
        """Whether the last output column is the reward."""
        return self.model.predicts_reward

    def __call__(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``(s' - s[, r])``: each ``[1, B, out_dim]``."""
        return self.model(obs, act, self.task)

    def predict(self, obs: Tensor, act: Tensor) -> torch.distributions.Normal:
        """The distribution over ``(s'[, r])``: batch shape ``[1, B, out_dim]``."""
        mean, logvar = self(obs, act)
        return next_state_normal(obs, mean, logvar, self.predicts_reward)

    def elite_mean(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean next state ``[B, obs_dim]`` and reward ``[B]`` (None without a reward)."""
        mean, _ = self(obs, act)
        return split_next_state(obs, mean[0], self.predicts_reward)

    def frozen_weights(self) -> Any:
        """The model's :meth:`HyperDynamics.frozen_weights` block."""
        return self.model.frozen_weights()

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The model's loss on ``batch`` under this view's task (regulariser included)."""
        return self.model.loss(batch, self.task)

    def state_dict(self) -> dict[str, Any]:
        """The whole model's state (every task)."""
        return self.model.state_dict()

    def parameters(self) -> Iterator[nn.Parameter]:
        """The model's parameters (for callers that build an optimiser from a model)."""
        return self.model.parameters()
