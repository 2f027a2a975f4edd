"""Task families (cadence.envs.tasks): physics edits, make / BatchedEnv, torch rewards against Gymnasium, sequences."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from cadence.envs import (
    FAMILIES,
    SEQUENCES,
    base_env_id,
    episode_state,
    family,
    known_env_ids,
    make,
    resolve_sequence,
    set_episode_state,
    spec,
)
from cadence.envs.batched import BatchedEnv
from cadence.envs.batched.episodes import task_returns
from cadence.envs.rewards import supports, task_physics
from cadence.envs.terminations import termination_fn
from cadence.evaluation.fas import _sweep_settings, env_family

# BatchedEnv returns float32; Gymnasium float64 (as in test_batched.py)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def close(got, want, msg: str = "") -> None:
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), err_msg=msg, **TOL)


def model_fields(model) -> dict[str, np.ndarray]:
    """Every numeric array of an MjModel, and every numeric field of its ``opt`` and ``stat``."""
    fields = {}
    for name in dir(model):
        value = getattr(model, name, None) if not name.startswith("_") else None
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            fields[name] = value.copy()
    for struct in ("opt", "stat"):
        for name in dir(getattr(model, struct)):
            value = getattr(getattr(model, struct), name)
            if not name.startswith("_") and isinstance(value, (int, float, np.ndarray)):
                fields[f"{struct}.{name}"] = np.array(value)
    return fields


def changed(base, edited) -> set[str]:
    a, b = model_fields(base), model_fields(edited)
    assert a.keys() == b.keys()
    return {k for k in a if not np.array_equal(a[k], b[k])}


BASE_MODELS: dict[str, object] = {}


def base_model(env_id: str):
    if env_id not in BASE_MODELS:
        BASE_MODELS[env_id] = gym.make(env_id).unwrapped.model
    return BASE_MODELS[env_id]


# --- physics edits -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_task_changes_only_the_declared_fields(name):
    fam = FAMILIES[name]
    base = base_model(fam.base_env)
    tasks = [*fam.presets, *(fam.sequences[fam.default_sequence]), fam.param_space.low, fam.param_space.high]
    for task in tasks:
        diff = changed(base, fam.model_for(base, task))
        assert diff <= set(fam.changes), f"{name} task {task!r} also changed {sorted(diff - set(fam.changes))}"
    assert not changed(base, fam.model_for(base, fam.default_task))  # every default task is the unchanged env


def test_gravity_friction_and_torso_mass_each_change_their_own_physics():
    fam, base = family("HopperPhysics"), base_model("Hopper-v5")
    assert changed(base, fam.model_for(base, "low-gravity")) == {"opt.gravity"}
    np.testing.assert_allclose(fam.model_for(base, "low-gravity").opt.gravity, 0.6 * base.opt.gravity)
    assert changed(base, fam.model_for(base, "slippery")) == {"geom_friction"}
    np.testing.assert_allclose(fam.model_for(base, "slippery").geom_friction, 0.3 * base.geom_friction)
    heavy = fam.model_for(base, "heavy-torso")
    torso = base.body("torso").id
    ratio = heavy.body_mass / np.where(base.body_mass > 0, base.body_mass, 1)
    np.testing.assert_allclose(ratio[torso], 1.75)
    np.testing.assert_allclose(np.delete(ratio, torso)[1:], 1.0)  # other bodies keep their mass
    np.testing.assert_allclose(heavy.body_inertia[torso], 1.75 * base.body_inertia[torso])
    assert heavy.body_subtreemass[0] > base.body_subtreemass[0]  # the derived constants follow the mass


def test_big_parts_grow_both_legs_geoms_and_their_mass():
    fam, base = family("HalfCheetahBody-v0"), base_model("HalfCheetah-v5")
    big = fam.model_for(base, "bigthigh")
    for geom in ("bthigh", "fthigh"):
        i = base.geom(geom).id
        np.testing.assert_allclose(big.geom_size[i, :2], 1.25 * base.geom_size[i, :2])
        body = base.geom_bodyid[i]
        share = lambda m, b=body: m.body_mass[b] / m.body_mass.sum()  # noqa: E731
        assert share(big) > share(base)  # heavier relative to the rest
    others = [base.geom(g).id for g in ("torso", "head", "bshin", "fshin", "bfoot", "ffoot")]
    np.testing.assert_array_equal(big.geom_size[others], base.geom_size[others])
    assert big.body_mass.sum() == pytest.approx(14.0)  # half_cheetah.xml's settotalmass, as in HyperCRL's tasks
    torso = fam.model_for(base, "bigtorso").geom_size[base.geom("torso").id]
    np.testing.assert_allclose(torso[:2], [1.25 * 0.046, 0.5])  # radius x1.25; length from fromto, unchanged


def test_pusher_object_mass_scales_the_armature_that_resists_pushing():
    fam, base = family("PusherObject-v0"), base_model("Pusher-v5")
    heavy = fam.model_for(base, "heavy")
    obj = base.body("object").id
    assert heavy.body_mass[obj] == pytest.approx(3 * base.body_mass[obj])
    dofs = [base.joint(j).dofadr[0] for j in ("obj_slidex", "obj_slidey")]
    np.testing.assert_allclose(heavy.dof_armature[dofs], 3 * base.dof_armature[dofs])
    assert changed(base, fam.model_for(base, "slippery")) == {"geom_friction"}


# --- make and single envs ------------------------------------------------------------------------------------------
def test_make_sets_the_task_and_reset_options_change_it():
    env = make("HalfCheetahBody-v0", task="bigthigh", decision_interval=2)
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["task"], [1, 1.25, 1, 1])
    bthigh = env.unwrapped.model.geom("bthigh").id
    assert env.unwrapped.model.geom_size[bthigh, 0] == pytest.approx(1.25 * 0.046)
    _, info = env.reset(seed=1, options={"task": [1, 1, 1, 1.5]})  # through the decision wrapper
    np.testing.assert_array_equal(info["task"], [1, 1, 1, 1.5])
    assert env.unwrapped.model.geom_size[bthigh, 0] == pytest.approx(0.046)
    _, info = env.reset(seed=2)  # a plain reset keeps the task
    np.testing.assert_array_equal(info["task"], [1, 1, 1, 1.5])
    _, _, _, _, info = env.step(env.action_space.sample())
    np.testing.assert_array_equal(info["task"], [1, 1, 1, 1.5])
    np.testing.assert_array_equal(make("CheetahVel-v0").reset()[1]["task"], [0.5])  # default: first of the sequence


def test_family_env_equals_gymnasium_in_the_same_physics():
    # HopperPhysics "normal" is Hopper-v5 exactly; CheetahVel's reward is recomputed from Gymnasium's step info
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 3)).astype(np.float32)  # as make's wrapper casts
    fam_env, plain = make("HopperPhysics-v0"), gym.make("Hopper-v5")
    np.testing.assert_array_equal(fam_env.reset(seed=3)[0], plain.reset(seed=3)[0])
    for a in actions:
        got, want = fam_env.step(a), plain.step(a)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1]
    vel, cheetah = make("CheetahVel-v0", task=[2.0]), gym.make("HalfCheetah-v5")
    vel.reset(seed=0), cheetah.reset(seed=0)
    _, reward, _, _, info = vel.step(np.full(6, 0.5))
    _, _, _, _, base_info = cheetah.step(np.full(6, 0.5))
    assert reward == pytest.approx(-abs(base_info["x_velocity"] - 2.0) - 0.1 * 6 * 0.25)


def test_episode_state_keeps_the_task():
    env = make("HopperPhysics-v0", task="low-gravity")
    env.reset(seed=5)
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 3))
    for a in actions[:5]:
        env.step(a)
    state = episode_state(env)
    resumed = make("HopperPhysics-v0")  # default task: normal gravity
    set_episode_state(resumed, state)
    np.testing.assert_allclose(resumed.unwrapped.model.opt.gravity, env.unwrapped.model.opt.gravity)
    for a in actions[5:]:
        want, got = env.step(a), resumed.step(a)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[4]["task"], [0.6, 1.0, 1.0])


# --- batched worlds ------------------------------------------------------------------------------------------------
BATCHED_CASES = {
    "HalfCheetahBody-v0": ["bigthigh", "smallfoot", [1.5, 0.8, 1.2, 1.0]],
    "HalfCheetahMotor-v0": ["reversed-back", "reversed", [0.5, -0.7]],
    "HopperPhysics-v0": ["low-gravity", "heavy-torso", "slippery"],
    "Walker2dPhysics-v0": ["high-gravity", [0.8, 1.5, 1.3]],
    "CheetahVel-v0": [[0.5], [2.5]],
    "AntDir-v0": ["left", [2.5]],
}


@pytest.mark.parametrize("env_id", list(BATCHED_CASES))
def test_batched_family_worlds_equal_gymnasium_in_their_tasks(env_id):
    tasks, seed, steps = BATCHED_CASES[env_id], 3, 25
    batched = BatchedEnv(env_id, len(tasks), autoreset=False, threads=1)
    refs = [make(env_id, task=t) for t in tasks]
    close(batched.reset(seed, tasks=tasks), [r.reset(seed=seed + i)[0] for i, r in enumerate(refs)])
    space = refs[0].action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (steps, len(tasks), *space.shape))
    live = np.ones(len(tasks), bool)
    for t in range(steps):
        obs, reward, terminated, _, _ = batched.step(torch.as_tensor(actions[t], dtype=torch.float32))
        for i in np.flatnonzero(live):
            want_obs, want_reward, want_term, want_trunc, _ = refs[i].step(actions[t, i].astype(np.float32))
            close(obs[i], want_obs, f"world {i} ({tasks[i]}) step {t}")
            close(reward[i], want_reward, f"world {i} ({tasks[i]}) step {t}")
            assert bool(terminated[i]) == want_term
            live[i] = not (want_term or want_trunc)
    assert [p.tolist() for p in batched.tasks] == [family(env_id).resolve(t).tolist() for t in tasks]


def test_cheetah_vel_worlds_are_rewarded_for_their_own_target():
    env = BatchedEnv("CheetahVel-v0", 2, autoreset=False, threads=1)
    env.reset(0, tasks=[[0.0], [3.0]])
    _, reward, *_ = env.step(np.zeros((2, 6)))  # standing still: close to target 0, 3 m/s short of target 3
    assert reward[0] > -0.5 > -2.5 > reward[1]


def test_pusher_object_runs_batched_on_the_gymnasium_backend():
    tasks = ["heavy", "slippery"]
    batched = BatchedEnv("PusherObject-v0", 2, backend="gymnasium", autoreset=False)
    refs = [make("PusherObject-v0", task=t) for t in tasks]
    close(batched.reset(1, tasks=tasks), [r.reset(seed=1 + i)[0] for i, r in enumerate(refs)])
    actions = np.random.default_rng(0).uniform(-2, 2, (10, 2, 7)).astype(np.float32)
    for a in actions:
        obs, reward, *_ = batched.step(a)
        for i, ref in enumerate(refs):
            want_obs, want_reward, *_ = ref.step(a[i])
            close(obs[i], want_obs), close(reward[i], want_reward)
    with pytest.raises(ValueError, match="gymnasium"):  # no torch physics for Pusher
        BatchedEnv("PusherObject-v0", 2)


def test_batched_family_defaults_reset_worlds_and_state_dict_keep_tasks():
    env = BatchedEnv("HopperPhysics-v0", 3, autoreset=False, threads=1)
    assert env.family is family("HopperPhysics-v0")
    assert all(np.array_equal(t, [1, 1, 1]) for t in env.tasks)  # the default task
    env.reset(0, tasks=["normal", None, [1.2, 0.5, 1.0]])
    env.reset_worlds([0, 2], tasks=["heavy-torso", None])
    assert [t.tolist() for t in env.tasks] == [[1, 1, 1.75], [1, 1, 1], [1.2, 0.5, 1.0]]
    assert env.backend.models[0].body_mass[1] == pytest.approx(1.75 * env.backend.models[1].body_mass[1])
    state = env.state_dict()
    other = BatchedEnv("HopperPhysics-v0", 3, autoreset=False, threads=1)
    other.load_state_dict(state)
    assert [t.tolist() for t in other.tasks] == [t.tolist() for t in env.tasks]
    a = np.full((3, 3), 0.3)
    close(other.step(a)[0], env.step(a)[0])


def test_explicit_family_must_match_the_env():
    with pytest.raises(ValueError, match="varies Hopper-v5, not Walker2d-v5"):
        BatchedEnv("Walker2d-v5", 1, family=family("HopperPhysics"), threads=1)
    explicit = BatchedEnv("HopperPhysics-v0", 1, family=family("HopperPhysics"), threads=1)
    assert explicit.family is family("HopperPhysics-v0")
    with pytest.raises(ValueError, match="cannot replace"):
        BatchedEnv("CheetahVel-v0", 1, family=family("HalfCheetahBody"), threads=1)


def test_task_aware_task_returns_tell_the_policy_each_rows_task():
    calls = []

    def policy(obs, length, task_index):
        calls.append(task_index.tolist())
        return np.zeros((len(obs), length, 6))

    returns = task_returns("CheetahVel-v0", policy, [[0.5], [2.5], [1.0]], 2, seed=3, task_aware=True,
                           max_episode_steps=4, threads=1)
    assert calls == [[0, 0, 1, 1, 2, 2]] * 4  # worlds: task-major, two episodes each; 4 steps
    assert returns.shape == (3, 2) and returns[1].mean() < returns[2].mean() < returns[0].mean()
    ref = make("CheetahVel-v0", task=[2.5])
    ref.reset(seed=3 + 1)
    assert returns[1, 1] == pytest.approx(sum(ref.step(np.zeros(6))[1] for _ in range(4)), rel=1e-5)
    # the old convention: a two-argument policy, preset names as tasks
    plain = task_returns("HalfCheetahBody-v0", lambda obs, n: np.zeros((len(obs), n, 6)), ["normal", "bigleg"], 1,
                         max_episode_steps=3, threads=1)
    assert plain.shape == (2, 1)


# --- registries and resolution ----------------------------------------------------------------------------------------
def test_sequences_and_aliases():
    for name, fam_id, length in [("cheetah-vel-3", "CheetahVel-v0", 3), ("cheetah-vel-5", "CheetahVel-v0", 5),
                                 ("hopper-physics-3", "HopperPhysics-v0", 3), ("walker2d-physics-5",
                                                                               "Walker2dPhysics-v0", 5),
                                 ("ant-dir-4", "AntDir-v0", 4), ("pusher-object-3", "PusherObject-v0", 3),
                                 ("HalfCheetahBody", "HalfCheetahBody-v0", 5)]:
        fam, tasks = resolve_sequence(name)
        assert fam.name == fam_id and len(tasks) == length and SEQUENCES[name][0] == fam_id
    fam, tasks = resolve_sequence("HalfCheetahBody-v0")
    assert [label for label, _ in tasks] == ["normal", "bigtorso", "bigthigh", "bigleg", "bigfoot"]
    assert [label for label, _ in resolve_sequence("cheetah-vel-3")[1]] == ["velocity=0.5", "velocity=1.5",
                                                                            "velocity=2.5"]
    for name in ("HopperPhysics-v0", "Walker2dPhysics-v0"):
        fam = family(name)
        assert fam.mastery_threshold > 1000 and len(fam.test_tasks) >= 20
        assert all(fam.param_space.contains(t) for t in fam.test_tasks)


@pytest.mark.parametrize("call, message", [
    (lambda: family("HalfCheetahBodies"), r"unknown task family .*close matches: HalfCheetahBody-v0.*families:"),
    (lambda: resolve_sequence("cheetah-vel-4"), r"unknown task sequence .*cheetah-vel-3.*sequences:"),
    (lambda: make("HalfCheetahBody-v0", task="hugetorso"), r"unknown task 'hugetorso'.*presets: normal, bigtorso"),
    (lambda: make("HopperPhysics-v0").reset(options={"task": "moon"}), r"unknown task 'moon'.*presets:"),
    (lambda: make("HopperPhysics-v0", task=[3.0, 1.0, 1.0]), r"outside its range: gravity=3 not in \[0.5, 1.5\]"),
    (lambda: make("CheetahVel-v0", task=[1.0, 2.0]), r"must have shape \(1,\)"),
    (lambda: make("Hopper-v5", task="normal"), "plain Gymnasium env and takes no task"),
    (lambda: make("Hopper-v5").reset(options={"task": [1.0]}), "takes no task parameters"),
    (lambda: BatchedEnv("Hopper-v5", 2, threads=1).reset(tasks=[[1.0], [1.0]]), "takes no task parameters"),
    (lambda: make("HalfCheetahBody-v1"), r"unknown env id .*HalfCheetahBody-v0"),
])
def test_bad_input_names_what_is_valid(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_tables_keyed_by_env_id_resolve_through_the_base_env():
    assert {"HalfCheetahBody-v0", "CheetahVel-v0", "AntDir-v0"} <= set(known_env_ids())
    assert base_env_id("AntDir-v0") == "Ant-v5" and base_env_id("Ant-v5") == "Ant-v5"
    assert spec("HopperPhysics-v0").max_episode_steps == 1000
    assert supports("Walker2dPhysics-v0") and not supports("PusherObject-v0")
    assert task_physics("HopperPhysics-v0").env_id == "HopperPhysics-v0"
    assert termination_fn("HopperPhysics-v0")(torch.zeros(1, 11)).item()  # z = 0: fallen
    assert env_family("HalfCheetahBody-v0") == "HalfCheetah"
    assert _sweep_settings("HopperPhysics-v0", (1,), 1, None, None)[1] == 3600
    with pytest.raises(ValueError, match="no R_max for 'CheetahVel-v0'"):  # a changed reward has no table entry
        _sweep_settings("CheetahVel-v0", (1,), 1, None, None)


def test_reversed_motors_push_the_other_way():
    """The motor family's reversed leg turns the same control into the opposite torque: one step from the same
    state with the same action moves that leg's joints in opposite directions (the other leg, coupled through the
    floating torso, still moves the same way)."""
    import mujoco

    from cadence.envs.tasks import family
    fam, base = family("HalfCheetahMotor"), base_model("HalfCheetah-v5")
    normal, reversed_back = fam.model_for(base, "normal"), fam.model_for(base, "reversed-back")
    np.testing.assert_array_equal(reversed_back.actuator_gear[:3, 0], -normal.actuator_gear[:3, 0])
    np.testing.assert_array_equal(reversed_back.actuator_gear[3:, 0], normal.actuator_gear[3:, 0])
    qvel = {}
    for name, model in (("normal", normal), ("reversed", reversed_back)):
        data = mujoco.MjData(model)
        data.ctrl[:] = 0.5
        mujoco.mj_step(model, data)
        qvel[name] = data.qvel.copy()
    back, front = slice(3, 6), slice(6, 9)  # joints after rootx, rootz, rooty
    assert np.all(np.sign(qvel["normal"][back]) == -np.sign(qvel["reversed"][back]))
    assert np.all(np.sign(qvel["normal"][front]) == np.sign(qvel["reversed"][front]))
