"""The MuJoCo Warp backend: every world in one ``mjw.Data``, stepped by a recorded graph on a Warp device.

Warp's CPU device runs it anywhere (for correctness: it is slower than ``rollout`` per world-step); a CUDA GPU is
what it is for. Import cost and the first kernel compile (60-200 s, then cached) stay out of the rest of cadence:
:func:`cadence.envs.batched.backends.warp_backend` imports this module only when ``backend="warp"`` is asked for.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mujoco
import mujoco_warp as mjw
import numpy as np
import torch
import warp as wp

from cadence.envs.batched.backends import RESET_FIELDS, DeviceUnavailable, ModelBackend, cached
from cadence.envs.batched.warp_contacts import use_mujoco_plane_capsule_frame
from cadence.envs.rewards import DataRead, PhysicsStep
from cadence.envs.tasks import TaskFamily

#: where compiled kernels go unless WARP_CACHE_PATH or CADENCE_WARP_CACHE says otherwise; a stable folder, so CI
#: runs on one machine reuse it (Warp appends its version)
DEFAULT_KERNEL_CACHE = Path("~/.cache/cadence/warp")

#: Model fields MuJoCo Warp keeps once for all worlds that a variant may still change, with why that is harmless
UNUSED_UNBATCHED: dict[str, tuple[Callable[[mujoco.MjModel], bool], str]] = {
    "dof_length": (lambda m: not m.opt.enableflags & mujoco.mjtEnableBit.mjENBL_SLEEP,
                   "only sleeping reads it, and sleep is off"),
}

#: the per-world Data a step starts from (besides ctrl, written every step); a world keeps these when it sits out
STATE_FIELDS = RESET_FIELDS[1:]

_initialized = False


def init_warp() -> str:
    """Start Warp once per process, its kernel cache in a stable folder and its load messages off, with MuJoCo's
    plane-capsule contact frame (:mod:`cadence.envs.batched.warp_contacts`; ``CADENCE_WARP_NATIVE_CONTACTS=1``
    keeps MuJoCo Warp's own); returns the cache folder."""
    global _initialized
    if not _initialized:
        if os.environ.get("CADENCE_WARP_NATIVE_CONTACTS", "0") in ("", "0"):
            try:
                use_mujoco_plane_capsule_frame()
            except RuntimeError as err:
                warnings.warn(f"{err}: the warp backend keeps MuJoCo Warp's plane-capsule contact frame, so steep "
                              "capsules on a plane (Ant's legs) get other friction directions than in rollout",
                              RuntimeWarning, stacklevel=2)
        if wp.config.kernel_cache_dir is None and "WARP_CACHE_PATH" not in os.environ:
            folder = os.environ.get("CADENCE_WARP_CACHE") or str(DEFAULT_KERNEL_CACHE.expanduser())
            wp.config.kernel_cache_dir = folder
        wp.config.quiet = True
        wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)  # no line per kernel module loaded
        wp.init()
        _initialized = True
    return str(wp.config.kernel_cache_dir)


def warp_device(device: str | torch.device) -> tuple[str, torch.device]:
    """Warp's device and torch's for ``device``: ``cpu`` is Warp's CPU device, ``cuda[:k]`` a GPU."""
    init_warp()
    dev = torch.device(device)
    if dev.type == "cpu":
        return "cpu", dev
    if dev.type != "cuda":
        raise ValueError(f"the warp backend runs on device='cpu' or 'cuda', not {str(device)!r}")
    if not wp.is_cuda_available() or not torch.cuda.is_available():
        missing = "Warp" if not wp.is_cuda_available() else "torch"
        raise DeviceUnavailable(f"backend='warp' with device={str(device)!r} needs a CUDA GPU, and {missing} sees "
                                "none; use device='cpu' (Warp's CPU device: correct, but slower than rollout) or "
                                "backend='rollout' (mujoco.rollout on CPU threads)")
    index = 0 if dev.index is None else dev.index
    return f"cuda:{index}", torch.device("cuda", index)


# --- model fields ---------------------------------------------------------------------------------------------------
def _fields(obj: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every field of a Warp Model (nested ones as ``opt.gravity``): ``name -> (owner, field)``."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (obj, f)
    return out


def _batchable(field: Any) -> bool:
    """Whether MuJoCo Warp reads this field per world (its array spec starts with ``*``: any leading size)."""
    shape = getattr(field.type, "shape", ())
    return bool(shape) and shape[0] == "*"


def _host(value: Any) -> Any:
    """A field's value, comparable on the host."""
    if isinstance(value, wp.array):
        return value.numpy()
    if isinstance(value, (tuple, list)):
        return tuple(_host(v) for v in value)
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)


