import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cadence.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from cadence.cli import main
from cadence.config import ConfigError
from cadence.runs import read_run_config, resolve_config, train

TINY = [
    "agent.hidden_sizes=[32, 32]", "agent.batch_size=32", "agent.learning_starts=100", "agent.buffer_size=5000",
    "train.eval_every=200", "train.eval_episodes=2", "train.checkpoint_every=100", "train.log_every=100",
    "train.torch_threads=1", "train.progress=false",
]


def tiny(total_steps=600, seed=3, extra=()):
    return resolve_config("sac", {"train": {"env": "InvertedPendulum-v5", "seed": seed, "total_steps": total_steps}},
                          None, TINY + list(extra))


class Interrupt(BaseException):
    """Stands in for a process killed mid-run (a BaseException, as KeyboardInterrupt: hooks do not wrap it)."""


def actor_params(run_dir):
    return load_checkpoint(run_dir)["agent"]["actor"]


def test_run_folder_contents(tmp_path):
    state = train("sac", tiny(300), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.toml").is_file() and (run / "metrics.json").is_file()
    assert checkpoint_path(run).is_file() and checkpoint_path(run, "agent.pt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == state.step == 300
    algo, sections = read_run_config(run)
    assert algo == "sac" and sections == tiny(300)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/return")] == [200, 300]  # evals only, nothing at step 0
    # HParams: the config against the run's own eval tags, with no stray scalar card of its own
    assert not [t for t in events.Tags()["scalars"] if t.startswith("hparams/")]
    from tensorboard.plugins.hparams import plugin_data_pb2

    plugin = events.summary_metadata["_hparams_/experiment"].plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin).experiment
    names = [h.name for h in experiment.hparam_infos]
    assert sorted(names)[:4] == ["Algo", "Env", "J (decision interval)", "Seed"]  # the first columns, by name
    assert "agent.batch_size" in names and "agent.gamma" not in names  # settings changed from their defaults
    assert [m.name.tag for m in experiment.metric_infos] == ["eval/return", "eval/fas"]
    deploy = load_checkpoint(run, "agent.pt")
    assert "buffer" not in deploy and "critic" not in deploy["agent"]


def test_same_seed_same_numbers(tmp_path):
    a = train("sac", tiny(400), tmp_path / "a")
    b = train("sac", tiny(400), tmp_path / "b")
    assert a.evals == b.evals and a.episodes == b.episodes
    pa, pb = actor_params(tmp_path / "a"), actor_params(tmp_path / "b")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    train("sac", tiny(400, seed=4), tmp_path / "c")
    pc = actor_params(tmp_path / "c")
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)


def test_bf16_mixed_precision_run(tmp_path):
    mixed = train("sac", tiny(300, extra=["train.precision=bf16-mixed"]), tmp_path / "bf16")
    assert mixed.step == 300 and all(np.isfinite(r) for _, r in mixed.evals)
    train("sac", tiny(300), tmp_path / "fp32")
    pm, pf = actor_params(tmp_path / "bf16"), actor_params(tmp_path / "fp32")
    assert all(v.dtype == torch.float32 for v in pm.values())
    assert not all(torch.equal(pm[k], pf[k]) for k in pm)  # the gradient steps did run in bfloat16
    with pytest.raises(ConfigError, match="supported for sac and srl only, not mopo"):
        train("mopo", resolve_config("mopo", {"train": {"dataset": "hopper-medium", "total_steps": 100}}, None,
                                     ["train.precision=bf16-mixed"]), tmp_path / "mopo")
    assert not (tmp_path / "mopo").exists()
    from cadence.agents.mobile import MOBILE
    from cadence.agents.mopo import MOPO
    from cadence.loops import check_precision

    for cls in (MOPO, MOBILE):  # the loops themselves refuse them too, for callers that skip runs.train
        with pytest.raises(ConfigError, match="supported for sac and srl only"):
            check_precision(cls, "bf16-mixed")


