import copy
import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from cadence.envs import make
from cadence.envs.batched import BatchedEnv
from cadence.envs.batched.backends import RolloutBackend
from cadence.envs.batched.physics import get_state, read_data
from cadence.envs.batched.resets import BATCHED_FROM
from cadence.envs.batched.seeding import first_doubles
from cadence.envs.rewards import PhysicsStep, supported_envs, task_physics

# BatchedEnv returns float32 tensors; Gymnasium float64. Relative 1e-5 (float32 rounds at ~6e-8 relative) plus
# absolute 1e-5 near zero: large entries (Ant's velocities, HalfCheetah's speed reward) are compared relatively.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def random_actions(env_id: str, shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    space = gym.make(env_id).action_space
    low, high = scale * space.low, scale * space.high
    return np.random.default_rng(seed).uniform(low, high, (*shape, *space.shape)).astype(np.float32)


def close(got, want, msg: str = "") -> None:
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), err_msg=msg, **TOL)


def test_supported_envs_are_the_eight_mujoco_tasks():
    assert set(supported_envs()) == {f"{n}-v5" for n in ("Hopper", "Walker2d", "HalfCheetah", "Swimmer", "Reacher",
                                                         "InvertedPendulum", "InvertedDoublePendulum", "Ant")}


@pytest.mark.parametrize("env_id", supported_envs())
def test_rollout_backend_reproduces_gymnasium_step_for_step(env_id):
    n, steps, seed = 5, 40, 7
    batched = BatchedEnv(env_id, n, backend="rollout", autoreset=False, threads=1)
    refs = [gym.make(env_id) for _ in range(n)]
    close(batched.reset(seed), [ref.reset(seed=seed + i)[0] for i, ref in enumerate(refs)])
    # 20% beyond the bounds: MuJoCo clamps the control, Gymnasium's control cost uses the raw action
    actions = random_actions(env_id, (steps, n), seed, scale=1.2)
    live = np.ones(n, bool)  # worlds whose Gymnasium episode is still running
    compared = 0
    for t in range(steps):
        obs, reward, terminated, _, info = batched.step(torch.as_tensor(actions[t]))
        assert info["primitive_steps"].tolist() == [1] * n
        for i in np.flatnonzero(live):
            want_obs, want_reward, want_term, want_trunc, _ = refs[i].step(actions[t, i])
            close(obs[i], want_obs, f"world {i} step {t}")
            close(reward[i], want_reward, f"world {i} step {t}")
            assert bool(terminated[i]) == want_term, f"world {i} step {t}"
            live[i] = not (want_term or want_trunc)
            compared += 1
    assert compared >= 3 * n  # the comparison did not stop at once (the pendulums fall within ~5-10 steps)


def run_against_reference(env_id: str, intervals: list[int], sequence: bool, seeds: list[int], decisions: int,
                          autoreset: bool = False) -> list[tuple[int, int, int, bool, bool]]:
    """Step BatchedEnv and one ``cadence.envs.make`` env per world with the same actions; compare every decision.

    Returns the episode ends seen, as ``(decision, world, primitive steps in that decision, terminated, truncated)``.
    """
    n = len(intervals)
    batched = BatchedEnv(env_id, n, decision_interval=intervals, sequence=sequence, autoreset=autoreset, threads=1)
    refs = [make(env_id, decision_interval=j, sequence=sequence) for j in intervals]
    close(batched.reset(seeds), [ref.reset(seed=s)[0] for ref, s in zip(refs, seeds, strict=True)])
    shape = (decisions, n, max(intervals)) if sequence else (decisions, n)
    actions = random_actions(env_id, shape, seeds[0])
    live, episodes, ends = np.ones(n, bool), np.zeros(n, int), []
    for d in range(decisions):
        obs, reward, terminated, truncated, info = batched.step(torch.as_tensor(actions[d]))
        for i in np.flatnonzero(live):
            action = actions[d, i, :intervals[i]].reshape(-1) if sequence else actions[d, i]
            want_obs, want_reward, want_term, want_trunc, want_info = refs[i].step(action)
            close(reward[i], want_reward)
            assert (bool(terminated[i]), bool(truncated[i])) == (want_term, want_trunc), f"world {i} decision {d}"
            assert int(info["primitive_steps"][i]) == want_info["primitive_steps"]
            if not (want_term or want_trunc):
                close(obs[i], want_obs)
                continue
            ends.append((d, i, want_info["primitive_steps"], want_term, want_trunc))
            if not autoreset:
                close(obs[i], want_obs)  # the world stays at its final state
                live[i] = False
                continue
            close(info["final_obs"][i], want_obs)
            episodes[i] += 1  # episode k of world i starts from seed seeds[i] + k * n_worlds
            close(obs[i], refs[i].reset(seed=seeds[i] + int(episodes[i]) * n)[0])
    return ends


