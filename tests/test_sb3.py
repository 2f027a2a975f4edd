"""stable-baselines3 policies as cadence policies: loading, shape checks, open-loop sequences and a FAS sweep."""

import json

import numpy as np
import pytest

from cadence.agents.sb3 import SB3Policy, detect_sb3_algo, load_sb3_policy
from cadence.runs import evaluate_policy_fas

ENV = "InvertedPendulum-v5"


@pytest.fixture(scope="module")
def sac_zip(tmp_path_factory):
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    torch.set_num_threads(1)  # module-scoped: set up before conftest's per-test thread setting
    model = SAC("MlpPolicy", gym.make(ENV), learning_starts=100, batch_size=32, policy_kwargs={"net_arch": [16, 16]},
                seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=300)
    path = tmp_path_factory.mktemp("sb3") / "sac_pendulum.zip"
    model.save(path)
    return path, model


def test_load_detects_sac_and_acts_like_predict(sac_zip):
    path, model = sac_zip
    assert detect_sb3_algo(path) == "sac"
    policy = load_sb3_policy(path, ENV)
    assert isinstance(policy, SB3Policy) and policy.algo == "sb3-sac"
    assert load_sb3_policy(path.with_suffix(""), ENV).algo == "sb3-sac"  # SB3's own convention: .zip is implied
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    one = policy.act(obs[0])
    assert one.shape == (1,)
    np.testing.assert_allclose(one, model.predict(obs[0], deterministic=True)[0], atol=1e-6)
    batch = policy.act(obs)
    assert batch.shape == (5, 1)
    np.testing.assert_allclose(batch, model.predict(obs, deterministic=True)[0], atol=1e-6)

    seq = policy.act_sequence(obs[0], 3)
    assert seq.shape == (3, 1)
    np.testing.assert_allclose(seq, np.repeat(one[None], 3, axis=0), atol=1e-6)  # open loop: one action, repeated
    seqs = policy.act_sequence(obs, 4)
    assert seqs.shape == (5, 4, 1)
    np.testing.assert_allclose(seqs, np.repeat(batch[:, None], 4, axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="observation of shape"):
        policy.act(np.zeros(7, dtype=np.float32))


def test_fas_sweep_of_an_sb3_policy(sac_zip, tmp_path):
    policy = load_sb3_policy(sac_zip[0], ENV)
    result = evaluate_policy_fas(policy, ENV, tmp_path, "SB3 SAC", (1, 2), episodes=2, seed=0)
    assert result.asl == [1, 2] and np.asarray(result.returns).shape == (2, 2)
    assert np.all(np.asarray(result.returns) > 0)
    stored = json.loads((tmp_path / "fas_partial.json").read_text())
    assert stored["label"] == "SB3 SAC" and stored["partial"] and stored["fas"] == pytest.approx(result.fas)
    assert (tmp_path / "fas_partial.png").is_file()
    # sequential Gymnasium loop, one observation at a time, gives the same returns on this short task
    sequential = evaluate_policy_fas(policy, ENV, tmp_path, "SB3 SAC", (1, 2), episodes=2, seed=0, batched=False)
    np.testing.assert_allclose(sequential.returns, result.returns, rtol=1e-4)


def test_wrong_env_names_both_shapes(sac_zip):
    with pytest.raises(ValueError, match=r"does not fit Hopper-v5.*\(4,\).*\(1,\).*\(11,\).*\(3,\)"):
        load_sb3_policy(sac_zip[0], "Hopper-v5")


def test_missing_and_non_sb3_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stable-baselines3 model file"):
        load_sb3_policy(tmp_path / "nothing.zip", ENV)
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="not a stable-baselines3 model file"):
        load_sb3_policy(text, ENV)
    import zipfile

    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("weights.bin", b"\0")
    with pytest.raises(ValueError, match="not a stable-baselines3 model file"):
        load_sb3_policy(other, ENV)


@pytest.mark.parametrize("algo", ["TD3", "PPO"])
def test_td3_and_ppo_models_load_too(algo, tmp_path):
    import gymnasium as gym
    import stable_baselines3

    kwargs = {"n_steps": 32, "batch_size": 32} if algo == "PPO" else {}
    model = getattr(stable_baselines3, algo)("MlpPolicy", gym.make(ENV), policy_kwargs={"net_arch": [8]}, seed=0,
                                             device="cpu", **kwargs)
    model.save(tmp_path / "model.zip")  # untrained: only the file format matters here
    assert detect_sb3_algo(tmp_path / "model.zip") == algo.lower()
    policy = load_sb3_policy(tmp_path / "model.zip", ENV)
    assert policy.algo == f"sb3-{algo.lower()}"
    obs = np.zeros((3, 4), dtype=np.float32)
    np.testing.assert_allclose(policy.act_sequence(obs, 2)[:, 0], model.predict(obs, deterministic=True)[0], atol=1e-6)