def test_bf16_mixed_updates_use_fresh_weights_each_step():
    """Several updates in one learn() call equal the same updates one call at a time (autocast's bfloat16
    weight cache must not outlive an optimiser step)."""
    from gymnasium import spaces

    from cadence.agents import SAC, SACConfig
    from cadence.loops import TrainState, learn
    from cadence.replay import ReplayBuffer

    obs_space, act_space = spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32)
    buffer = ReplayBuffer(500, (3,), (2,))
    rng = np.random.default_rng(0)
    buffer.add(rng.normal(size=(500, 3)), rng.uniform(-1, 1, (500, 2)), rng.normal(size=500),
               rng.normal(size=(500, 3)), np.zeros(500, bool))
    config = SACConfig(hidden_sizes=(32, 32), batch_size=64)
    torch.manual_seed(0)
    together, apart = SAC(obs_space, act_space, config), SAC(obs_space, act_space, config)
    apart.load_state_dict(together.state_dict())
    torch.manual_seed(1)
    learn(together, buffer, 3, TrainState(), Path("."), "bf16-mixed")
    torch.manual_seed(1)
    for _ in range(3):
        learn(apart, buffer, 1, TrainState(), Path("."), "bf16-mixed")
    for name in ("actor", "critic"):
        a, b = getattr(together, name).state_dict(), getattr(apart, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    full = train("sac", tiny(600), tmp_path / "full")

    def stop_at_450(state):
        if state.step >= 450:
            raise Interrupt

    with pytest.raises(Interrupt):
        train("sac", tiny(600), tmp_path / "cut", callbacks=[stop_at_450])
    saved_step = load_checkpoint(tmp_path / "cut")["counters"]["step"]
    assert 100 <= saved_step < 450  # a checkpoint from before the interruption
    resumed = train("sac", tiny(600), tmp_path / "cut", resume=True)
    assert resumed.step == full.step and resumed.episodes == full.episodes
    assert resumed.evals == full.evals
    pf, pr = actor_params(tmp_path / "full"), actor_params(tmp_path / "cut")
    assert all(torch.equal(pf[k], pr[k]) for k in pf)
    bf = load_checkpoint(tmp_path / "full")["buffer"]["storage"]
    br = load_checkpoint(tmp_path / "cut")["buffer"]["storage"]
    assert all(torch.equal(bf[k], br[k]) for k in bf)


def test_resume_errors_overwrite_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train("sac", tiny(200), empty, resume=True)
    assert list(empty.iterdir()) == []

    run = tmp_path / "run"
    train("sac", tiny(200), run)
    checkpoint_path(run).write_bytes(b"not a checkpoint")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="corrupt"):
        train("sac", tiny(400), run, resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    with pytest.raises(ConfigError, match="already holds a run"):
        train("sac", tiny(200), tmp_path / "run2") and train("sac", tiny(200), tmp_path / "run2")


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    from cadence.agents.sac import SAC
    from cadence.loops import TrainingDiverged

    real_update = SAC.update

    def poisoned(self, batch):
        metrics = real_update(self, batch)
        if self.updates > 150:
            metrics["critic_loss"] = float("nan")
        return metrics

    monkeypatch.setattr(SAC, "update", poisoned)
    with pytest.raises(TrainingDiverged, match=r"critic_loss became nan at step \d+"):
        train("sac", tiny(600), tmp_path / "run")
    assert load_checkpoint(tmp_path / "run")["counters"]["step"] > 0


def test_cli_train_then_eval_fas(tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train", "sac", "--env", "InvertedPendulum-v5", "--seed", "1", "--total-steps", "300",
            "--run-dir", str(run), "--no-progress"] + sum((["--set", s] for s in TINY), [])
    assert main(args) == 0
    assert main(["eval", "fas", str(run), "--asl", "1,2,4", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "FAS" in out and "0.052" in out
    # part of the grid is no FAS: its own file, nothing in metrics.json or TensorBoard
    fas = json.loads((run / "fas_partial.json").read_text())
    assert fas["asl"] == [1, 2, 4] and np.asarray(fas["returns"]).shape == (3, 2) and fas["partial"]
    assert (run / "fas_partial.png").stat().st_size > 0
    assert not (run / "fas.json").exists() and "fas" not in json.loads((run / "metrics.json").read_text())
    # the full grid: fas.json, metrics.json, and TensorBoard (FAS, return per ASL, the figure), logged once per step
    for _ in range(2):
        assert main(["eval", "fas", str(run), "--episodes", "1"]) == 0
    fas = json.loads((run / "fas.json").read_text())
    assert fas["trained_steps"] == 300 and not fas["partial"]
    assert json.loads((run / "metrics.json").read_text())["fas"] == pytest.approx(fas["fas"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("eval/fas")] == [(300, round(fas["fas"], 6))]
    assert not [t for t in events.Tags()["scalars"] if t.startswith("fas/return_asl")]  # no one-point cards
    assert "fas/return_vs_asl" in events.Tags()["images"]
    curve = EventAccumulator(str(run / "fas_by_asl"))  # the curve itself, x = ASL, the latest sweep only
    curve.Reload()
    assert [e.step for e in curve.Scalars("fas/return_by_asl")] == [1, *range(2, 31, 2)]
    assert curve.Scalars("fas/return_by_asl")[0].value == pytest.approx(fas["mean_return"][0])
    assert main(["eval", "fas", str(run), "--asl", "1,40"]) == 2
    assert "outside FAS's grid 1..30" in capsys.readouterr().err
    # resuming a finished run with a larger budget continues it
    assert main(["train", "sac", "--resume", str(run), "--total-steps", "400", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 400
    # the sweep of the 300-step policy is set aside, not left to describe the extended run
    assert not (run / "fas.json").exists() and "fas" not in metrics
    assert json.loads((run / "fas_at_300_steps.json").read_text())["fas"] == pytest.approx(fas["fas"])
    assert (run / "fas_at_300_steps.png").is_file() and (run / "fas_by_asl_at_300_steps").is_dir()
    # flags that would change the run are refused on resume, not silently ignored
    assert main(["train", "sac", "--resume", str(run), "--run-dir", str(tmp_path / "other"), "--morec"]) == 2
    assert "drop --run-dir, --morec" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "sac", "--env", "Hoper-v5", "--run-dir", str(tmp_path / "x")]) == 2
    assert "Hopper-v5" in capsys.readouterr().err
    assert main(["train", "sac", "--set", "agent.nope=1", "--run-dir", str(tmp_path / "y")]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["eval", "fas", str(tmp_path)]) == 2
    assert "not a cadence run folder" in capsys.readouterr().err
    assert main(["eval", "fas", str(tmp_path), "--asl", "4,2"]) == 2
    if not torch.cuda.is_available():
        assert main(["train", "sac", "--set", "train.device=cuda", "--run-dir", str(tmp_path / "z")]) == 2
        assert "train.device='cuda' is not available" in capsys.readouterr().err
        assert not (tmp_path / "z").exists()


def test_srl_run_fas_and_planner(tmp_path):
    run = tmp_path / "srl"
    args = ["train", "srl", "--env", "InvertedPendulum-v5", "--sequence-length", "4", "--total-steps", "240",
            "--run-dir", str(run), "--no-progress", "--set", "agent.gru_size=16",
            "--set", "agent.model_hidden_sizes=[32]", "--set", "agent.actor_batch_size=16"]
    args += sum((["--set", s] for s in TINY if "hidden" not in s), [])
    assert main(args) == 0
    bundle = load_checkpoint(run)
    assert bundle["algo"] == "srl"
    assert bundle["buffer"]["size"] == bundle["counters"]["step"] >= 240  # one row per primitive step
    assert set(load_checkpoint(run, "agent.pt")["agent"]) == {"actor"}
    # evaluations are labelled by ASL: the headline at ASL 1 (comparable with SAC), and at SRL's own J = 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    at_1, at_4 = events.Scalars("eval/return"), events.Scalars("eval/return_asl04")
    assert [e.step for e in at_1] == [e.step for e in at_4] == [s for s, _ in bundle["counters"]["evals"]]
    assert [e.value for e in at_1] == pytest.approx([r for _, r in bundle["counters"]["evals"]])
    assert main(["eval", "fas", str(run), "--asl", "1,3,5", "--episodes", "2"]) == 0
    assert np.asarray(json.loads((run / "fas_partial.json").read_text())["returns"]).shape == (3, 2)
    assert main(["eval", "fas", str(run), "--asl", "1,2", "--episodes", "1", "--planner", "--horizon", "4",
                 "--samples", "20", "--iterations", "2"]) == 0
    assert json.loads((run / "fas_partial_mpc.json").read_text())["asl"] == [1, 2]


def test_eval_rejects_mismatched_checkpoints(tmp_path, capsys):
    run = tmp_path / "sac"
    train("sac", tiny(150), run)
    assert main(["eval", "fas", str(run), "--planner"]) == 2
    assert "without a learned model" in capsys.readouterr().err
    # a checkpoint of another agent type under this run's config
    (run / "config.toml").write_text('[algo]\nname = "srl"\n[train]\nenv = "InvertedPendulum-v5"\n'
                                     "[agent]\nsequence_length = 2\n")
    assert main(["eval", "fas", str(run), "--asl", "1"]) == 2
    assert "holds a 'sac' agent but config.toml says 'srl'" in capsys.readouterr().err


def test_sac_j_stores_decisions_and_counts_primitive_steps(tmp_path):
    state = train("sac", tiny(300, extra=["agent.action_repeat=4"]), tmp_path / "sacj")
    bundle = load_checkpoint(tmp_path / "sacj")
    assert state.step >= 300 and state.decisions < state.step  # each decision is up to 4 primitive steps
    assert bundle["buffer"]["size"] == state.decisions  # SAC-J learns from decision-level transitions
    rewards = bundle["buffer"]["storage"]["reward"]
    assert rewards.max() > 1.0  # a repeated action's reward sums its primitive rewards (1 per alive step)


@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_batched_collection_resumes_exactly_mid_episode(tmp_path, algo):
    # 4 worlds on the rollout backend; SRL stores every primitive transition of its 4-action sequences
    extra = ["train.num_envs=4"] + (["agent.sequence_length=4", "agent.actor_batch_size=16", "agent.gru_size=16",
                                     "agent.model_hidden_sizes=[32, 32]", "agent.encoder_sizes=[32]"]
                                    if algo == "srl" else [])

    def config(total):
        base = {"train": {"env": "Hopper-v5", "seed": 5, "total_steps": total}}
        return resolve_config(algo, base, None, [k for k in TINY if not k.startswith("agent.hidden")] + extra)

    full = train(algo, config(700), tmp_path / "full")
    assert full.step >= 700 and full.decisions * (4 if algo == "srl" else 1) >= full.step > 0
    buffer = load_checkpoint(tmp_path / "full")["buffer"]
    assert buffer["size"] == full.step  # every primitive step stored once (SAC-1: one per decision)

    def stop_at_550(state):
        if state.step >= 550:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(algo, config(700), tmp_path / "cut", callbacks=[stop_at_550])
    assert 100 <= load_checkpoint(tmp_path / "cut")["counters"]["step"] < 550
    resumed = train(algo, config(700), tmp_path / "cut", resume=True)
    assert (resumed.step, resumed.episodes, resumed.evals) == (full.step, full.episodes, full.evals)
    pf, pr = actor_params(tmp_path / "full"), actor_params(tmp_path / "cut")
    assert all(torch.equal(pf[k], pr[k]) for k in pf)


def test_finished_run_extended_equals_one_longer_run(tmp_path):
    """A finished run stops mid-episode; extending it continues that episode, physics included."""
    full = train("sac", tiny(600), tmp_path / "full")
    short = train("sac", tiny(333), tmp_path / "ext")  # 333: not an episode end, not a checkpoint step
    assert short.step == 333
    extended = train("sac", tiny(600), tmp_path / "ext", resume=True)
    assert (extended.step, extended.episodes) == (full.step, full.episodes)
    assert [e for e in extended.evals if e[0] != 333] == full.evals  # the short run's final evaluation is extra
    pf, pe = actor_params(tmp_path / "full"), actor_params(tmp_path / "ext")
    assert all(torch.equal(pf[k], pe[k]) for k in pf)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "ext"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/return")] == [200, 333, 400, 600]  # nothing purged at 333


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rng_state_covers_cuda_generators():
    from cadence.seeding import rng_state, set_rng_state

    torch.rand(1, device="cuda")  # initialise CUDA
    saved = rng_state()
    assert "torch_cuda" in saved
    first = torch.rand(4, device="cuda")
    set_rng_state(saved)
    torch.testing.assert_close(torch.rand(4, device="cuda"), first, rtol=0, atol=0)


def test_stop_return_stops_at_the_first_good_evaluation(tmp_path):
    # seed 7: an episode ends on step 200, the step whose evaluation stops the run
    state = train("sac", tiny(600, seed=7, extra=["train.stop_return=-1"]), tmp_path / "stop")
    assert state.step == 200 and [s for s, _ in state.evals] == [200]  # the first evaluation already reached it
    assert json.loads((tmp_path / "stop" / "metrics.json").read_text())["stopped_early"] is True
    episode = load_checkpoint(tmp_path / "stop")["env"]["episode"]
    # that episode is counted and closed before stopping: the saved one is the next, fresh episode
    assert episode["start"] and episode["return"] == 0.0


def test_off_a_terminal_progress_is_plain_lines(tmp_path, capsys):
    train("sac", tiny(300, extra=["train.progress=true"]), tmp_path / "run")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("SAC step")]
    assert [line.split()[2] for line in lines] == ["100/300", "200/300", "300/300"]  # every log_every steps
    assert all("steps/s" in line and "last return" in line for line in lines)
    assert "critic_loss" in lines[-1] and " -0 " not in out
    assert "━" not in out  # no half-drawn bar in a log
    assert "eval return" in out and "(ASL 1)" in out
