"""Recipes: per algorithm, how its env, agent and model are built and which loop trains them.

:func:`cadence.runs.train` looks a recipe up by name, calls its ``prepare`` (which validates inputs and builds
everything before the run folder is written), and runs what that returns. Adding an algorithm is adding a
:class:`Recipe` to :data:`RECIPES`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cadence.agents import MOBILE, MOPO, SAC, SRL, MOBILEConfig, MOPOConfig, SACConfig, SRLConfig
from cadence.agents.continual import STRATEGIES, ContinualModelBased, ContinualModelBasedConfig
from cadence.agents.oer import STRATEGIES as OFFLINE_STRATEGIES
from cadence.agents.oer import ContinualOffline, ContinualOfflineConfig
from cadence.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from cadence.config import ConfigError
from cadence.curricula import LAYOUT_TEACHERS, TEACHERS, CLUTRTeacher, layout_rvae, make_layout_teacher, make_teacher
from cadence.envs import check_env_id, make
from cadence.envs.batched import BatchedEnv
from cadence.envs.maze_tasks import LAYOUT_FAMILIES, layout_family_of
from cadence.envs.obs_rewards import obs_reward
from cadence.envs.tasks import FAMILIES, base_env_id, family_of
from cadence.envs.terminations import termination_fn
from cadence.evaluation.continual import summary
from cadence.loops import Hook, OfflineTrainConfig, TrainConfig, TrainState, fit_model, train_offline, train_online
from cadence.loops.continual import ContinualTrainConfig, train_continual
from cadence.loops.continual_offline import ContinualOfflineTrainConfig, train_continual_offline
from cadence.loops.curriculum import CriticRegret, PairedRegret, RegretSource, TeacherHook
from cadence.replay.datasets import OfflineDataset
from cadence.replay.sequences import sequence_datasets
from cadence.run_folder import DYNAMICS_REWARD, MODEL
from cadence.world_models import DynamicsReward, DynamicsRewardConfig, FilterConfig, GaussianEnsemble, TransitionFilter
from cadence.world_models.ensemble import model_bundle, model_from_bundle
from cadence.world_models.trainer import buffer_transitions

Callback = Callable[[TrainState], None]


@dataclass
class Prepared:
    """A run ready to start: everything is built and validated, nothing is written yet."""

    env_id: str
    """The env the run evaluates in (for metrics.json)."""
    run: Callable[[Path, bool, Iterable[Hook], Iterable[Callback]], TrainState]
    """``run(run_dir, resume, hooks, callbacks)`` trains in the (already created) run folder."""
    extra_metrics: Callable[[TrainState], dict[str, Any]] = lambda state: {}
    """What this recipe adds to metrics.json when the run closes."""


@dataclass(frozen=True)
class Recipe:
    """How the CLI and :mod:`cadence.runs` build and train one algorithm."""

    name: str
    agent_cls: type
    config_cls: type
    train_config_cls: type = TrainConfig
    """The [train] section: TrainConfig (online) or OfflineTrainConfig."""
    prepare: Callable[[Recipe, dict[str, Any]], Prepared] = field(default=None, repr=False)  # type: ignore[assignment]
    check: Callable[[dict[str, Any]], None] = field(default=lambda sections: None, repr=False)
    """Cheap checks of a resolved config that need no env or data loaded (a sweep runs them on every run before
    any starts); ``prepare`` runs them too."""

    @property
    def offline(self) -> bool:
        """Whether the recipe learns from a data set (``--dataset``) instead of an env."""
        return issubclass(self.train_config_cls, OfflineTrainConfig)

    @property
    def continual(self) -> bool:
        """Whether the recipe learns a task sequence (``--sequence``): online (model-based) or from one offline data
        set per task."""
        return issubclass(self.train_config_cls, (ContinualTrainConfig, ContinualOfflineTrainConfig))

    def env_defaults(self, env_id: str) -> dict[str, dict[str, Any]]:
        """Per-env settings that replace the algorithm's defaults (a user's config still wins over them)."""
        return {} if self.offline else ONLINE_ENV_DEFAULTS.get(env_id, {})

    def env_kwargs(self, config: Any) -> dict[str, Any]:
        """Keyword arguments for ``cadence.envs.make`` when training this agent.

        SAC-J repeats each action J times; SRL-J emits J actions that run open loop.
        """
        if hasattr(config, "sequence_length"):
            return {"decision_interval": config.sequence_length, "sequence": True}
        return {"decision_interval": getattr(config, "action_repeat", 1)}


#: Per-env defaults of the online recipes, as rl-baselines3-zoo keeps them: short tasks start learning sooner than
#: the 10k random steps that suit locomotion (benchmarks/srl_fas.py measured these settings).
ONLINE_ENV_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "InvertedPendulum-v5": {"agent": {"learning_starts": 1000}},
    "InvertedDoublePendulum-v5": {"agent": {"learning_starts": 1000}},
    "Reacher-v5": {"agent": {"learning_starts": 2000}},
    "Pendulum-v1": {"agent": {"learning_starts": 1000}},
}


# --- online: one env, or batched worlds --------------------------------------------------------------------------
def _check_env(env_id: str) -> None:
    try:
        check_env_id(env_id)
    except ValueError as e:
        raise ConfigError(f"train.env: {e}") from None


def check_online(sections: dict[str, Any]) -> None:
    """A known env, and a budget past the random warm-up."""
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    _check_env(train_cfg.env)
    if train_cfg.total_steps <= agent_cfg.learning_starts:
        raise ConfigError(f"train.total_steps={train_cfg.total_steps} is not above agent.learning_starts="
                          f"{agent_cfg.learning_starts}: the run would only take random actions and never learn. "
                          f"Raise --total-steps or lower it, e.g. --set agent.learning_starts="
                          f"{max(1, train_cfg.total_steps // 10)}")


def prepare_online(recipe: Recipe, sections: dict[str, Any]) -> Prepared:
    check_online(sections)
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    kwargs = recipe.env_kwargs(agent_cfg)
    fixed = fixed_task(train_cfg)  # {"task": ...} with train.task: every env of the run runs that task
    interval_env = make(train_cfg.env, **kwargs, **fixed)  # the agent acts at its own decision interval
    agent = recipe.agent_cls(interval_env.observation_space, interval_env.action_space, agent_cfg,
                             device=train_cfg.device)
    eval_env = make(train_cfg.env, **fixed)
    interval = kwargs["decision_interval"]
    if train_cfg.num_envs > 1:  # TrainConfig refuses train.task here: a BatchedEnv takes no task when built
        warp = train_cfg.backend == "warp"  # physics on train.device; the collector reads NumPy on the CPU
        env = BatchedEnv(train_cfg.env, train_cfg.num_envs, train_cfg.backend,
                         decision_interval=kwargs["decision_interval"], sequence=kwargs.get("sequence", False),
                         threads=max(1, train_cfg.torch_threads), autoreset=False,
                         physics_device=train_cfg.device if warp else None)
    else:
        env = make(train_cfg.env, **kwargs, **fixed)

    teacher = teacher_hook(train_cfg)
    if teacher is not None and isinstance(teacher.teacher, CLUTRTeacher):
        teacher.regret = clutr_regret(teacher.teacher.regret_kind, recipe, agent, sections, kwargs)

    def run(run_dir: Path, resume: bool, hooks: Iterable[Hook], callbacks: Iterable[Callback]) -> TrainState:
        hooks = [*hooks, teacher] if teacher is not None else hooks
        return train_online(agent, env, eval_env, train_cfg, run_dir, resume=resume, hooks=hooks, callbacks=callbacks,
                            eval_at_interval=(interval, interval_env) if interval > 1 else None)

    return Prepared(train_cfg.env, run)


def fixed_task(train_cfg: TrainConfig) -> dict[str, Any]:
    """``{"task": train.task}`` for :func:`cadence.envs.make`, checked against the env (``{}`` when unset): a task
    family's params or preset (range and names checked here), or a maze layout env's layout code. A plain env is
    refused with a :class:`ConfigError` (TrainConfig refuses a task beside a teacher or batched worlds)."""
    task, env_id = train_cfg.task, train_cfg.env
    if task is None:
        return {}
    found, layouts = family_of(env_id), layout_family_of(env_id)
    if found is None and layouts is None:
        families = ", ".join([*FAMILIES, *LAYOUT_FAMILIES])
        raise ConfigError(f"train.task={task!r} sets a task family's task, but {env_id} is a plain env without "
                          f"tasks; use a task-family env: {families}")
    try:
        if found is not None:
            found.resolve(task)
        elif isinstance(task, str):
            raise ValueError(f"{env_id}'s task is a maze layout's code (a list of numbers), not a name")
        else:
            layouts.layout(task)  # type: ignore[union-attr]
    except ValueError as e:
        raise ConfigError(f"train.task: {e}") from None
    return {"task": task}


def teacher_hook(train_cfg: TrainConfig) -> TeacherHook | None:
    """``train.teacher`` as a hook over the env's task space: a task family's box (returns mapped to [0, 1] over
    ``train.teacher_reward_range``, else the family's ``reward_range``) or a maze env's layouts (dr, clutr), with
    ``train.teacher_settings``. Refuses a teacher that does not fit the env, and an env without tasks."""
    if not train_cfg.teacher:
        return None
    name, env_id = train_cfg.teacher, train_cfg.env
    settings = dict(train_cfg.teacher_settings or {})
    if train_cfg.num_envs > 1 and name in LAYOUT_TEACHERS:
        raise ConfigError(f"train.teacher={name!r} runs on one maze env: set train.num_envs=1")
    layouts = layout_family_of(env_id)
    if layouts is not None:
        if name not in LAYOUT_TEACHERS:
            raise ConfigError(f"train.teacher={name!r} proposes parameters in a box, but {env_id}'s tasks are maze "
                              f"layouts: use {' or '.join(LAYOUT_TEACHERS)}")
        try:
            rvae = layout_rvae(layouts, train_cfg.teacher_rvae) if name == "clutr" else ""
        except (OSError, ValueError) as err:
            raise ConfigError(f"train.teacher_rvae: {err}") from err
        try:
            teacher = make_layout_teacher(name, layouts, seed=train_cfg.seed, rvae=rvae, **settings)
        except ValueError as err:  # the RVAE is loaded: what is left to refuse is a setting
            raise ConfigError(f"train.teacher_settings: {err}") from err
        return TeacherHook(teacher, layouts)
    found = family_of(env_id)
    if found is None:
        families = ", ".join([*FAMILIES, *LAYOUT_FAMILIES])
        raise ConfigError(f"train.teacher={name!r} chooses task parameters, but {env_id} has none; "
                          f"use a task-family env: {families}")
    if name not in TEACHERS:
        raise ConfigError(f"train.teacher={name!r} proposes maze layouts; {env_id} takes parameters in a box: use "
                          f"one of {', '.join(TEACHERS)} (or {name} on {', '.join(LAYOUT_FAMILIES)})")
    reward_range = train_cfg.teacher_reward_range or found.reward_range
    if reward_range is None and TEACHERS[name].needs_reward_range:
        raise ConfigError(f"train.teacher={name!r} compares returns across tasks, and {env_id} has no reward_range: "
                          "set train.teacher_reward_range = [low, high], the episode returns of a failing and of a "
                          "solved task")
    try:
        teacher = make_teacher(name, found.param_space.low, found.param_space.high, seed=train_cfg.seed,
                               reward_range=reward_range, **settings)
    except ValueError as err:  # the name and the reward range are checked: what is left to refuse is a setting
        raise ConfigError(f"train.teacher_settings: {err}") from err
    return TeacherHook(teacher, found)


def clutr_regret(kind: str, recipe: Recipe, agent: Any, sections: dict[str, Any],
                 env_kwargs: dict[str, Any]) -> RegretSource:
    """Where CLUTR's teacher takes its regret from (``train.teacher_settings.regret``): ``paired``, an antagonist
    built as the protagonist (same algorithm and settings, its own env, weights and replay); ``pvl`` or ``maxmc``,
    an estimate from the protagonist's critic (SAC only)."""
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    if kind == "paired":
        env = make(train_cfg.env, **env_kwargs)
        antagonist = recipe.agent_cls(env.observation_space, env.action_space, agent_cfg, device=train_cfg.device)
        return PairedRegret(antagonist, env, seed=train_cfg.seed + 1, device=train_cfg.device)
    if not isinstance(agent, SAC):
        raise ConfigError(f"train.teacher_settings.regret={kind!r} reads a SAC critic, and {recipe.name} is not SAC: "
                          "use regret = 'paired'")
    return CriticRegret(kind)


# --- offline model-based: data set, fitted model, MOREC's filter -------------------------------------------------
def check_offline(sections: dict[str, Any], name: str = "this algo") -> None:
    """A data set is named, and it is there (its contents are read and checked when the run starts)."""
    from cadence.replay.datasets import DatasetError, available_hint, locate_dataset

    train_cfg = sections["train"]
    if train_cfg.env:
        _check_env(train_cfg.env)
    if not train_cfg.dataset:
        raise ConfigError(f"{name} learns from a data set: set train.dataset (--dataset NAME); {available_hint()}")
    try:
        locate_dataset(train_cfg.dataset)
    except DatasetError as e:
        raise ConfigError(str(e)) from None


def check_continual(sections: dict[str, Any]) -> None:
    _check_env(sections["train"].env)


def prepare_offline(recipe: Recipe, sections: dict[str, Any]) -> Prepared:
    """MOPO / MOBILE: the data set (validated against the env), then at run time the fitted model (kept in
    checkpoints/model.pt), MOREC's filter if asked, and the offline loop."""
    from cadence.evaluation.scores import normalized_score
    from cadence.replay import load_dataset

    check_offline(sections, recipe.name)
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    data = load_dataset(train_cfg.dataset)
    env_id = train_cfg.env or str(data.metadata.get("env_id", ""))
    if not env_id:
        raise ConfigError(f"data set {train_cfg.dataset!r} does not name its env; set train.env")
    eval_env = make(env_id)
    data.validate(eval_env.observation_space.shape, eval_env.action_space.shape)
    real = data.to_buffer(device=train_cfg.device)
    agent = recipe.agent_cls(eval_env.observation_space, eval_env.action_space, agent_cfg, device=train_cfg.device)
    obs_dim, act_dim = eval_env.observation_space.shape[0], eval_env.action_space.shape[0]
    name = train_cfg.dataset
    score: Callable[[float], float] | None = lambda ret: float(
        normalized_score(name if name.startswith("d4rl:") else env_id, ret))
    try:
        score(0.0)  # type: ignore[misc]
    except ValueError:  # no reference scores for this env yet: log returns only
        score = None

    def run(run_dir: Path, resume: bool, hooks: Iterable[Hook], callbacks: Iterable[Callback]) -> TrainState:
        if checkpoint_path(run_dir, MODEL).is_file():  # fitted before (this run, or the run it resumes)
            model = load_model(run_dir, env_id, device=train_cfg.device)
        else:
            model, fit = fit_model(real, obs_dim, act_dim, max_epochs=train_cfg.model_max_epochs, seed=train_cfg.seed)
            save_checkpoint(run_dir, {"algo": recipe.name, "model": model_bundle(model), "fit": fit, "env": env_id},
                            MODEL)
        choose = None
        if agent_cfg.morec:  # MOREC: a dynamics reward learned on the data against this model filters rollouts
            choose = morec_filter(run_dir, recipe.name, real, model, train_cfg.seed, agent_cfg.morec_fit_steps,
                                  agent_cfg.morec_threshold_quantile, agent_cfg.morec_early_termination)
        return train_offline(agent, real, model, eval_env, termination_fn(env_id, eval_env), train_cfg, run_dir,
                             choose=choose, resume=resume, score=score, hooks=hooks, callbacks=callbacks)

    def extra(state: TrainState) -> dict[str, Any]:
        if score is None:
            return {"dataset": name}
        return {"dataset": name, "final_normalized_score": score(state.evals[-1][1])}

    return Prepared(env_id, run, extra)


def morec_filter(run_dir: Path, algo: str, real: Any, model: GaussianEnsemble, seed: int, steps: int,
                 quantile: float, early_termination: bool = True) -> Callable[[torch.Generator], TransitionFilter]:
    """MOREC's transition filter (made with the loop's generator, so resume stays exact); its dynamics reward and
    threshold are fitted once and kept in checkpoints/dynamics_reward.pt (without early termination the threshold
    is -inf)."""
    device = next(model.parameters()).device  # the reward lives beside the model it judges
    if checkpoint_path(run_dir, DYNAMICS_REWARD).is_file():
        reward, config = load_dynamics_reward(run_dir, model.obs_dim, model.act_dim, device=device)
    else:
        reward = DynamicsReward(model.obs_dim, model.act_dim, DynamicsRewardConfig(steps=steps), device=device)
        generator = torch.Generator(device=device).manual_seed(seed)  # it draws batches on the data's device
        fit = reward.fit(real, model, generator=generator)
        config = FilterConfig()
        if quantile > 0:  # calibrate on (up to) 10k of the data's own (s, a) pairs
            data = buffer_transitions(real)
            rows = torch.randperm(len(data["obs"]), generator=generator, device=device)[:10_000]
            filt = TransitionFilter(model, reward, config, generator)
            config = filt.calibrated(data["obs"][rows], data["action"][rows], quantile).config
        save_checkpoint(run_dir, {"algo": algo, "dynamics_reward": reward.state_dict(), "fit": fit,
                                  "threshold": config.threshold, "threshold_quantile": quantile}, DYNAMICS_REWARD)
        print(f"MOREC dynamics reward: mean {fit['model/dr_reward_data']:.3f} on data, "
              f"{fit['model/dr_reward_model']:.3f} on model samples; rollouts end below {config.threshold:.3f}")
    if not early_termination:  # the ablation: the same reward and choice, no rollout ends early
        config = FilterConfig(threshold=float("-inf"))
    return lambda generator: TransitionFilter(model, reward, config, generator)


def load_dynamics_reward(run_dir: str | Path, obs_dim: int, act_dim: int,
                         device: str | torch.device = "cpu") -> tuple[DynamicsReward, FilterConfig]:
    """A MOREC run's fitted dynamics reward (``checkpoints/dynamics_reward.pt``) and its filter settings."""
    saved = load_checkpoint(run_dir, DYNAMICS_REWARD, required=("dynamics_reward", "threshold"))
    reward = DynamicsReward(obs_dim, act_dim, device=device)
    reward.load_state_dict(saved["dynamics_reward"])
    return reward, FilterConfig(threshold=saved["threshold"])


def load_model(run_dir: str | Path, env_id: str | None = None,
               device: str | torch.device = "cpu") -> GaussianEnsemble:
    """An offline run's fitted dynamics model (``checkpoints/model.pt``) with the sizes it was saved with; refused
    if fitted for another env."""
    saved = load_checkpoint(run_dir, MODEL, required=("model", "env"))
    if env_id is not None and saved["env"] != env_id:
        raise CheckpointError(f"{checkpoint_path(run_dir, MODEL)} holds a model of {saved['env']}, but this run "
                              f"evaluates in {env_id}; use another run folder")
    try:
        return model_from_bundle(saved["model"], device=device)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{checkpoint_path(run_dir, MODEL)} does not hold a loadable model: {e}") from None


# --- continual model-based: a task sequence, one dynamics learner, CEM-MPC --------------------------------------
#: model updates per fit when neither train.model_steps nor the agent's model_updates_per_step is set
DEFAULT_MODEL_STEPS = 200


@dataclass(frozen=True)
class ContinualModelBasedTrainConfig(ContinualTrainConfig):
    """The continual model-based loop's ``[train]``, whose ``model_steps`` may be left to the agent's preset."""

    model_steps: int | None = None  # type: ignore[assignment]
    """Model updates per fit; None: agent.model_updates_per_step x train_every where the agent's preset sets that
    ratio (2000 per 1000 steps with agent.preset=reference), else 200."""

    def __post_init__(self) -> None:
        steps = self.model_steps
        if steps is None:  # the base class checks a number; None is resolved with the agent's config
            object.__setattr__(self, "model_steps", DEFAULT_MODEL_STEPS)
        super().__post_init__()
        object.__setattr__(self, "model_steps", steps)


def continual_model_steps(train_cfg: Any, agent_cfg: ContinualModelBasedConfig) -> int:
    """Model updates per fit: train.model_steps as set, else the agent's updates-per-step ratio x train_every, else
    :data:`DEFAULT_MODEL_STEPS`."""
    if train_cfg.model_steps is not None:
        return int(train_cfg.model_steps)
    ratio = agent_cfg.option("model_updates_per_step")
    return DEFAULT_MODEL_STEPS if ratio is None else max(1, round(ratio * train_cfg.train_every))


def prepare_continual(recipe: Recipe, sections: dict[str, Any]) -> Prepared:
    """HyperCRL and its baselines (``mbrl-<strategy>``) over ``train.sequence``."""
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    train_cfg = dataclasses.replace(train_cfg, model_steps=continual_model_steps(train_cfg, agent_cfg))
    env = make(train_cfg.env)
    strategy = "hypercrl" if recipe.name == "hypercrl" else recipe.name.removeprefix("mbrl-")
    learner = ContinualModelBased(env.observation_space, env.action_space, strategy, agent_cfg,
                                  termination_fn=termination_fn(base_env_id(train_cfg.env), env),
                                  device=train_cfg.device, seed=train_cfg.seed)
    learner.set_true_reward(obs_reward(train_cfg.env, env))

    def run(run_dir: Path, resume: bool, hooks: Iterable[Hook], callbacks: Iterable[Callback]) -> TrainState:
        return train_continual(learner, train_cfg, run_dir, resume=resume, hooks=hooks, callbacks=callbacks)

    def extra(state: TrainState) -> dict[str, Any]:
        return {"sequence": train_cfg.sequence, "continual": continual_metrics(learner)}

    return Prepared(train_cfg.env, run, extra)


def continual_metrics(learner: ContinualModelBased) -> dict[str, Any]:
    """The summary metrics of the run's two continual records, once every task is learned."""
    return {name: summary(record) for name, record in learner.records.items()}


# --- continual offline: one data set per task (OER and its baselines) --------------------------------------------
def prepare_continual_offline(recipe: Recipe, sections: dict[str, Any]) -> Prepared:
    """OER and its baselines over the collected data sets of ``train.sequence`` (``train.dataset_kind``)."""
    train_cfg, agent_cfg = sections["train"], sections["agent"]
    env = make(train_cfg.env)
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    try:
        files = sequence_datasets(train_cfg.sequence, train_cfg.dataset_kind)
        datasets = [OfflineDataset.load_hdf5(f, obs_shape, act_shape) for f in files]
    except (OSError, ValueError) as err:
        raise ConfigError(str(err)) from err
    rows = sum(len(d) for d in datasets)
    if agent_cfg.memory > rows:
        raise ConfigError(f"agent.memory={agent_cfg.memory} is larger than the sequence's data ({rows} transitions "
                          f"in {len(files)} data sets): nothing would ever be forgotten; lower it")
    data = [dataset_tensors(d, task, train_cfg.device) for task, d in enumerate(datasets)]
    learner = ContinualOffline(env.observation_space, env.action_space, len(files), recipe.name, agent_cfg,
                               device=train_cfg.device, seed=train_cfg.seed)
    reference = sequence_reference(train_cfg.sequence)

    def run(run_dir: Path, resume: bool, hooks: Iterable[Hook], callbacks: Iterable[Callback]) -> TrainState:
        torch.manual_seed(train_cfg.seed)
        return train_continual_offline(learner, data, train_cfg, run_dir, reference=reference, resume=resume,
                                       hooks=hooks, callbacks=callbacks)

    def extra(state: TrainState) -> dict[str, Any]:
        return {"sequence": train_cfg.sequence, "datasets": [str(f) for f in files],
                "continual": continual_metrics(learner)}

    return Prepared(train_cfg.env, run, extra)


def dataset_tensors(data: OfflineDataset, task: int, device: str) -> dict[str, torch.Tensor]:
    """A data set's transitions as the learner's tensors (obs, action, reward, next_obs, terminated, episode_start,
    task_id); rows whose task id is not ``task`` are refused."""
    buffer = data.to_buffer(device=device)
    fields = {k: buffer.storage[k][: len(buffer)] for k in ("obs", "action", "reward", "next_obs", "terminated",
                                                            "episode_start", "task_id")}
    if (fields["task_id"] != task).any():
        raise ConfigError(f"{data.source} holds rows of tasks {torch.unique(fields['task_id']).tolist()}, but it is "
                          f"task {task}'s data set of its sequence")
    return fields


def sequence_reference(sequence: str) -> list[tuple[float, float]] | None:
    """Each task's (random, expert) return, from the sequence's collected random and expert data sets' metadata;
    None unless all are there (the run then records returns only)."""
    try:
        pairs = zip(sequence_datasets(sequence, "random"), sequence_datasets(sequence, "expert"), strict=True)
    except ValueError:
        return None
    out = []
    for random_file, expert_file in pairs:
        low, high = (OfflineDataset.load_hdf5(f).metadata.get("reference_return") for f in (random_file, expert_file))
        if low is None or high is None or not float(high) > float(low):
            return None
        out.append((float(low), float(high)))
    return out


RECIPES: dict[str, Recipe] = {
    "sac": Recipe("sac", SAC, SACConfig, TrainConfig, prepare_online, check_online),
    "srl": Recipe("srl", SRL, SRLConfig, TrainConfig, prepare_online, check_online),
    "mopo": Recipe("mopo", MOPO, MOPOConfig, OfflineTrainConfig, prepare_offline, check_offline),
    "mobile": Recipe("mobile", MOBILE, MOBILEConfig, OfflineTrainConfig, prepare_offline, check_offline),
    **{name: Recipe(name, ContinualModelBased, ContinualModelBasedConfig, ContinualModelBasedTrainConfig,
                    prepare_continual, check_continual)
       for name in ("hypercrl", *(f"mbrl-{s}" for s in STRATEGIES if s != "hypercrl"))},
    **{name: Recipe(name, ContinualOffline, ContinualOfflineConfig, ContinualOfflineTrainConfig,
                    prepare_continual_offline, check_continual) for name in OFFLINE_STRATEGIES},
}


def recipe(name: str) -> Recipe:
    """The recipe of ``name``; an unknown name raises ``ValueError`` listing the close matches."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown algo {name!r}{hint}; available: {', '.join(RECIPES)}")
    return RECIPES[name]