def model_values(model: mujoco.MjModel) -> dict[str, tuple[Any, bool]]:
    """``name -> (host value, batchable)`` of every Warp Model field built from ``model`` (on Warp's CPU device,
    so comparing variants costs no GPU memory)."""
    with wp.ScopedDevice("cpu"):
        warp_model = mjw.put_model(model)
    return {name: (_host(getattr(owner, f.name)), _batchable(f)) for name, (owner, f) in _fields(warp_model).items()}


class WarpBackend(ModelBackend):
    """Every world in one MuJoCo Warp ``Data`` on a Warp device; observations, rewards and terminations by the
    same torch functions as ``rollout``, on ``wp.to_torch`` views of Warp's arrays (no copies).

    - **The step** (``frame_skip`` physics steps, plus ``rne_postconstraint`` where the task reads ``cfrc_ext``) is
      recorded once with ``wp.ScopedCapture`` (at the second step: the first launches directly, loading the
      kernels, which must not load inside a recording) and replayed with ``wp.capture_launch``; controls go into
      ``d.ctrl`` in place. Reallocating a model array (a field that starts to vary per world) drops the graph and
      the next step records it again. If recording fails, steps launch the kernels directly (one warning).
    - **Subsets.** ``step(idx, ...)`` steps every world (a graph has one shape) and puts the worlds outside
      ``idx`` back to their state before (:data:`STATE_FIELDS`; their task reads are kept aside), so they do not
      move. Worlds sitting out cost physics time: with mixed decision intervals, the short ones wait.
    - **Resets** draw Gymnasium's seeded initial states on the host (:meth:`ModelBackend._initial_states`: a seed
      gives rollout's and Gymnasium's initial state)
      and write the reset worlds' rows into the device arrays with one indexed copy per field.
    - **Per-world models and tasks** go through MuJoCo Warp's batched model fields: Warp's arrays whose spec
      leads with ``*`` may hold one row per world. A field a world's model changes becomes ``[n_worlds, ...]``
      and the world's row is written; a field Warp holds once for all worlds (not batchable) raises an error
      naming it, except :data:`UNUSED_UNBATCHED`.
    - **Precision.** Warp computes in float32 (rollout in float64): worlds agree to ~1e-6 at first and drift
      apart where contacts amplify rounding (docs/ARCHITECTURE.md lists the measured bounds).
    - A contact or constraint buffer overflow in any world raises (its numbers would be wrong).
    """

    name = "warp"

    #: contacts and constraint rows allocated per world (MuJoCo Warp's own guesses are raised to these)
    CONTACTS_PER_GEOM = 4
    ROWS_PER_CONTACT = 6

    def __init__(self, env_id: str, n_worlds: int, env_kwargs: dict | None = None,
                 models: Sequence[mujoco.MjModel] | None = None, family: TaskFamily | None = None,
                 device: str | torch.device = "cpu", capture: bool = True):
        self.wp_device, self.device = warp_device(device)
        super().__init__(env_id, n_worlds, env_kwargs, models, family)
        source = self.models[0]  # the Warp model is built from world 0's; other worlds' differences batch
        self._source = model_values(source)
        self._values: dict[int, tuple[mujoco.MjModel, dict[str, tuple[Any, bool]]]] = {id(source): (source,
                                                                                                   self._source)}
        self._batched: dict[str, torch.Tensor] = {}  # field -> [n, ...] view of its per-world array
        self._graph: Any = None
        self._capture = capture
        self._loaded = False  # kernels load at the first (direct) step; recording comes after, so none loads inside
        ncon = max(16, self.CONTACTS_PER_GEOM * source.ngeom)
        nrows = self.ROWS_PER_CONTACT * ncon + 2 * source.njnt + 6 * source.neq + 16
        with wp.ScopedDevice(self.wp_device):
            self.m = mjw.put_model(source)
            data = mujoco.MjData(source)
            mujoco.mj_forward(source, data)
            self.d = mjw.put_data(source, data, nworld=n_worlds, nconmax=ncon, njmax=nrows)
        view = lambda name: wp.to_torch(getattr(self.d, name))
        self._state = {name: view(name) for name in STATE_FIELDS}
        self._qpos, self._qvel, self._ctrl = view("qpos"), view("qvel"), view("ctrl")
        self._overflow = view("overflow")
        self._reads = [self._reader(r, source) for r in self.physics.reads]
        self._postconstraint = any(r.field == "cfrc_ext" for r in self.physics.reads)
        self.reads = torch.zeros((n_worlds, self.read_size), dtype=torch.float32, device=self.device)
        self._task_tensor: torch.Tensor | None = None
        for world, model in enumerate(self.models):
            if model is not source:
                self._apply_model(world, model, f"the model of world {world}")
        wp.synchronize_device(self.wp_device)  # Warp's copies land before torch touches the views

    # --- per-world models -------------------------------------------------------------------------------------
    def set_task(self, world: int, params: np.ndarray) -> None:
        super().set_task(world, params)
        self._task_tensor = None
        self._apply_model(world, self.models[world], f"task {np.asarray(params).tolist()} of {self.family.name}")

    def _values_of(self, model: mujoco.MjModel) -> dict[str, tuple[Any, bool]]:
        # world 0's values stay in self._source; the cache keeps the model, so its id stays its own
        return cached(self._values, id(model), lambda: (model, model_values(model)), self.MODEL_CACHE + 1)[1]

    def _apply_model(self, world: int, model: mujoco.MjModel, what: str) -> None:
        """Give ``world`` the Warp model fields of ``model``: rows of batched fields, batching those it changes."""
        values = self._values_of(model)
        for name, (value, batchable) in values.items():
            if name not in self._batched:
                if _same(value, self._source[name][0]):
                    continue
                if not batchable:
                    unused = UNUSED_UNBATCHED.get(name)
                    if unused is not None and unused[0](model):
                        continue  # harmless here (see UNUSED_UNBATCHED)
                    raise ValueError(f"{what} changes the model field {name}, which MuJoCo Warp holds once for all "
                                     f"worlds (it cannot batch it); run it with backend='rollout'")
                self._batch(name)
            row = torch.as_tensor(np.asarray(value)[0])
            target = self._batched[name]
            target[world] = row.to(device=target.device, dtype=target.dtype)

    def _batch(self, name: str) -> None:
        """Make model field ``name`` one row per world (copies of its shared value); the graph records again."""
        owner, f = _fields(self.m)[name]
        old = getattr(owner, f.name)
        with wp.ScopedDevice(self.wp_device):
            rows = np.repeat(old.numpy()[:1], self.n, axis=0)
            new = wp.array(rows, dtype=old.dtype, shape=(self.n, *old.shape[1:]))
        new._is_batched = True  # what mjw.put_model marks on its batched arrays
        self._graph = None  # it holds the old array's address
        setattr(owner, f.name, new)
        self._batched[name] = wp.to_torch(new)
        wp.synchronize_device(self.wp_device)

    # --- physics ----------------------------------------------------------------------------------------------
    def _reader(self, read: DataRead, model: mujoco.MjModel) -> Callable[[torch.Tensor | slice], torch.Tensor]:
        """``rows -> [m, k]``: one task read from the Data's arrays, as :meth:`DataRead.read` takes it from MjData."""
        if read.field == "cfrc_ext":
            array = wp.to_torch(self.d.cfrc_ext)
            return lambda rows: array[rows, 1:].flatten(1)
        if read.field in ("xpos", "site_xpos"):
            array = wp.to_torch(getattr(self.d, read.field))
            index = model.body(read.name).id if read.field == "xpos" else model.site(read.name).id
            return lambda rows: array[rows, index]
        array, dof = wp.to_torch(self.d.qfrc_constraint), int(model.joint(read.name).dofadr[0])
        return lambda rows: array[rows, dof:dof + 1]

    def _step_kernels(self) -> None:
        for _ in range(self.physics.frame_skip):
            mjw.step(self.m, self.d)
        if self._postconstraint:  # cfrc_ext, as Gymnasium computes it after every step
            mjw.rne_postconstraint(self.m, self.d)

    def _launch(self) -> None:
        """One primitive step of every world: the recorded graph (recorded first if needed), else direct launches."""
        with wp.ScopedDevice(self.wp_device):
            cuda = self.device.type == "cuda"
            if cuda:  # Warp's stream waits for torch's writes (controls, resets), and torch's reads for the step
                torch_stream, warp_stream = wp.stream_from_torch(self.device), wp.get_stream(self.wp_device)
                warp_stream.wait_stream(torch_stream)
            if self._graph is None and self._capture and self._loaded:
                self._record()
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._step_kernels()
                self._loaded = True
            if cuda:
                torch_stream.wait_stream(warp_stream)

    def _record(self) -> None:
        try:
            with wp.ScopedCapture(force_module_load=False) as capture:
                self._step_kernels()
            self._graph = capture.graph
        except Exception as e:  # noqa: BLE001 - any failure: launch directly, the same numbers
            self._capture = False
            warnings.warn(f"MuJoCo Warp could not record the step as a graph ({type(e).__name__}: {e}); this env "
                          "launches its kernels directly from now on (the same numbers, slower)", RuntimeWarning,
                          stacklevel=5)

    def _physics_step(self, rows: torch.Tensor | slice, before: torch.Tensor, reads_before: torch.Tensor,
                      action: torch.Tensor) -> PhysicsStep:
        task = None
        if self.tasks is not None:
            if self._task_tensor is None:
                self._task_tensor = torch.as_tensor(self.tasks, dtype=torch.float32).to(self.device)
            task = self._task_tensor[rows]
        return PhysicsStep(qpos_before=before, qpos=self._qpos[rows], qvel=self._qvel[rows], action=action,
                           reads=self.reads[rows], reads_before=reads_before, dt=self.dt, task=task)

    def _rows(self, idx: np.ndarray) -> torch.Tensor | slice:
        """Index of worlds ``idx``: a slice (views, no copies) when every world is meant."""
        if len(idx) == self.n and (idx == np.arange(self.n)).all():
            return slice(None)
        return torch.as_tensor(idx, dtype=torch.long, device=self.device)

    def reset(self, idx: np.ndarray, seeds: Sequence[int]) -> torch.Tensor:
        rows = self._rows(np.asarray(idx))
        initial, reads = self._initial_states(idx, seeds)
        host = {**{name: initial[name] for name in STATE_FIELDS}, "reads": reads}
        for name, target in (*self._state.items(), ("reads", self.reads)):
            values = torch.as_tensor(host[name], dtype=target.dtype).to(self.device)
            target[rows] = values.reshape(target[rows].shape)
        nu = self.action_space.shape[0]
        action = torch.zeros((len(idx), nu), dtype=torch.float32, device=self.device)
        return self.physics.observe(self._physics_step(rows, self._qpos[rows], self.reads[rows], action))

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self._rows(np.asarray(idx))
        action = torch.as_tensor(np.asarray(actions), dtype=torch.float32).to(self.device)
        self._ctrl[rows] = action
        before, reads_before = self._qpos[rows], self.reads[rows]
        if isinstance(rows, slice):  # views: the step overwrites them
            before, reads_before = before.clone(), reads_before.clone()
        resting = None
        if not isinstance(rows, slice):  # the others sit out: keep their state and put it back after the step
            resting = torch.ones(self.n, dtype=torch.bool, device=self.device)
            resting[rows] = False
            resting = resting.nonzero().squeeze(1)
            kept = {name: view[resting].clone() for name, view in self._state.items()}
        self._launch()
        if resting is not None:
            for name, view in self._state.items():
                view[resting] = kept[name]
        self._check_overflow()
        if self._reads:
            self.reads[rows] = torch.cat([read(rows) for read in self._reads], dim=1)
        step = self._physics_step(rows, before, reads_before, action)
        return self.physics.observe(step), self.physics.reward(step), self.physics.terminated(step)

    def _check_overflow(self) -> None:
        """Raise if a world ran out of contact or constraint rows: its step dropped constraints."""
        flags = int(self._overflow.max())
        if flags:
            worlds = self._overflow.nonzero().squeeze(1).tolist()
            raise RuntimeError(f"MuJoCo Warp's buffers overflowed ({mjw.OverflowType(flags)!r}) in worlds "
                               f"{worlds[:10]}: their contacts or constraints were dropped. Raise "
                               "WarpBackend.CONTACTS_PER_GEOM / ROWS_PER_CONTACT, or use backend='rollout'")

    # --- state ------------------------------------------------------------------------------------------------
    def physics_state(self) -> dict:
        state = {name: view.detach().cpu().numpy().copy() for name, view in self._state.items()}
        return {"backend": self.name, **state, "ctrl": self._ctrl.cpu().numpy().copy(),
                "reads": self.reads.cpu().numpy().copy()}

    def load_physics_state(self, state: dict) -> None:
        if state.get("backend") != self.name:
            raise ValueError(f"this env state was saved by the {state.get('backend', 'rollout')} backend; the warp "
                             "backend restores only its own")
        if state["qpos"].shape[0] != self.n:
            raise ValueError(f"env state holds {state['qpos'].shape[0]} worlds, this env has {self.n}")
        for name, view in (*self._state.items(), ("ctrl", self._ctrl), ("reads", self.reads)):
            view.copy_(torch.as_tensor(state[name]).to(device=self.device, dtype=view.dtype))

    def close(self) -> None:
        self._graph = None
        super().close()
