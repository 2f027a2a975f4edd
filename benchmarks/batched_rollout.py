"""Hopper-v5 env steps per second: Gymnasium, a Gymnasium SyncVectorEnv, cadence BatchedEnv and raw mujoco.rollout.

All in one run, interleaved over ``--repeats`` so machine drift hits all, with uniform random actions generated
before timing. Measured:
- a Gymnasium single env (``gym.make``), reset when an episode ends;
- ``gymnasium.vector.SyncVectorEnv`` of 8 envs, autoreset on (8 env steps per call);
- cadence ``BatchedEnv(backend="rollout")`` at n = 64 and n = 256 worlds (n env steps per decision), on
  ``--threads`` physics threads, autoreset on;
- the limit: raw ``mujoco.rollout`` on Hopper's model, 256 worlds on ``--threads`` threads, one call per env step
  with nstep = frame_skip = 4 (as cadence calls it), counted as env steps. It computes no observation, reward
  or reset: what cadence adds on top of it is the gap between the two.
And one reset of 8 to 4,096 worlds, per world, on both paths to Gymnasium's initial states (batched draws against
one seeded generator per world). Writes ``benchmarks/results/batched_rollout.json``, ``batched_rollout.png`` and
``batched_rollout_resets.png``.

    python benchmarks/batched_rollout.py [--repeats 3] [--seconds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch
from common import RESULTS, ResetClock
from mujoco import rollout

from cadence.envs.batched import BatchedEnv
from cadence.envs.batched.physics import STATE_SPEC, get_state
from cadence.evaluation.plots import plot_bars
from cadence.io import atomic_write_json

ENV_ID, VECTOR_ENVS, RAW_WORLDS, ACTION_ROWS = "Hopper-v5", 8, 256, 512
TARGETS = {"cadence_256_over_gymnasium_single_at_least": 2.5, "cadence_256_over_raw_rollout_at_least": 0.8}


def random_actions(n: int, seed: int) -> np.ndarray:
    """``[ACTION_ROWS, n, act_dim]`` uniform actions, cycled through while timing."""
    return np.random.default_rng(seed).uniform(-1, 1, (ACTION_ROWS, n, 3)).astype(np.float32)


def steps_per_second(step: Callable[[int], int], seconds: float) -> float:
    """Env steps per second of ``step(t) -> env steps taken`` over about ``seconds``, after a short warm-up."""
    for t in range(10):
        step(t)
    steps, t, t0 = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            steps += step(t)
            t += 1
    return steps / elapsed


def gymnasium_single() -> Callable[[int], int]:
    env, actions = gym.make(ENV_ID), random_actions(1, 0)[:, 0]
    env.reset(seed=0)

    def step(t: int) -> int:
        _, _, terminated, truncated, _ = env.step(actions[t % ACTION_ROWS])
        if terminated or truncated:
            env.reset()
        return 1

    return step


def gymnasium_vector() -> Callable[[int], int]:
    env = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(VECTOR_ENVS)])  # autoreset: next step
    actions = random_actions(VECTOR_ENVS, 1)
    env.reset(seed=0)

    def step(t: int) -> int:
        env.step(actions[t % ACTION_ROWS])
        return VECTOR_ENVS

    return step


def cadence_batched(n: int, threads: int, autoreset: bool = True) -> Callable[[int], int]:
    """BatchedEnv's step; without ``autoreset`` ended worlds step on without a reset (what a step costs alone, in
    the same fallen-robot physics as raw rollout's, which never resets either). The step function counts
    ``world_steps``, ``seconds`` in steps, ``physics_seconds`` inside ``mujoco.rollout``'s calls and, in its
    ``clock`` (a :class:`common.ResetClock`), autoreset's resets and their time."""
    env = BatchedEnv(ENV_ID, n, backend="rollout", threads=threads, autoreset=autoreset)
    actions = torch.as_tensor(random_actions(n, 2))  # a policy hands over torch tensors
    env.reset(0)
    clock = ResetClock(env)
    physics = env.backend.runner.rollout

    def timed_physics(*args, **kwargs):
        start = time.perf_counter()
        out = physics(*args, **kwargs)
        step.physics_seconds += time.perf_counter() - start
        return out

    env.backend.runner.rollout = timed_physics

    def step(t: int) -> int:
        start = time.perf_counter()
        env.step(actions[t % ACTION_ROWS])
        step.seconds += time.perf_counter() - start
        step.world_steps += n
        return n

    step.world_steps, step.seconds, step.physics_seconds, step.clock = 0, 0.0, 0.0, clock
    return step


