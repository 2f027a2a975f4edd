import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents import MOBILE, MOBILEConfig
from cadence.agents.mobile import bellman_inconsistency
from cadence.checkpoint import CheckpointError, load_checkpoint
from cadence.cli import main
from cadence.envs import make
from cadence.replay import DatasetError
from cadence.replay.collect import collect_transitions, uniform_policy
from cadence.runs import resolve_config, train
from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble

SMALL = ["agent.rollout_every=50", "agent.rollout_batch_size=32", "agent.rollout_length=3", "agent.batch_size=32",
         "agent.hidden_sizes=[32, 32]"]


@pytest.fixture
def hopper_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CADENCE_DATA_DIR", str(tmp_path))
    env = make("Hopper-v5")
    data = collect_transitions(env, uniform_policy(env.action_space, 0), 1500, seed=0)
    data.metadata = {"env_id": "Hopper-v5"}
    data.save_hdf5(tmp_path / "hopper-random-v5.hdf5")
    return tmp_path


def offline(algo, total=150, extra=()):
    base = {"train": {"dataset": "hopper-random", "total_steps": total, "eval_every": 100, "eval_episodes": 1,
                      "model_max_epochs": 1, "torch_threads": 1, "progress": False, "checkpoint_every": 50,
                      "log_every": 50}}
    return resolve_config(algo, base, None, [*SMALL, *extra])


