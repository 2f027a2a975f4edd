import dataclasses
import tomllib

import pytest

from cadence.agents import SACConfig
from cadence.config import ConfigError, documented_toml, load_sections, read_toml, to_toml, toml_value
from cadence.loops import TrainConfig

SCHEMA = {"train": TrainConfig, "agent": SACConfig}


def test_defaults_and_overrides():
    cfg = load_sections(SCHEMA, overrides=["agent.batch_size=64", "eval_every=500", "hidden_sizes=[32, 32]"])
    assert cfg["agent"].batch_size == 64 and cfg["train"].eval_every == 500
    assert cfg["agent"].hidden_sizes == (32, 32)
    assert cfg["agent"].gamma == 0.99
    cfg = load_sections(SCHEMA, overrides=["hidden_sizes=64,32", "train.device=cuda:1", "stop_return=inf"])
    assert cfg["agent"].hidden_sizes == (64, 32) and cfg["train"].device == "cuda:1"


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'agent.batchsize'.*agent.batch_size"):
        load_sections(SCHEMA, overrides=["agent.batchsize=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lr'"):
        load_sections(SCHEMA, overrides=["lr=3"])


@pytest.mark.parametrize("key, hint", [
    ("agent.batchsize", "did you mean agent.batch_size?"),
    ("batchsize", "did you mean agent.batch_size?"),
    ("agnt.gamma", "did you mean agent.gamma?"),
    ("train.evalevery", "did you mean train.eval_every?"),
    ("agent.nope", "valid keys: [agent] hidden_sizes, actor_lr,"),
])
def test_unknown_key_suggests_the_close_match(key, hint):
    with pytest.raises(ConfigError) as err:
        load_sections(SCHEMA, overrides=[f"{key}=3"])
    assert f"unknown config key {key!r}; {hint}" in str(err.value)
    assert "did you mean" in hint or "[train]" not in str(err.value)  # only the named section's keys


def test_a_bare_key_in_two_sections_must_name_one():
    @dataclasses.dataclass(frozen=True)
    class A:
        x: int = 1

    with pytest.raises(ConfigError, match="'x' is in sections a and b; write a.x or b.x"):
        load_sections({"a": A, "b": A}, overrides=["x=2"])


def test_invalid_values_name_their_section(tmp_path):
    with pytest.raises(ConfigError, match=r"^invalid config value agent\.gamma=1\.5: must be in \[0, 1\]$"):
        load_sections(SCHEMA, overrides=["agent.gamma=1.5"])
    path = tmp_path / "c.toml"
    path.write_text("[train]\ntotal_steps = 0\n")
    with pytest.raises(ConfigError, match=r"invalid config value train\.total_steps=0: must be > 0"):
        load_sections(SCHEMA, toml_path=path)


def test_documented_toml_is_valid_toml_of_the_defaults():
    assert [toml_value(v) for v in (True, float("inf"), (256, 256), "cpu", 3e-4)] == \
        ["true", "inf", "[256, 256]", '"cpu"', "0.0003"]
    text = documented_toml(SCHEMA)
    assert "# steps (parameters, optimiser states" in text  # every line of a long docstring is a comment
    assert "# target_entropy = (unset)" in text
    assert load_sections(SCHEMA, base=tomllib.loads(text)) == load_sections(SCHEMA)


@pytest.mark.parametrize("override, message", [
    ("agent.batch_size=abc", "must be an integer"),
    ("agent.batch_size=2.5", "must be an integer"),
    ("agent.gamma=1.5", "gamma=1.5: must be in"),
    ("agent.tau=0", "tau=0.0"),
    ("train.total_steps=-1", "total_steps=-1: must be > 0"),
    ("agent.autotune_alpha=maybe", "true or false"),
    ("agent.action_repeat=0", "action_repeat=0"),
    ("agent.actor_lr=inf", "actor_lr=inf: must be > 0 and finite"),
    ("agent.critic_lr=nan", "critic_lr=nan"),
    ('agent.batch_size="256"', "batch_size='256': must be an integer"),
    ('agent.gamma="0.9"', "must be a number"),
    ("train.progress=1", "true or false"),
    ("train.device=gpu", "device='gpu': must be cpu, cuda"),
    ("train.device=cuda:x", "device='cuda:x'"),
    ("train.precision=fp16", "precision='fp16': must be fp32 or bf16-mixed"),
])
def test_bad_values_fail_before_work(override, message):
    with pytest.raises(ConfigError, match=message):
        load_sections(SCHEMA, overrides=[override])


def test_toml_file_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nenv = "Walker2d-v5"\n[agent]\nhidden_sizes = [64, 64]\nlearning_starts = 5\n')
    cfg = load_sections(SCHEMA, toml_path=path, overrides=["agent.learning_starts=7"])
    assert cfg["train"].env == "Walker2d-v5" and cfg["agent"].learning_starts == 7
    out = tmp_path / "resolved.toml"
    out.write_text(to_toml(cfg))
    again = load_sections(SCHEMA, base=read_toml(out))
    assert again == cfg


def test_bad_toml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sections(SCHEMA, toml_path=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[critic]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[critic\]"):
        load_sections(SCHEMA, toml_path=bad)


def test_per_env_defaults_sit_under_the_users_settings():
    from cadence.runs import resolve_config

    assert resolve_config("sac", {"train": {"env": "InvertedPendulum-v5"}})["agent"].learning_starts == 1000
    assert resolve_config("srl", None, None, ["train.env=Reacher-v5"])["agent"].learning_starts == 2000
    assert resolve_config("sac", {"train": {"env": "Hopper-v5"}})["agent"].learning_starts == 10_000
    given = resolve_config("sac", {"train": {"env": "InvertedPendulum-v5"}}, None, ["agent.learning_starts=50"])
    assert given["agent"].learning_starts == 50


def test_a_run_that_would_never_learn_is_refused(tmp_path):
    import pytest

    from cadence.config import ConfigError
    from cadence.runs import resolve_config, train

    sections = resolve_config("sac", {"train": {"env": "Hopper-v5", "total_steps": 3000}})
    with pytest.raises(ConfigError, match=r"total_steps=3000 is not above agent.learning_starts=10000.*never learn"):
        train("sac", sections, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_flags_sit_between_the_file_and_set(tmp_path):
    from cadence.runs import resolve_config

    path = tmp_path / "a.toml"
    path.write_text('[train]\nenv = "Hopper-v5"\nseed = 1\n[agent]\nbatch_size = 64\n')
    flags = {"train": {"env": "InvertedPendulum-v5", "seed": 3}}
    cfg = resolve_config("sac", None, path, ["train.seed=5"], flags)
    # the flag beats the file, --set beats the flag, the file beats the defaults; the env's defaults apply
    assert (cfg["train"].env, cfg["train"].seed, cfg["agent"].batch_size) == ("InvertedPendulum-v5", 5, 64)
    assert cfg["agent"].learning_starts == 1000


def test_keys_are_checked_by_name_alone():
    from cadence.config import config_key_in, render_documented_toml

    names = {"train": ["seed", "env"], "agent": ["batch_size", "seed"]}
    assert config_key_in(names, "batch_size") == ("agent", "batch_size")
    with pytest.raises(ConfigError, match="did you mean agent.batch_size"):
        config_key_in(names, "agent.batchsize")
    with pytest.raises(ConfigError, match="in sections train and agent"):
        config_key_in(names, "seed")
    text = render_documented_toml({"agent": [("batch_size", "256", "Transitions.\nPer step."), ("x", None, "")]},
                                  notes={"agent.batch_size": "a note"}, commented={"agent.batch_size"})
    assert text.splitlines() == ["[agent]", "# Transitions.", "# Per step.", "# a note", "# batch_size = 256",
                                 "# x = (unset)"]