@pytest.mark.parametrize("sequence", [False, True])
def test_per_world_decision_intervals_match_decision_interval_wrapper(sequence):
    intervals = [1, 3, 5]
    ends = run_against_reference("Hopper-v5", intervals, sequence, [0, 1, 2], decisions=25)
    assert len(ends) >= 2  # episodes ended (the comparison covered terminations)
    if sequence:  # a termination inside a sequence stopped that world there
        assert any(term and steps < intervals[i] for _, i, steps, term, _ in ends)


def test_time_limit_counts_primitive_steps_and_autoreset_seeds_new_episodes():
    # Reacher-v5 never terminates and is truncated after 50 primitive steps, so with J = 3 every episode ends two
    # steps into its 17th decision. The harness checks final_obs and the reset seed seeds[i] + k * n_worlds.
    ends = run_against_reference("Reacher-v5", [1, 3], False, [10, 20], decisions=100, autoreset=True)
    world1 = [(d, 1, 2, False, True) for d in (16, 33, 50, 67, 84)]
    assert ends == sorted([(49, 0, 1, False, True), (99, 0, 1, False, True), *world1])


def test_gymnasium_backend_gives_the_rollout_backends_numbers():
    n, decisions, intervals = 4, 60, [1, 2, 1, 3]  # Hopper falls within 60 decisions, so autoresets are covered
    envs = [BatchedEnv("Hopper-v5", n, backend=b, decision_interval=intervals, threads=2)  # 2: split over threads
            for b in ("rollout", "gymnasium")]
    close(envs[0].reset(5), envs[1].reset(5))
    resets = 0
    for a in random_actions("Hopper-v5", (decisions, n), 5):
        (obs, reward, term, trunc, info), (g_obs, g_reward, g_term, g_trunc, g_info) = (e.step(a) for e in envs)
        close(obs, g_obs)
        close(reward, g_reward)
        assert torch.equal(term, g_term) and torch.equal(trunc, g_trunc)
        assert torch.equal(info["primitive_steps"], g_info["primitive_steps"])
        assert ("final_obs" in info) == ("final_obs" in g_info)
        if "final_obs" in info:
            close(info["final_obs"], g_info["final_obs"])
            resets += 1
    assert resets >= 2


def test_per_world_models_change_only_their_world():
    env_id, steps = "Hopper-v5", 20
    heavy_ref = gym.make(env_id)
    heavy_ref.unwrapped.model.body_mass[1] *= 2  # the torso
    heavy = copy.deepcopy(heavy_ref.unwrapped.model)
    base = gym.make(env_id).unwrapped.model
    assert heavy.body_mass[1] == 2 * base.body_mass[1]
    batched = BatchedEnv(env_id, 3, autoreset=False, threads=1, models=[base, heavy, base])
    batched.reset(0)
    # (world, Gymnasium reference, whether the world must follow it); world 1 is compared with both bodies
    checks = [(0, gym.make(env_id), True), (1, gym.make(env_id), False), (2, gym.make(env_id), True),
              (1, heavy_ref, True)]
    for world, ref, _ in checks:
        ref.reset(seed=world)
    live, diverged = [True] * len(checks), 0.0
    for a in random_actions(env_id, (steps, 3), 0) * 0.3:  # small actions: the hoppers stay up longer
        obs = batched.step(a)[0].numpy()
        for c, (world, ref, follows) in enumerate(checks):
            if live[c]:
                want, _, term, trunc, _ = ref.step(a[world])
                live[c] = not (term or trunc)
                if follows:
                    close(obs[world], want)
                else:
                    diverged = max(diverged, np.abs(obs[world] - want).max())
    assert diverged > 1e-2  # the heavy world does not follow the base model


