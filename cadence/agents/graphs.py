"""A whole gradient update as one captured CUDA graph, with the eager update as reference and fallback.

On a GPU, a soft actor-critic update on a batch of 256 launches a few hundred tiny kernels: it is bound by the
launch overhead and by host syncs, not by arithmetic. :class:`GraphedUpdate` records the update (losses, backward
passes, fused Adam steps, Polyak averaging) once per batch signature as a ``torch.cuda.CUDAGraph`` and then
replays it: one launch per update.

* Static inputs: each batch is copied into tensors the graph reads (their addresses never change).
* Warm-up: the update first runs a few times on a side stream, as PyTorch requires (it creates the optimiser
  states, cuBLAS workspaces and autograd buffers outside the graph), with host syncs made errors. Everything
  an update changes (parameters, buffers, optimiser states, the CUDA generator) is saved before and written
  back after, in place, so capturing changes nothing.
* Capture: the optimisers are marked capturable while the update is recorded. Random draws are graph-safe:
  each replay advances the CUDA generator as the eager update would, so a replay from the same generator state
  draws the same numbers.
* Check: one replay is compared with one eager update from the same state before the graph is used.
  A mismatch or any exception on the way restores the state, warns once and leaves the agent on eager updates.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

Metrics = dict[str, torch.Tensor]
#: one update on a batch; returns 0-dim metric tensors and must not sync with the host
Step = Callable[[dict[str, torch.Tensor]], Mapping[str, Any]]

#: warm-up updates before capture (PyTorch's whole-network example uses 3)
WARMUP = 3
#: graphs kept per agent (one per batch shape and autocast setting); past that, updates run eagerly
MAX_GRAPHS = 4
#: relative difference allowed between the checked replay and the eager update (cuBLAS may pick other kernels)
TOLERANCE = 1e-3
#: optimiser flags that describe how this process steps, not what was learned: kept when a state is loaded
RUNTIME_FLAGS = ("capturable", "fused", "foreach", "differentiable")


def metric_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics (0-dim tensors on any device, or numbers) as floats, with one host sync for all the tensors."""
    tensors = [v.detach().float().reshape(()) for v in metrics.values() if isinstance(v, torch.Tensor)]
    values = iter(torch.stack(tensors).tolist() if tensors else [])
    return {k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in metrics.items()}


class Backend(Protocol):
    """What capture needs from the device: CUDA's streams, graphs and generator (tests substitute an eager one)."""

    def rng_state(self) -> torch.Tensor: ...

    def set_rng_state(self, state: torch.Tensor) -> None: ...

    def warmup(self) -> contextlib.AbstractContextManager[None]: ...

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]: ...

    def replay(self, graph: Any) -> None: ...

    def recover(self) -> None: ...