def overhead(median: dict[str, float], counted: Callable, alone: Callable) -> dict[str, float]:
    """What cadence adds to mujoco.rollout at 256 worlds, in microseconds per world step, timed directly inside the
    runs: the step's own work (observations, rewards, terminations, bookkeeping: a step's time outside the physics
    calls, in the no-reset peer ``alone``) and the resets (in the autoreset peer ``counted``; random actions end
    Hopper's episodes every few dozen steps, a trained policy's last up to 1000). ``step_us_per_world_step_by_rates``
    is the older estimate, the no-reset peer's time per world step less raw rollout's: it compares two runs' physics,
    so its noise (~1 us here) is as large as what it measures."""
    raw = 1e6 / median[f"raw_rollout_{RAW_WORLDS}"]
    return {"step_us_per_world_step": 1e6 * (alone.seconds - alone.physics_seconds) / alone.world_steps,
            "step_us_per_world_step_by_rates": 1e6 / median["cadence_256_no_resets"] - raw,
            "resets_us_per_world_step": 1e6 * counted.clock.seconds / counted.world_steps,
            "raw_rollout_us_per_world_step": raw, "resets_per_world_step": counted.clock.resets / counted.world_steps,
            "us_per_reset": counted.clock.summary()["us_per_reset"]}


def raw_rollout(n: int, threads: int) -> Callable[[int], int]:
    """mujoco.rollout alone: the same worlds, threads and call pattern as cadence (nstep = frame_skip per call)."""
    gym_env = gym.make(ENV_ID).unwrapped
    model, frame_skip = gym_env.model, gym_env.frame_skip
    runner, datas = rollout.Rollout(nthread=threads), [mujoco.MjData(model) for _ in range(threads)]
    models, state = [model] * n, np.empty((n, mujoco.mj_stateSize(model, STATE_SPEC)))
    for i in range(n):
        gym_env.reset(seed=i)
        state[i] = get_state(model, gym_env.data)
    controls = np.repeat(random_actions(n, 3).astype(np.float64)[:, :, None], frame_skip, axis=2)
    out, sensordata = np.empty((n, frame_skip, state.shape[1])), np.empty((n, frame_skip, 0))

    def step(t: int) -> int:
        runner.rollout(models, datas, state, controls[t % ACTION_ROWS], nstep=frame_skip, state=out,
                       sensordata=sensordata, skip_checks=True)  # cadence skips the per-call checks too
        state[:] = out[:, -1]
        return n

    return step


