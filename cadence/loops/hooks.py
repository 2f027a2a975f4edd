"""Hooks: small objects that act inside a training loop at named events.

A hook subclasses :class:`Hook` and overrides the events it needs; each receives the loop's
:class:`LoopContext` (agent, envs, buffer, logger, counters). ``on_episode_start`` may return task
parameters, which the loop passes to the env's reset as ``options["task"]``. A hook's ``state_dict`` is
saved in every checkpoint under its :attr:`Hook.name`, and restored before ``on_resume``.

Task switches, curriculum teachers, continual evaluation and early stops are hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadence.logging import RunLogger
    from cadence.loops.common import LoopConfig, TrainState


class HookError(RuntimeError):
    """A hook raised: names the hook, the event and the episode. The original error is its ``__cause__``."""


@dataclass
class LoopContext:
    """What a hook may read (and, for ``stop``, write) during a run."""

    agent: Any
    env: Any
    """The training env: a Gymnasium env, a BatchedEnv, or None for offline loops."""
    eval_env: Any
    """The plain env (decision interval 1) evaluations run in."""
    buffer: Any
    logger: RunLogger
    state: TrainState
    config: LoopConfig
    run_dir: Path
    stop: bool = False
    """Set by a hook to end the run after the current step (its bookkeeping is finished first)."""
    eval_at_interval: tuple[int, Any] | None = None
    """``(J, env)``: also evaluate at the agent's own decision interval J > 1, in an env made with it."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Loop-specific objects (the offline loop's model, for example)."""


class Hook:
    """Base class: every event does nothing; override the ones you need."""

    @property
    def name(self) -> str:
        """The key of this hook's state in checkpoints; unique within a run."""
        return type(self).__name__

    def on_run_start(self, ctx: LoopContext) -> None:
        """A new run is about to take its first step."""

    def on_resume(self, ctx: LoopContext) -> None:
        """A run was restored from its checkpoint (this hook's state included)."""

    def on_episode_start(self, ctx: LoopContext, world: int) -> Any:
        """World ``world`` is about to reset; return task parameters for that reset, or None."""
        return None

    def on_episode_end(self, ctx: LoopContext, world: int, episode_return: float, task: Any) -> None:
        """World ``world`` ended an episode of ``task`` (what ``on_episode_start`` returned) with this return."""

    def on_step(self, ctx: LoopContext) -> None:
        """One loop iteration is done (one decision of every world, or one offline gradient step)."""

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        """A periodic evaluation of the deterministic policy finished."""

    def state_dict(self) -> dict[str, Any]:
        """What the hook needs to continue exactly after a resume; stateless hooks keep nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (called before ``on_resume``); stateless hooks have nothing to do."""


class Hooks:
    """Calls every hook's event in order; a hook that raises stops the run with a :class:`HookError`."""

    def __init__(self, hooks: Iterable[Hook] = ()):
        self.hooks = list(hooks)
        names = [h.name for h in self.hooks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"hook names must be unique (their checkpoint keys); repeated: {', '.join(duplicated)}")

    def _call(self, event: str, ctx: LoopContext, *args: Any, world: int | None = None,
              episode: int | None = None) -> list[Any]:
        """Call ``event`` on every hook; ``episode`` (default: the next one) and ``world`` go into errors."""
        results = []
        for hook in self.hooks:
            try:
                results.append(getattr(hook, event)(ctx, *args))
            except Exception as e:
                episode = ctx.state.episodes + 1 if episode is None else episode
                where = f"episode {episode}" + (f" of world {world}" if world is not None else "")
                raise HookError(f"hook {hook.name} failed in {event} at step {ctx.state.step}, {where}: "
                                f"{type(e).__name__}: {e}") from e
        return results

    def run_start(self, ctx: LoopContext) -> None:
        self._call("on_run_start", ctx)

    def resume(self, ctx: LoopContext) -> None:
        self._call("on_resume", ctx)

    def episode_start(self, ctx: LoopContext, world: int) -> tuple[Any, str | None]:
        """The task for world ``world``'s next episode and the name of the hook that chose it (the last hook
        that returns one wins), or ``(None, None)``."""
        chosen = [(t, h.name) for t, h in zip(self._call("on_episode_start", ctx, world, world=world), self.hooks,
                                                strict=True) if t is not None]
        return chosen[-1] if chosen else (None, None)

    def start_episodes(self, ctx: LoopContext, worlds: list[int],
                       reset: Callable[[list[int], list[Any]], None]) -> None:
        """Ask the hooks for each world's task, then ``reset(worlds, tasks)``; an env that rejects a hook's task
        stops the run with a :class:`HookError` naming that hook."""
        if not worlds:
            return
        chosen = [self.episode_start(ctx, w) for w in worlds]
        try:
            reset(worlds, [task for task, _ in chosen])
        except Exception as e:
            sources = sorted({name for _, name in chosen if name is not None})
            if not sources:
                raise
            raise HookError(f"the env rejected the task that hook {', '.join(sources)} chose for episode "
                            f"{ctx.state.episodes + 1} at step {ctx.state.step}: {type(e).__name__}: {e}") from e

    def episode_end(self, ctx: LoopContext, world: int, episode_return: float, task: Any) -> None:
        self._call("on_episode_end", ctx, world, episode_return, task, world=world, episode=ctx.state.episodes)

    def step(self, ctx: LoopContext) -> None:
        self._call("on_step", ctx)

    def eval(self, ctx: LoopContext, mean_return: float) -> None:
        self._call("on_eval", ctx, mean_return)

    def state_dict(self) -> dict[str, Any]:
        return {h.name: h.state_dict() for h in self.hooks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for hook in self.hooks:
            if hook.name in state:
                hook.load_state_dict(state[hook.name])


class StopOnReturn(Hook):
    """Ends the run at the first evaluation whose mean return reaches ``threshold`` (``train.stop_return``)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        if mean_return >= self.threshold:
            ctx.stop = True


class PolicySnapshots(Hook):
    """Keeps the deployable policy of every evaluation as ``checkpoints/agent_<step>.pt`` (``train.snapshots``)."""

    def __init__(self, save: Callable[[LoopContext], None]):
        self.save = save

    def on_eval(self, ctx: LoopContext, mean_return: float) -> None:
        self.save(ctx)


class StepCallback(Hook):
    """A plain function called with the counters after every loop iteration (an exception stops the run)."""

    def __init__(self, callback: Callable[[TrainState], None], index: int = 0):
        self.callback, self.index = callback, index

    @property
    def name(self) -> str:
        return f"StepCallback{self.index}"

    def on_step(self, ctx: LoopContext) -> None:
        self.callback(ctx.state)