def test_bellman_inconsistency_is_the_std_over_elites_of_their_mean_next_q(monkeypatch):
    torch.manual_seed(0)
    box = spaces.Box(-1, 1, (1,), np.float32)
    agent = MOBILE(spaces.Box(-np.inf, np.inf, (2,), np.float32), box, MOBILEConfig(hidden_sizes=(8,)))
    model = GaussianEnsemble(2, 1, EnsembleConfig(n_members=3, n_elites=2, hidden_sizes=(8,)))
    model.elites.copy_(torch.tensor([0, 2]))
    # elite 0 moves s_0 by +1, elite 2 by +3 (member 1 by +100, not an elite); elite 2 has std 2 on s_0, elite 0 none
    means, logvars = torch.zeros(3, 4, 3), torch.full((3, 4, 3), -60.0)
    means[0, :, 0], means[1, :, 0], means[2, :, 0] = 1.0, 100.0, 3.0
    logvars[2, :, 0] = 2 * np.log(2.0)
    monkeypatch.setattr(model, "forward", lambda o, a: (means, logvars))
    # critics Q_1 = s'_0 + a and Q_2 = s'_0 + 5: the min is s'_0 (the actor's action is 0); rewards play no part
    monkeypatch.setattr(agent, "critic_target", lambda o, a: torch.stack([o[:, 0] + a[:, 0], o[:, 0] + 5]))
    monkeypatch.setattr(agent, "actor", lambda o: (torch.zeros(o.shape[0], 1), torch.full((o.shape[0],), 7.0)))
    u = bellman_inconsistency(model, agent, torch.zeros(4, 2), torch.zeros(4, 1), samples=1)
    assert u.shape == (4,) and not torch.allclose(u, torch.full((4,), float(np.std([1.0, 3.0], ddof=1))))
    # with many draws elite 2's mean next Q tends to 3, so u tends to std([1, 3]) = sqrt(2)
    u = bellman_inconsistency(model, agent, torch.zeros(4, 2), torch.zeros(4, 1), samples=20000,
                              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(u, torch.full((4,), float(np.std([1.0, 3.0], ddof=1))), atol=0.05, rtol=0)


@pytest.mark.parametrize("algo", ["mopo", "mobile"])
def test_offline_run_end_to_end_and_exact_resume(hopper_data, algo):
    full = train(algo, offline(algo), hopper_data / "full")
    assert full.step == 150 and [s for s, _ in full.evals] == [100, 150]
    assert (hopper_data / "full" / "checkpoints" / "model.pt").is_file()
    buffer = load_checkpoint(hopper_data / "full")["buffer"]
    assert buffer["size"] > 32  # model rollouts were stored (3 rounds of up to 32 x 3 transitions)

    class Interrupt(BaseException):
        pass

    def stop(state):
        if state.step >= 120:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(algo, offline(algo), hopper_data / "cut", callbacks=[stop])
    resumed = train(algo, offline(algo), hopper_data / "cut", resume=True)
    assert resumed.evals == full.evals
    a = load_checkpoint(hopper_data / "full")["agent"]["actor"]
    b = load_checkpoint(hopper_data / "cut")["agent"]["actor"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_offline_bad_input(hopper_data, capsys):
    with pytest.raises(DatasetError, match="observation shape \\(11,\\) does not match the env's \\(17,\\)"):
        train("mopo", offline("mopo", extra=["train.env=HalfCheetah-v5"]), hopper_data / "wrong_env")
    with pytest.raises(Exception, match="rollout_length"):
        offline("mopo", extra=["agent.rollout_length=0"])
    assert main(["train", "sac", "--dataset", "hopper-random"]) == 2
    assert "for the offline algos" in capsys.readouterr().err
    # a run folder whose fitted model belongs to another env
    (hopper_data / "other" / "checkpoints").mkdir(parents=True)
    torch.save({"algo": "mopo", "model": {}, "env": "Walker2d-v5"}, hopper_data / "other" / "checkpoints" / "model.pt")
    with pytest.raises(CheckpointError, match="holds a model of Walker2d-v5, but this run evaluates in Hopper-v5"):
        train("mopo", offline("mopo"), hopper_data / "other")


def test_morec_mopo_fits_a_dynamics_reward_and_filters_rollouts(hopper_data):
    sections = offline("mopo", total=60, extra=["agent.morec=true", "agent.rollout_length=10",
                                                           "agent.morec_fit_steps=60"])
    from cadence.world_models import DynamicsRewardConfig

    assert DynamicsRewardConfig().history == 400 and DynamicsRewardConfig().every == 10  # MOREC's ensemble
    state = train("mopo", sections, hopper_data / "morec")
    assert state.step == 60
    saved = load_checkpoint(hopper_data / "morec", "dynamics_reward.pt")
    assert "dynamics_reward" in saved and saved["fit"]
    # the threshold is the 5% quantile of the chosen rewards on data pairs (see TransitionFilter.calibrated)
    assert saved["threshold_quantile"] == 0.05 and np.isfinite(saved["threshold"])
    from cadence.recipes import load_model, morec_filter

    model = load_model(hopper_data / "morec", "Hopper-v5")
    kept = morec_filter(hopper_data / "morec", "mopo", None, model, 0, 60, 0.05)(torch.Generator())
    assert kept.config.threshold == saved["threshold"]  # loaded, not refitted (no data was given)
    # the ablation: the same reward and choice, and no rollout ends early
    ablation = morec_filter(hopper_data / "morec", "mopo", None, model, 0, 60, 0.05,
                             early_termination=False)(torch.Generator())
    obs, act = torch.randn(64, 11), torch.rand(64, 3) * 2 - 1
    assert ablation.config.threshold == float("-inf") and ablation.filter(obs, act).keep.all()
    torch.testing.assert_close(ablation.dynamics_reward.reward(obs, act, obs),
                               kept.dynamics_reward.reward(obs, act, obs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("algo", ["mopo", "mobile"])
def test_offline_run_with_morec_trains_on_cuda(hopper_data, algo):
    extra = ["train.device=cuda", "agent.morec=true", "agent.morec_fit_steps=50"]
    state = train(algo, offline(algo, total=60, extra=extra), hopper_data / algo)
    assert state.step == 60 and np.isfinite(state.evals[-1][1])
    resumed = train(algo, offline(algo, total=80, extra=extra), hopper_data / algo, resume=True)
    assert resumed.step == 80


def test_offline_nan_loss_raises_training_diverged(hopper_data, monkeypatch):
    from cadence.loops import TrainingDiverged

    real_update = MOBILE.update

    def poisoned(self, batch):
        metrics = real_update(self, batch)
        metrics["critic_loss"] = float("nan") if self.updates > 60 else metrics["critic_loss"]
        return metrics

    monkeypatch.setattr(MOBILE, "update", poisoned)
    with pytest.raises(TrainingDiverged, match=r"critic_loss became nan at gradient step 61"):
        train("mobile", offline("mobile"), hopper_data / "nan")
    assert load_checkpoint(hopper_data / "nan")["counters"]["step"] == 50  # the last good checkpoint stays


def test_model_file_keeps_the_models_size(tmp_path):
    from cadence.checkpoint import save_checkpoint
    from cadence.recipes import load_model
    from cadence.world_models.ensemble import model_bundle

    model = GaussianEnsemble(11, 3, EnsembleConfig(n_members=3, n_elites=2, hidden_sizes=(24, 12)))
    save_checkpoint(tmp_path, {"algo": "mopo", "model": model_bundle(model), "env": "Hopper-v5"}, "model.pt")
    loaded = load_model(tmp_path, "Hopper-v5")
    assert loaded.config == model.config
    obs, act = torch.randn(5, 11), torch.randn(5, 3)
    torch.testing.assert_close(loaded(obs, act), model(obs, act), rtol=0, atol=0)
    # a model file of the older layout (bare weights, sizes assumed) is refused with a clear message
    save_checkpoint(tmp_path, {"algo": "mopo", "model": model.state_dict(), "env": "Hopper-v5"}, "model.pt")
    with pytest.raises(CheckpointError, match="does not hold a loadable model"):
        load_model(tmp_path, "Hopper-v5")