def reset_batch_timing(sizes: tuple[int, ...] = (8, 16, 32, 64, 256, 1024, 4096)) -> dict[str, dict[str, float]]:
    """Microseconds per world of one ``reset`` of ``m`` Hopper worlds, side by side: the batched draws of
    ``cadence.envs.batched.seeding`` (what ``BatchedEnv`` uses from ``BATCHED_FROM`` worlds on) against one seeded
    generator per world (what it uses below). Both give Gymnasium's states bit for bit."""
    from cadence.envs.batched import resets
    from cadence.envs.batched.backends import RolloutBackend

    default = resets.BATCHED_FROM
    backend = RolloutBackend(ENV_ID, max(sizes), threads=1)
    out = {}
    try:
        for m in sizes:
            idx, seeds = np.arange(m), list(range(10_000, 10_000 + m))
            times = {}
            for name, threshold in (("one_generator_per_world", np.iinfo(np.int64).max), ("batched", 1)):
                resets.BATCHED_FROM, calls = threshold, max(3, 20_000 // m)
                backend.reset(idx, seeds)
                start = time.perf_counter()
                for _ in range(calls):
                    backend.reset(idx, seeds)
                times[name] = 1e6 * (time.perf_counter() - start) / calls / m
            out[str(m)] = {**times, "speedup": times["one_generator_per_world"] / times["batched"]}
    finally:
        resets.BATCHED_FROM = default
    return out


def fas_sweep_timing(args: argparse.Namespace) -> dict | None:
    """Wall time of one full FAS sweep (ASL 1..30, ``--fas-episodes`` per ASL), batched against the sequential
    Gymnasium loop, same policy and seeds. The policy is a SAC actor: from ``--run`` (a Hopper-v5 run folder,
    optionally a ``--checkpoint`` snapshot) or, without one, a freshly initialised actor (short episodes)."""
    if args.fas_episodes == 0:
        return None
    from cadence.agents import SAC, SACConfig
    from cadence.evaluation.fas import fas_sweep, fas_sweep_batched
    from cadence.runs import load_agent

    if args.run is not None:
        agent, _ = load_agent(args.run, args.checkpoint)
        policy = f"{args.run}" + (f" ({args.checkpoint})" if args.checkpoint else "")
    else:
        torch.manual_seed(0)
        env = gym.make(ENV_ID)
        agent, policy = SAC(env.observation_space, env.action_space, SACConfig()), "untrained SAC actor (seed 0)"
    with torch.inference_mode():
        t0 = time.perf_counter()
        sequential = fas_sweep(ENV_ID, agent.act_sequence, episodes=args.fas_episodes, seed=0)
        t1 = time.perf_counter()
        batched = fas_sweep_batched(ENV_ID, agent.act_sequence, episodes=args.fas_episodes, seed=0,
                                    threads=args.threads)
        t2 = time.perf_counter()
        # the policy one observation at a time, as in the sequential loop: float32 matrix products over a batch
        # differ from single-row ones by ~1e-6, which a closed-loop Hopper amplifies over hundreds of steps
        exact = fas_sweep_batched(ENV_ID, agent.act_sequence, episodes=args.fas_episodes, seed=0,
                                  threads=args.threads, batch_policy=False)
        t3 = time.perf_counter()

    def difference(result):
        return float(np.abs(np.asarray(result.returns) - np.asarray(sequential.returns)).max())

    return {"policy": policy, "episodes_per_asl": args.fas_episodes, "asl_grid": sequential.asl,
            "sequential_seconds": t1 - t0, "batched_seconds": t2 - t1, "speedup": (t1 - t0) / (t2 - t1),
            "batched_one_obs_policy_seconds": t3 - t2, "speedup_one_obs_policy": (t1 - t0) / (t3 - t2),
            "fas_sequential": sequential.fas, "fas_batched": batched.fas, "fas_batched_one_obs_policy": exact.fas,
            "max_episode_return_difference": difference(batched),
            "max_episode_return_difference_one_obs_policy": difference(exact),
            "mean_asl1_return": float(np.mean(sequential.returns[0])), "target_speedup": 5.0}


def plot(result: dict) -> Path:
    """Median env-step rates of each peer, from a ``batched_rollout.json`` result."""
    labels = {"gymnasium_single": "Gymnasium\n1 env", f"gymnasium_sync_vector_{VECTOR_ENVS}": "SyncVectorEnv\n8 envs",
              "cadence_64": "cadence\n64 worlds", "cadence_256": "cadence\n256 worlds",
              f"raw_rollout_{RAW_WORLDS}": f"raw rollout\n{RAW_WORLDS} worlds"}
    rates = result["env_steps_per_second"]
    order = [*(n for n in labels if n in rates), *(n for n in rates if n not in labels)]  # the JSON's keys are sorted
    return plot_bars({labels.get(name, name): {"env steps / s": rates[name]["median"]} for name in order},
                     RESULTS / "batched_rollout.png", "env steps / s (median)",
                     f"{result['env']} stepping, {result['physics_threads']} physics threads, median of "
                     f"{result['repeats']} repeats of {result['seconds_per_measurement']:g} s")


def plot_resets(result: dict) -> Path | None:
    """Microseconds per world of a reset against the batch size, per path, from ``result["reset_batches"]``."""
    if "reset_batches" not in result:
        return None
    import matplotlib.pyplot as plt

    from cadence.evaluation.plots import save_figure

    timing = result["reset_batches"]["us_per_world"]
    sizes = sorted(int(m) for m in timing)  # the JSON sorts its keys as strings
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in (("one_generator_per_world", "one seeded NumPy generator per world"),
                       ("batched", "batched draws (cadence.envs.batched.seeding)")):
        ax.plot(sizes, [timing[str(m)][key] for m in sizes], marker="o", label=label)
    ax.axvline(result["reset_batches"]["batched_from"], color="gray", linestyle="--",
               label=f"BatchedEnv switches at {result['reset_batches']['batched_from']} worlds")
    ax.set(xscale="log", yscale="log", xlabel="worlds reset in one call", ylabel="microseconds per world reset",
           title=f"{result['env']} resets, Gymnasium's states bit for bit either way")
    ax.set_xticks(sizes, [f"{m:,}" for m in sizes])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, RESULTS / "batched_rollout_resets.png")