def test_inactive_worlds_do_not_move():
    env = BatchedEnv("Hopper-v5", 3, threads=1)
    obs = env.reset(0)
    next_obs, reward, _, _, info = env.step(random_actions("Hopper-v5", (3,)), active=np.array([True, False, True]))
    assert info["primitive_steps"].tolist() == [1, 0, 1]
    assert torch.equal(next_obs[1], obs[1]) and reward[1] == 0
    assert not torch.equal(next_obs[0], obs[0]) and reward[0] != 0


@pytest.mark.parametrize(("kwargs", "actions", "match"), [
    ({}, np.zeros((2, 4)), r"actions must have shape \[n_worlds, act_dim\] = \(2, 3\), got \(2, 4\)"),
    ({}, np.zeros(3), r"actions must have shape .* = \(2, 3\), got \(3,\)"),
    ({"decision_interval": [2, 3], "sequence": True}, np.zeros((2, 3)),
     r"\[n_worlds, max decision interval, act_dim\] = \(2, 3, 3\), got \(2, 3\)"),
    ({}, np.array([[0.0, 0.0, 0.0], [0.0, np.nan, 0.0]]), "NaN or inf .*world 1"),
    ({}, np.array([[np.inf, 0.0, 0.0], [0.0, 0.0, 0.0]]), "NaN or inf .*world 0"),
])
def test_bad_actions_raise(kwargs, actions, match):
    env = BatchedEnv("Hopper-v5", 2, threads=1, **kwargs)
    env.reset(0)
    with pytest.raises(ValueError, match=match):
        env.step(torch.as_tensor(actions))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", [1, 0, 2], [1.0, 2.0, 3.5]])
def test_bad_decision_interval_raises(bad):
    with pytest.raises(ValueError, match="decision intervals must be integers >= 1"):
        BatchedEnv("Hopper-v5", 3, decision_interval=bad)


def test_decision_intervals_of_the_wrong_length_raise_clearly():
    with pytest.raises(ValueError, match="decision"):
        BatchedEnv("Hopper-v5", 3, decision_interval=[1, 2])


def test_unknown_env_lists_close_matches():
    with pytest.raises(ValueError, match="unknown env id 'Hoper-v5'; close matches: Hopper-v5"):
        BatchedEnv("Hoper-v5", 2)


def test_env_without_torch_functions_names_the_backend_that_runs_it():
    with pytest.raises(ValueError, match="rollout.* cannot run Humanoid-v5.*Backends that support it: gymnasium"):
        BatchedEnv("Humanoid-v5", 2, backend="rollout")
    env = BatchedEnv("Humanoid-v5", 2, backend="gymnasium")
    assert env.reset(0).shape == (2, *gym.make("Humanoid-v5").observation_space.shape)


def test_wrong_number_of_models_raises():
    model = gym.make("Hopper-v5").unwrapped.model
    with pytest.raises(ValueError, match="got 2 models for 3 worlds"):
        BatchedEnv("Hopper-v5", 3, models=[model, model])
    with pytest.raises(ValueError, match="per-world models need the rollout or warp backend"):
        BatchedEnv("Hopper-v5", 2, backend="gymnasium", models=[model, model])