class CudaBackend:
    """The real backend on one CUDA device: warm-up and capture on one side stream, replay on the current one."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream: torch.cuda.Stream | None = None

    def rng_state(self) -> torch.Tensor:
        return torch.cuda.get_rng_state(self.device)

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.cuda.set_rng_state(state, self.device)

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        self.stream = self.stream or torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")  # a host sync cannot be captured: fail here, before capture
        try:
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
                yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            current.wait_stream(self.stream)

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        graph = torch.cuda.CUDAGraph()
        previous = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
                out = fn()
        except BaseException:
            torch.cuda.set_stream(previous)  # a capture_end that raised left the capture stream current
            raise
        return graph, out

    def replay(self, graph: Any) -> None:
        graph.replay()

    def recover(self) -> None:
        """Before torch 2.13 a capture that failed part-way leaves the device's generator marked as capturing, and
        every later random draw raises. If a draw fails, give the generator a fresh state object with the same
        seed and offset (the graphs captured with the old one are dropped)."""
        try:
            torch.empty(1, device=self.device).normal_()
        except RuntimeError:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            default = torch.cuda.default_generators[index]
            fresh = torch.Generator(device=self.device)
            fresh.set_state(default.get_state())
            default.graphsafe_set_state(fresh)


def backend_for(device: torch.device) -> Backend:
    """The capture backend of ``device`` (a seam for tests, which run the same steps eagerly on the CPU)."""
    return CudaBackend(device)


class Snapshot:
    """A copy of everything an update changes; :meth:`restore` writes it back in place, never rebinding a tensor a
    graph reads. Optimiser states created after the snapshot are zeroed on restore: a zero Adam state with step 0
    steps exactly as a fresh one."""

    def __init__(self, tensors: Sequence[torch.Tensor], optimizers: Sequence[torch.optim.Optimizer], backend: Backend):
        self.tensors, self.optimizers, self.backend = list(tensors), list(optimizers), backend
        self.saved = [t.detach().clone() for t in self.tensors]
        self.states = [{p: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                        for p, s in opt.state.items()} for opt in self.optimizers]
        self.rng = backend.rng_state()

    @torch.no_grad()
    def restore(self) -> None:
        for t, saved in zip(self.tensors, self.saved):
            t.copy_(saved)
        for opt, saved in zip(self.optimizers, self.states):
            for p, state in opt.state.items():
                for k, v in state.items():
                    if isinstance(v, torch.Tensor):
                        v.copy_(saved[p][k]) if p in saved and k in saved[p] else v.zero_()
            opt.zero_grad(set_to_none=True)  # gradients a failed capture allocated hold garbage
        self.backend.set_rng_state(self.rng)
        torch.clear_autocast_cache()

    def current(self) -> list[torch.Tensor]:
        """Copies of the tensors and optimiser states as they are now (to compare two ways of updating)."""
        states = [v for opt in self.optimizers for s in opt.state.values() for v in s.values()
                  if isinstance(v, torch.Tensor)]
        return [t.detach().clone() for t in [*self.tensors, *states]]


@dataclass
class Captured:
    """One captured update: its graph, the static batch it reads and the stacked metrics it writes."""

    graph: Any
    inputs: dict[str, torch.Tensor]
    outputs: torch.Tensor
    names: tuple[str, ...]


class GraphCaptureFailed(RuntimeError):
    """The captured update could not be recorded or did not match the eager update."""


class GraphedUpdate:
    """Runs ``step`` as a replayed CUDA graph, capturing one per batch signature on first use.

    Args:
        step: one whole update on a batch, returning 0-dim metric tensors, free of host syncs.
        modules: every module the update changes or reads (their parameters and buffers are saved around warm-up).
        optimizers: the update's optimisers.
        tensors: other tensors the update changes (log alpha).
        device: the CUDA device of all of them.
        name: the agent's name, for the warning.
    """

    def __init__(self, step: Step, modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer],
                 tensors: Sequence[torch.Tensor], device: torch.device, name: str):
        self.step, self.optimizers, self.name, self.device = step, list(optimizers), name, device
        self.tensors = [*{id(t): t for m in modules for t in [*m.parameters(), *m.buffers()]}.values(), *tensors]
        self.backend = backend_for(device)
        self.graphs: dict[tuple, Captured] = {}
        self.failed = False

    @property
    def captured(self) -> bool:
        """Whether some graph reads the agent's tensors (then its state must be loaded in place)."""
        return bool(self.graphs)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> Metrics | None:
        """One update by graph replay, its metrics as 0-dim tensors; None when the caller must update eagerly."""
        if self.failed:
            return None
        key = self._signature(batch)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                return None
            entry = self._capture_or_fall_back(batch, key)
            if entry is None:
                return None
        with torch.no_grad():
            torch._foreach_copy_(list(entry.inputs.values()), [batch[k] for k in entry.inputs])
        self.backend.replay(entry.graph)
        out = entry.outputs.clone()  # the next replay overwrites the static outputs
        return {name: out[i] for i, name in enumerate(entry.names)}

    def invalidate(self) -> None:
        """Drop every graph (after a state whose hyperparameters differ was loaded); the next update recaptures."""
        self.graphs.clear()

    # --- capture ---------------------------------------------------------------------------------------------
    def _signature(self, batch: Mapping[str, torch.Tensor]) -> tuple:
        autocast = (torch.is_autocast_enabled(self.device.type), torch.get_autocast_dtype(self.device.type))
        return (*((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items())), autocast)

    def _capture_or_fall_back(self, batch: Mapping[str, torch.Tensor], key: tuple) -> Captured | None:
        snapshot = Snapshot(self.tensors, self.optimizers, self.backend)
        try:
            entry = self._capture(batch, snapshot)
        except Exception as error:  # noqa: BLE001 - any failure means: no graph, eager updates
            self.backend.recover()
            snapshot.restore()
            self.failed = True
            self.graphs.clear()
            warnings.warn(f"{self.name}: CUDA graph capture failed, so every update runs eagerly "
                          f"({type(error).__name__}: {error})", RuntimeWarning, stacklevel=4)
            return None
        self.graphs[key] = entry
        return entry

    def _capture(self, batch: Mapping[str, torch.Tensor], snapshot: Snapshot) -> Captured:
        inputs = {k: v.detach().to(self.device, copy=True).contiguous() for k, v in sorted(batch.items())}
        names: tuple[str, ...] = ()

        def stacked() -> torch.Tensor:
            nonlocal names
            metrics = self.step(inputs)
            names = tuple(metrics)
            for k, v in metrics.items():
                if not isinstance(v, torch.Tensor):
                    raise GraphCaptureFailed(f"metric {k!r} is a {type(v).__name__}, not a device tensor")
            return torch.stack([v.detach().float().reshape(()) for v in metrics.values()])

        with self.backend.warmup():
            for _ in range(WARMUP):
                stacked()
        snapshot.restore()
        flags = [g.get("capturable", False) for opt in self.optimizers for g in opt.param_groups]
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["capturable"] = True  # checked by step() during capture; the fused kernels ignore it
        try:
            graph, outputs = self.backend.capture(stacked)
        finally:
            for g, flag in zip((g for opt in self.optimizers for g in opt.param_groups), flags):
                g["capturable"] = flag
            snapshot.restore()  # a real capture ran nothing; this drops its autocast cache and gradient handles
        entry = Captured(graph, inputs, outputs, names)
        self._check(entry, snapshot)
        return entry

    def _check(self, entry: Captured, snapshot: Snapshot) -> None:
        """One eager update and one replay from the same state must agree; the state is restored after both."""
        eager = torch.stack([v.detach().float().reshape(()) for v in self.step(entry.inputs).values()])
        eager_state = snapshot.current()
        snapshot.restore()
        self.backend.replay(entry.graph)
        replay, replay_state = entry.outputs.clone(), snapshot.current()
        snapshot.restore()
        differences = [_relative(a, b) for a, b in zip([replay, *replay_state], [eager, *eager_state])]
        bad = [d for d in differences if not d <= TOLERANCE]  # NaN included
        if len(replay_state) != len(eager_state) or bad:
            raise GraphCaptureFailed(f"the replayed update differs from the eager one (relative difference "
                                     f"{f'{bad[0]:.3g}' if bad else 'in size'})")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / max(||b||, 1e-6), in float64 (NaN when either is not finite)."""
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-6))


def load_optimizer_in_place(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> bool:
    """``optimizer.load_state_dict(state)``, but its state tensors keep their storage, since a captured graph reads
    them; a state missing from ``state`` is zeroed (a fresh Adam state). Returns False when a hyperparameter the
    graphs baked in (lr, betas, ...) changed, so they must be captured again."""
    live = {p: optimizer.state[p] for g in optimizer.param_groups for p in g["params"] if p in optimizer.state}
    before = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(copy.deepcopy(state))
    same = True
    for group, old in zip(optimizer.param_groups, before):
        group.update({k: old[k] for k in RUNTIME_FLAGS if k in old})
        same &= all(_equal(group.get(k), v) for k, v in old.items())
    with torch.no_grad():
        for p, old_state in live.items():
            new_state = optimizer.state[p] if p in optimizer.state else {}
            for k, v in old_state.items():
                if isinstance(v, torch.Tensor):
                    v.copy_(new_state[k]) if k in new_state else v.zero_()
            optimizer.state[p] = {**new_state, **old_state}
    return same


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and bool(torch.equal(a.cpu(), b.cpu()))
    return a == b