def scaling(files: list[Path]) -> Path:
    """Merge single-thread-count results (``batched_rollout.json`` files from one host, e.g. the 16-core one of
    ``benchmarks/device/rollout_scaling.sh``) into ``batched_rollout_scaling.json`` and plot env steps/s and
    cadence's ratio to raw rollout against physics threads."""
    import matplotlib.pyplot as plt

    from cadence.evaluation.plots import save_figure

    results = sorted((json.loads(Path(f).read_text()) for f in files), key=lambda r: r["physics_threads"])
    threads = [r["physics_threads"] for r in results]
    peers = {"cadence_256": "cadence, 256 worlds (random actions: resets every ~23 steps)",
             "cadence_256_no_resets": "cadence, 256 worlds, no resets", f"raw_rollout_{RAW_WORLDS}":
             f"raw mujoco.rollout, {RAW_WORLDS} worlds"}
    merged = {"env": ENV_ID, "machine": results[0]["machine"], "threads": threads,
              "by_threads": {str(r["physics_threads"]): {"env_steps_per_second": {k: r["env_steps_per_second"][k]
                                                                                 for k in peers},
                                                          "overhead_over_raw_rollout_256":
                                                              r["overhead_over_raw_rollout_256"],
                                                          "repeats": r["repeats"],
                                                          "seconds_per_measurement": r["seconds_per_measurement"]}
                             for r in results}}
    atomic_write_json(RESULTS / "batched_rollout_scaling.json", merged)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in peers.items():
        rates = [r["env_steps_per_second"][key]["median"] for r in results]
        left.plot(threads, rates, marker="o", label=label)
        if key != f"raw_rollout_{RAW_WORLDS}":
            raw = [r["env_steps_per_second"][f"raw_rollout_{RAW_WORLDS}"]["median"] for r in results]
            right.plot(threads, np.array(rates) / raw, marker="o", label=label)
    right.axhline(0.85, color="gray", linestyle="--", label="aim: 0.85x")
    left.set(xlabel="physics threads", ylabel="Hopper-v5 env steps / s (median)", xticks=threads)
    right.set(xlabel="physics threads", ylabel="cadence / raw rollout", xticks=threads, ylim=(0, 1.1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{ENV_ID}: cadence's rollout backend against raw mujoco.rollout on a "
                 f"{results[0]['machine']['cpu_count']}-core host, median of {results[0]['repeats']} repeats")
    fig.tight_layout()
    return save_figure(fig, RESULTS / "batched_rollout_scaling.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement and repeat")
    parser.add_argument("--threads", type=int, default=2, help="physics threads of cadence and raw rollout")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--fas-episodes", type=int, default=10,
                        help="FAS sweep timing: episodes per ASL (0 skips it and keeps the stored timing)")
    parser.add_argument("--run", type=Path, help="Hopper-v5 run folder whose SAC actor the FAS timing uses")
    parser.add_argument("--checkpoint", help="a snapshot in that run, e.g. agent_100000.pt")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from batched_rollout.json")
    parser.add_argument("--scaling", type=Path, nargs="+", metavar="JSON",
                        help="merge these results of one host at different --threads into "
                             "batched_rollout_scaling.json/.png (and measure nothing)")
    args = parser.parse_args()
    if args.scaling:
        print(f"wrote {scaling(args.scaling)}")
        return
    if args.plot_only:
        result = json.loads((RESULTS / "batched_rollout.json").read_text())
        print(f"wrote {plot(result)} and {plot_resets(result)}")
        return
    torch.set_num_threads(args.torch_threads)

    peers = {
        "gymnasium_single": gymnasium_single(),
        f"gymnasium_sync_vector_{VECTOR_ENVS}": gymnasium_vector(),
        "cadence_64": cadence_batched(64, args.threads),
        "cadence_256": cadence_batched(256, args.threads),
        "cadence_256_no_resets": cadence_batched(256, args.threads, autoreset=False),
        f"raw_rollout_{RAW_WORLDS}": raw_rollout(RAW_WORLDS, args.threads),
    }
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.repeats):
        for name, step in peers.items():
            runs[name].append(steps_per_second(step, args.seconds))
    median = {name: float(np.median(r)) for name, r in runs.items()}
    ratios = {"cadence_256_over_gymnasium_single": median["cadence_256"] / median["gymnasium_single"],
              "cadence_256_over_raw_rollout": median["cadence_256"] / median[f"raw_rollout_{RAW_WORLDS}"]}
    result = {
        "env": ENV_ID, "physics_threads": args.threads, "torch_threads": args.torch_threads,
        "repeats": args.repeats, "seconds_per_measurement": args.seconds,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "python": platform.python_version(), "mujoco": mujoco.__version__,
                    "gymnasium": gym.__version__, "torch": torch.__version__},
        "env_steps_per_second": {name: {"median": median[name], "runs": r} for name, r in runs.items()},
        "ratios": ratios, "targets": TARGETS,
        "overhead_over_raw_rollout_256": overhead(median, peers["cadence_256"], peers["cadence_256_no_resets"]),
        "targets_met": {"cadence_256_over_gymnasium_single": ratios["cadence_256_over_gymnasium_single"] >= 2.5,
                        "cadence_256_over_raw_rollout": ratios["cadence_256_over_raw_rollout"] >= 0.8},
    }
    # an older cadence (this script measuring another checkout) has no batched resets to time
    if importlib.util.find_spec("cadence.envs.batched.resets") is not None:
        from cadence.envs.batched.resets import BATCHED_FROM

        result["reset_batches"] = {"us_per_world": reset_batch_timing(), "batched_from": BATCHED_FROM}
    if (fas := fas_sweep_timing(args)) is not None:
        result["fas_sweep"] = fas
    elif (stored := RESULTS / "batched_rollout.json").exists() and "fas_sweep" in (old := json.loads(
            stored.read_text())):  # not re-measured: the earlier run's timing, with that run's machine
        result["fas_sweep"] = {**old["fas_sweep"], "machine": old["fas_sweep"].get("machine", old["machine"])}
    atomic_write_json(RESULTS / "batched_rollout.json", result)
    plot(result)
    plot_resets(result)
    for name, v in median.items():
        print(f"{name:26s} {v:11,.0f} env steps/s")
    for name, v in ratios.items():
        print(f"{name:34s} {v:6.2f}x (target >= {TARGETS[name + '_at_least']}x)")
    for name, v in result["overhead_over_raw_rollout_256"].items():
        print(f"{name:34s} {v:8.3f}")
    for m, v in result.get("reset_batches", {}).get("us_per_world", {}).items():
        print(f"reset of {m:>5s} worlds: {v['one_generator_per_world']:6.2f} us per world with a generator each, "
              f"{v['batched']:6.2f} batched ({v['speedup']:.1f}x)")


if __name__ == "__main__":
    main()