def test_warp_backend_says_what_is_missing():
    has_warp = all(importlib.util.find_spec(m) is not None for m in ("mujoco_warp", "warp"))
    if has_warp and torch.cuda.is_available():
        pytest.skip("mujoco_warp and a CUDA GPU are both present: there is nothing missing to report")
    # with the extra but no GPU, device="cuda" names the ways out (tests/test_warp.py covers the CPU device)
    error, match = (RuntimeError, "needs a CUDA GPU.*device='cpu'.*backend='rollout'") if has_warp else (
        ImportError, "pip install")
    with pytest.raises(error, match=match):
        BatchedEnv("Hopper-v5", 2, backend="warp", device="cuda")


def test_models_of_another_size_raise():
    # The backend steps with mujoco.rollout's skip_checks=True, so a model of another size must be refused up front
    # (unchecked, a Walker2d model in a Hopper env corrupted memory). A subprocess keeps a crash out of pytest.
    code = """if True:
        import gymnasium as gym, numpy as np
        from cadence.envs.batched import BatchedEnv
        models = [gym.make(e).unwrapped.model for e in ("Hopper-v5", "Walker2d-v5")]
        env = BatchedEnv("Hopper-v5", 2, threads=1, models=models)
        env.reset(0)
        env.step(np.zeros((2, 3)))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1 and "ValueError" in done.stderr, (done.returncode, done.stderr[-500:])


def test_ant_follows_gymnasium_over_a_long_horizon():
    # Each world carries its own solver warm start. mujoco.rollout does not return the one it ends with, so the
    # step after a rollout starts the solver from an estimate; it converges to the same answer within its
    # tolerance, and Ant's contacts amplify that ~1e-12 difference: float32-equal for ~180 steps here, drifting
    # after. (Started cold instead, the drift reached 0.1 in qpos by step 200.) HalfCheetah stays equal for 1000.
    steps = 150
    batched = BatchedEnv("Ant-v5", 1, autoreset=False, threads=1)
    ref = gym.make("Ant-v5", max_episode_steps=None)
    close(batched.reset(0)[0], ref.reset(seed=0)[0])
    for t, a in enumerate(random_actions("Ant-v5", (steps, 1), 0, scale=0.3)):  # small actions: Ant stays healthy
        obs = batched.step(a)[0]
        want_obs, _, want_term, _, _ = ref.step(a[0])
        close(obs[0, :27], want_obs[:27], f"step {t}")  # qpos (but x, y) and qvel
        assert not want_term, f"Ant fell at step {t}: the horizon is not covered"


def test_a_world_does_not_depend_on_the_other_worlds_or_threads():
    # The task's last substep (Ant, Reacher, InvertedDoublePendulum) runs in one shared MjData: each world must
    # bring its own solver warm start, or world 0 would change with n_worlds.
    actions = random_actions("Ant-v5", (200, 3), 0, scale=0.3)
    runs = []
    for n, threads in ((1, 1), (3, 1), (3, 2)):
        env = BatchedEnv("Ant-v5", n, autoreset=False, threads=threads)
        env.reset(0)
        runs.append(torch.stack([env.step(a[:n])[0][0] for a in actions]))
    for (n, threads), run in zip(((3, 1), (3, 2)), runs[1:]):
        diff = (run - runs[0]).abs().max().item()
        assert diff == 0, f"world 0 moved by up to {diff:.3g} when stepped with {n} worlds on {threads} threads"



def longer_reacher(tmp_path: Path) -> gym.Env:
    env = gym.make("Reacher-v5")
    env.unwrapped.model.body("fingertip").pos *= 1.5  # edited after compiling: moves the fingertip read at reset
    return env


def higher_ant(tmp_path: Path) -> gym.Env:
    xml = (Path(gym.__file__).parent / "envs/mujoco/assets/ant.xml").read_text()
    torso = '<body name="torso" pos="0 0 {}">'
    (tmp_path / "ant.xml").write_text(xml.replace(torso.format(0.75), torso.format(1)))
    return gym.make("Ant-v5", xml_file=str(tmp_path / "ant.xml"))  # a compiled variant: its own qpos0


@pytest.mark.parametrize(("env_id", "variant"), [("Reacher-v5", longer_reacher), ("Ant-v5", higher_ant)])
def test_per_world_models_reset_with_their_own_model(env_id, variant, tmp_path):
    ref = variant(tmp_path)
    models = [gym.make(env_id).unwrapped.model, copy.deepcopy(ref.unwrapped.model)]
    batched = BatchedEnv(env_id, 2, autoreset=False, threads=1, models=models)
    obs = batched.reset(5)
    close(obs[0], gym.make(env_id).reset(seed=5)[0])
    close(obs[1], ref.reset(seed=6)[0])
    for a in random_actions(env_id, (3, 2), 0, scale=0.1):  # Ant's first reward reads the torso at reset
        obs, reward = batched.step(a)[:2]
        want_obs, want_reward = ref.step(a[1])[:2]
        close(obs[1], want_obs)
        close(reward[1], want_reward)


@pytest.mark.parametrize(("env_id", "variant", "kwargs"), [
    *((env_id, None, {}) for env_id in supported_envs()), ("Hopper-v5", None, {"reset_noise_scale": 0.3}),
    ("Reacher-v5", longer_reacher, {}), ("Ant-v5", higher_ant, {})])
def test_resets_give_gymnasiums_initial_state_bit_for_bit(env_id, variant, kwargs, tmp_path):
    # resets draw reset_model's noise outside Gymnasium (cadence/envs/batched/resets.py): every number of the
    # carried state must be Gymnasium's own, not merely close, or a seed would name another episode
    refs = [gym.make(env_id, **kwargs).unwrapped, (variant(tmp_path) if variant else gym.make(env_id, **kwargs))]
    models = [refs[0].model, copy.deepcopy(refs[1].unwrapped.model)]
    backend = RolloutBackend(env_id, 2, kwargs, threads=1, models=models)
    for seeds in ([0, 1], [7, 2**40 + 3], [123456789, 5]):
        backend.reset(np.arange(2), seeds)
        for i, (ref, seed) in enumerate(zip(refs, seeds, strict=True)):
            ref = ref.unwrapped
            ref.reset(seed=seed)
            np.testing.assert_array_equal(backend.state[i], get_state(ref.model, ref.data), f"world {i}, seed {seed}")
            np.testing.assert_array_equal(backend.warmstart[i], ref.data.qacc_warmstart)
            np.testing.assert_array_equal(backend.reads[i], read_data(backend.physics, ref.model, ref.data, False))


def test_gymnasium_backend_refuses_to_snapshot_and_names_the_backends_that_can():
    env = BatchedEnv("Hopper-v5", 2, backend="gymnasium")
    env.reset(seed=0)
    with pytest.raises(NotImplementedError, match="gymnasium backend cannot snapshot its worlds; use rollout or warp"):
        env.state_dict()
    with pytest.raises(NotImplementedError, match="gymnasium backend cannot restore its worlds; use rollout or warp"):
        env.backend.load_physics_state({})
    env.close()


def test_reward_and_termination_share_one_health_evaluation_per_step():
    # a step's torch ops are its cost beyond the physics: Hopper's health (reward and termination) is computed once
    physics = task_physics("Hopper-v5")
    qpos = torch.tensor([[0.0, 1.25, 0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    step = PhysicsStep(qpos_before=qpos, qpos=qpos, qvel=torch.zeros(2, 6, dtype=torch.float64),
                       action=torch.zeros(2, 3), reads=torch.zeros(2, 0), reads_before=torch.zeros(2, 0), dt=0.008)
    assert physics.terminated(step).tolist() == [False, True]  # the second torso is below healthy_z_range
    assert physics.reward(step).tolist() == [1.0, 0.0]  # healthy reward 1 only where healthy
    assert len(step.shared) == 1
    other = PhysicsStep(qpos_before=qpos, qpos=qpos.flip(0), qvel=step.qvel, action=step.action, reads=step.reads,
                        reads_before=step.reads, dt=0.008)
    assert physics.terminated(other).tolist() == [True, False]  # another step: its own health


def test_first_doubles_are_numpys_generators_first_draws():
    seeds = np.concatenate([np.arange(300), [2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1],
                            np.random.default_rng(0).integers(0, 2**63, 300)])
    want = np.stack([seeding.np_random(int(s))[0].random(7) for s in seeds])
    np.testing.assert_array_equal(first_doubles(seeds, 7), want)
    with pytest.raises(ValueError, match="non-negative"):
        first_doubles([3, -1], 2)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "Swimmer-v5", "InvertedPendulum-v5"])
def test_a_large_reset_batch_draws_gymnasiums_states_at_once(env_id):
    # from BATCHED_FROM worlds on, all-uniform noise comes from cadence.envs.batched.seeding, not one generator per
    # world: still Gymnasium's numbers exactly, for every world's own seed and model (odd worlds: another qpos0)
    n, kwargs = BATCHED_FROM + 6, {"reset_noise_scale": 0.02}
    base = gym.make(env_id, **kwargs).unwrapped.model
    shifted = copy.deepcopy(base)
    shifted.qpos0[:] += 0.01
    models = [shifted if i % 2 else base for i in range(n)]
    backend = RolloutBackend(env_id, n, kwargs, threads=1, models=models)
    seeds = [10**12 + 7 * i for i in range(n)]
    backend.reset(np.arange(n), seeds)
    for i, seed in enumerate(seeds):
        ref = gym.make(env_id, **kwargs).unwrapped
        if models[i] is shifted:  # an env built from that model: its qpos0 is init_qpos
            ref.model, ref.data = shifted, mujoco.MjData(shifted)
            ref.init_qpos, ref.init_qvel = shifted.qpos0.copy(), np.zeros(shifted.nv)
        ref.reset(seed=seed)
        np.testing.assert_array_equal(backend.state[i], get_state(ref.model, ref.data), f"world {i}")
        np.testing.assert_array_equal(backend.warmstart[i], ref.data.qacc_warmstart)
        np.testing.assert_array_equal(backend.reads[i], read_data(backend.physics, ref.model, ref.data, False))


def test_seeds_of_any_size_reset_as_gymnasium_and_bad_ones_are_named():
    env = BatchedEnv("Hopper-v5", 2, threads=1)
    obs = env.reset([2**63 - 1, 5])
    close(obs[0], gym.make("Hopper-v5").reset(seed=2**63 - 1)[0])
    # the next episode's seed, 2**63 - 1 + 2, is past int64: Gymnasium still takes it
    close(env.reset_worlds([0])[0], gym.make("Hopper-v5").reset(seed=2**63 + 1)[0])
    assert env.reset_worlds([]).shape == (2, 11)  # nothing to reset: the observations as they are
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*63\)"):
        env.reset([-1, 3])
    with pytest.raises(TypeError):
        env.reset([1.5, 2])


def test_a_copied_step_does_not_inherit_the_shared_values():
    physics = task_physics("Hopper-v5")
    qpos = torch.tensor([[0.0, 1.25, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    step = PhysicsStep(qpos_before=qpos, qpos=qpos, qvel=torch.zeros(1, 6, dtype=torch.float64),
                       action=torch.zeros(1, 3), reads=torch.zeros(1, 0), reads_before=torch.zeros(1, 0), dt=0.008)
    assert physics.terminated(step).tolist() == [False]
    fallen = dataclasses.replace(step, qpos=qpos * torch.tensor([1.0, 0.2, 1, 1, 1, 1]))
    assert physics.terminated(fallen).tolist() == [True]
