"""Curriculum teachers (docs/ARCHITECTURE.md, "ALP-GMM and other teachers"): ALP, the GMM refit schedule and
model choice, RIAC's split rule, Covar-GMM's preference, bounds, exact state round trips, settings from a config
and bad input."""


import numpy as np
import pytest
import torch
from conftest import roundtrip
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from cadence.config import ConfigError
from cadence.curricula import (
    LAYOUT_TEACHERS,
    TEACHERS,
    ALPGMMTeacher,
    CovarGMMTeacher,
    NearestNeighbourALP,
    RandomTeacher,
    RIACTeacher,
    check_teacher_settings,
    fit_mixture,
    make_teacher,
    read_rvae,
    teacher_settings,
)
from cadence.curricula.gmm import n_parameters

LOW, HIGH = np.array([0.0, -2.0]), np.array([1.0, 3.0])


def feed(teacher, n, returns=None):
    """Run ``n`` episodes: sample a task, report a return (by default one that grows with p0 and time)."""
    for _ in range(n):
        p = teacher.sample()
        u = (p - teacher.low) / (teacher.high - teacher.low)
        r = returns(u, teacher.n_episodes) if returns is not None else u[0] * min(1.0, teacher.n_episodes / 400)
        teacher.update(p, float(r))


# ------------------------------------------------------------------------------------------------------ ALP
def test_alp_worked_example():
    # alp_min_history=1: ALP from the second task on, to show the arithmetic (the default waits for 6, see below)
    teacher = ALPGMMTeacher([0.0], [10.0], reward_range=(0.0, 100.0), alp_min_history=1)
    # (p, return) -> ALP: p in [0, 10] and returns in [0, 100] are both scaled to [0, 1]
    steps = [(1.0, 20.0, 0.0),   # first task: no neighbour
             (9.0, 80.0, 0.6),   # nearest is p=1 (r=0.2): |0.8 - 0.2|
             (2.0, 50.0, 0.3),   # nearest is p=1: |0.5 - 0.2|
             (7.0, 40.0, 0.4),   # nearest is p=9 (2 away, vs 5 from p=2): |0.4 - 0.8|
             (9.5, 150.0, 0.2)]  # return clipped to 1; nearest p=9: |1 - 0.8|
    for p, r, alp in steps:
        teacher.update([p], r)
        assert teacher.alps[-1] == pytest.approx(alp)
    assert teacher.history[1].tolist() == [20.0, 80.0, 50.0, 40.0, 150.0]  # history keeps raw returns


def test_alp_is_zero_until_six_tasks_are_in_the_history_as_in_the_reference():
    # teachDRL's EmpiricalALPComputer: alp = 0 unless len(history) > 5, the task joining the history either way
    teacher = ALPGMMTeacher([0.0], [1.0], reward_range=(0.0, 1.0))
    returns = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.9]
    for i, r in enumerate(returns):
        teacher.update([i / 10], r)
    # tasks 1-6 meet at most 5 earlier ones; task 7 (p=0.6) has 6, nearest p=0.5 (r=1); task 8's nearest is task 7
    assert teacher.alps.tolist() == pytest.approx([0.0] * 6 + [1.0, 0.9])
    assert teacher.hparams()["alp_min_history"] == 6


def test_buffered_kdtree_finds_the_same_neighbour_as_brute_force():
    rng = np.random.default_rng(0)
    points, returns = rng.random((300, 3)), rng.random(300)
    alp = NearestNeighbourALP(3, rebuild_every=32, min_history=1)
    for i, (p, r) in enumerate(zip(points, returns)):
        got = alp.add(p, r)
        expected = 0.0 if i == 0 else abs(r - returns[np.argmin(((points[:i] - p) ** 2).sum(1))])
        assert got == pytest.approx(expected)
    assert alp.tree_size == 288


# ------------------------------------------------------------------------------------------- GMM refit schedule
def test_alp_gmm_fits_at_250_then_500_and_keeps_the_lowest_aic():
    teacher = ALPGMMTeacher(LOW, HIGH, seed=1, reward_range=(0.0, 1.0))
    feed(teacher, 249)
    for _ in range(50):
        teacher.sample()
    m = teacher.metrics()
    assert (m["gmm_fits"], m["gmm_components"], m["gmm_samples"]) == (0, 0, 0)  # still bootstrapping: uniform
    feed(teacher, 1)
    assert teacher.metrics()["gmm_fits"] == 1 and teacher.gmm.episode == 250
    samples = [teacher.sample() for _ in range(200)]
    assert 0 < teacher.metrics()["gmm_samples"] < 200  # a share of tasks stays uniform
    assert all(((s >= LOW) & (s <= HIGH)).all() for s in samples)

    # the choice of k: sklearn fits with the same seed on the same [p, ALP] rows give the same AICs
    params, _ = teacher.history
    data = np.column_stack([(params - LOW) / (HIGH - LOW), teacher.alps])[-250:]
    with threadpool_limits(limits=1):  # as the teacher fits: threads only slow fits this small on a busy machine
        aics = [GaussianMixture(k, covariance_type="full", random_state=teacher.gmm.random_state).fit(data).aic(data)
                for k in range(2, 11)]
    assert teacher.gmm.ks == tuple(range(2, 11)) and teacher.gmm.criterion == "aic"  # the reference's default
    np.testing.assert_allclose(teacher.gmm.scores, aics, rtol=1e-9)
    assert teacher.gmm.k == 2 + int(np.argmin(aics))

    feed(teacher, 249)
    assert teacher.metrics()["gmm_fits"] == 1
    feed(teacher, 1)
    assert teacher.metrics()["gmm_fits"] == 2 and teacher.gmm.episode == 500


def test_gmm_schedule_with_other_numbers():
    teacher = CovarGMMTeacher([0.0], [1.0], reward_range=(0, 1), bootstrap=30, fit_every=20, k_range=(1, 3))
    fitted_at = []
    for _ in range(75):
        feed(teacher, 1)
        if teacher.gmm is not None and teacher.gmm.episode == teacher.n_episodes:
            fitted_at.append(teacher.n_episodes)
    assert fitted_at == [30, 50, 70]
    assert teacher.gmm.ks == (1, 2, 3)


def test_bic_and_aicc_choose_k_like_sklearn_and_the_aicc_formula():
    data = np.random.default_rng(1).random((120, 2))  # a uniform square: more components always fit a bit better
    ks = (1, 2, 3, 4, 5)
    with threadpool_limits(limits=1):
        fits = [GaussianMixture(k, covariance_type="full", random_state=7).fit(data) for k in ks]
    aic = np.array([g.aic(data) for g in fits])
    bic = np.array([g.bic(data) for g in fits])
    for g in fits:  # the parameter count AICc uses is the one sklearn's AIC and BIC charge
        assert n_parameters(g.n_components, 2) == g._n_parameters()
    p = np.array([n_parameters(k, 2) for k in ks])
    aicc = aic + 2 * p * (p + 1) / (len(data) - p - 1)
    chosen = {}
    for criterion, expected in (("aic", aic), ("bic", bic), ("aicc", aicc)):
        fit = fit_mixture(data, ks, random_state=7, criterion=criterion)
        np.testing.assert_allclose(fit.scores, expected, rtol=1e-9)
        assert fit.k == ks[int(np.argmin(expected))] and fit.criterion == criterion
        chosen[criterion] = fit.k
    assert chosen["bic"] < chosen["aic"]  # log(120) > 2 per parameter: BIC settles for fewer components
    # AICc is undefined with as many parameters as points - 1: that k is never chosen
    assert fit_mixture(data[:12], (1, 2), random_state=7, criterion="aicc").scores[1] == np.inf


def test_the_criterion_is_a_setting_of_both_mixture_teachers():
    alp = ALPGMMTeacher(LOW, HIGH, seed=1, reward_range=(0, 1), criterion="bic", fit_every=40, bootstrap=40,
                        k_range=(1, 4))
    feed(alp, 40)
    assert alp.gmm.criterion == "bic" and alp.hparams()["criterion"] == "bic"
    covar = CovarGMMTeacher(LOW, HIGH, reward_range=(0, 1), criterion="aicc")
    assert covar.hparams()["criterion"] == "aicc"
    with pytest.raises(ValueError, match="criterion must be one of aic, bic, aicc, got 'BIC'"):
        ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1), criterion="BIC")


# ------------------------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_every_sample_is_inside_the_box(name):
    teacher = make_teacher(name, LOW, HIGH, seed=3, reward_range=(0.0, 1.0))
    feed(teacher, 520)  # past two fits and several RIAC splits
    samples = np.array([teacher.sample() for _ in range(500)])
    assert samples.shape == (500, 2) and samples.dtype == np.float64
    assert (samples >= LOW).all() and (samples <= HIGH).all()


# ------------------------------------------------------------------------------------------------------ RIAC
def test_riac_splits_where_alp_changes():
    # 1-D: left of 0.3 returns climb over time (high ALP), right of it they stay flat (no ALP)
    teacher = RIACTeacher([0.0], [1.0], seed=0, reward_range=(0.0, 1.0))
    rng = np.random.default_rng(0)
    for i in range(201):
        p = rng.random()
        teacher.update([p], i / 200 if p < 0.3 else 0.5)
    assert teacher.metrics()["splits"] == 1 and len(teacher.regions) == 3
    root = teacher.regions[0]
    assert root.split_dim == 0 and abs(root.threshold - 0.3) < 0.06
    left, right = (teacher.regions[i] for i in root.children)
    assert left.alp > 0.3 and right.alp == pytest.approx(0.0)
    assert len(left.returns) + len(right.returns) == 201


def test_riac_samples_the_high_alp_region_most():
    teacher = RIACTeacher([0.0], [1.0], seed=0, reward_range=(0.0, 1.0))
    feed(teacher, 600, returns=lambda u, n: n / 600 if u[0] < 0.3 else 0.5)
    samples = np.array([teacher.sample()[0] for _ in range(1000)])
    assert (samples < 0.3).mean() > 0.6


# --------------------------------------------------------------------------------------------------- Covar-GMM
def test_covar_gmm_prefers_the_component_whose_returns_rise():
    teacher = CovarGMMTeacher([0.0], [1.0], seed=0, reward_range=(0.0, 1.0))
    rng = np.random.default_rng(1)
    for i in range(250):
        p = rng.random()
        t = i / 250
        teacher.update([p], (t if p < 0.5 else 1.0 - t) + 0.02 * rng.standard_normal())  # rising left, falling right
    lp = teacher.interest(teacher.gmm)
    best = int(np.argmax(lp))
    assert lp[best] > 0 and teacher.gmm.means[best, 0] < 0.5
    assert all(lp[j] == 0 for j in range(teacher.gmm.k) if teacher.gmm.means[j, 0] > 0.55)
    samples = np.array([teacher.sample()[0] for _ in range(1000)])
    assert (samples < 0.5).mean() > 0.7  # uniform would give 0.5; ~0.85 expected (80% GMM, mostly rising side)


# ------------------------------------------------------------------------------------------------ state round trip
@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_state_dict_round_trip_samples_the_same_tasks(name):
    kwargs = {"reward_range": (0.0, 1.0)}
    teacher = make_teacher(name, LOW, HIGH, seed=5, **kwargs)
    feed(teacher, 260)
    restored = make_teacher(name, LOW, HIGH, seed=99, **kwargs)  # another seed: everything must come from the state
    restored.load_state_dict(roundtrip(teacher.state_dict()))
    assert restored.metrics() == teacher.metrics()
    for _ in range(20):  # the same tasks, and the same learning from the same returns (fits and splits included)
        a, b = teacher.sample(), restored.sample()
        np.testing.assert_array_equal(a, b)
        teacher.update(a, 0.3)
        restored.update(b, 0.3)
    feed(teacher, 240)
    feed(restored, 240)
    np.testing.assert_array_equal(teacher.history[0], restored.history[0])
    assert teacher.metrics() == restored.metrics()


def test_state_from_another_teacher_or_setting_is_refused():
    alp = ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1))
    with pytest.raises(ValueError, match="'alp-gmm' teacher into a 'covar-gmm'"):
        CovarGMMTeacher(LOW, HIGH, reward_range=(0, 1)).load_state_dict(alp.state_dict())
    with pytest.raises(ValueError, match="fit_every"):
        ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1), fit_every=100).load_state_dict(alp.state_dict())
    with pytest.raises(ValueError, match="box"):
        ALPGMMTeacher(LOW, HIGH + 1, reward_range=(0, 1)).load_state_dict(alp.state_dict())


def test_states_saved_before_a_setting_existed_load_as_the_old_behaviour():
    teacher = ALPGMMTeacher(LOW, HIGH, seed=2, reward_range=(0, 1), alp_min_history=1)
    feed(teacher, 30)
    old = teacher.state_dict()
    for key in ("criterion", "alp_min_history"):  # what a state saved before these settings lacks
        del old["hparams"][key]
    restored = ALPGMMTeacher(LOW, HIGH, seed=2, reward_range=(0, 1), alp_min_history=1)
    restored.load_state_dict(roundtrip(old))
    np.testing.assert_array_equal(restored.sample(), teacher.sample())
    # with today's default (6) it would continue with another rule: refused, naming the setting
    with pytest.raises(ValueError, match=r"'alp_min_history': \(1, 6\)"):
        ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1)).load_state_dict(roundtrip(old))


# ------------------------------------------------------------------------------------------------------ settings
def test_every_teacher_lists_its_settings_and_a_config_checks_them():
    assert set(teacher_settings("alp-gmm")) >= {"fit_every", "random_share", "criterion", "alp_min_history"}
    assert teacher_settings("clutr")["regret"] == "paired" and teacher_settings("random") == {}
    for name in [*TEACHERS, *LAYOUT_TEACHERS]:  # a run fills box, seed, reward range and RVAE: never settings
        assert not {"low", "high", "seed", "reward_range", "rvae"} & set(teacher_settings(name))
    checked = check_teacher_settings("riac", {"shares": [0.6, 0.3, 0.1], "min_region_size": 5.0,
                                              "leaves_only": True})
    assert checked == {"shares": [0.6, 0.3, 0.1], "min_region_size": 5, "leaves_only": True}
    RIACTeacher(LOW, HIGH, reward_range=(0, 1), **checked)
    with pytest.raises(ConfigError, match="teacher_settings.fit_evry=3: not a setting of the alp-gmm teacher "
                                          r"\(did you mean fit_every\?\)"):
        check_teacher_settings("alp-gmm", {"fit_evry": 3})
    with pytest.raises(ConfigError, match="teacher_settings.fit_every=2.5: must be an integer"):
        check_teacher_settings("alp-gmm", {"fit_every": 2.5})
    with pytest.raises(ConfigError, match="teacher_settings.seed=1: not a setting; train.seed gives it"):
        check_teacher_settings("covar-gmm", {"seed": 1})


def test_covar_gmm_absolute_lp_counts_falling_returns_too():
    teacher = CovarGMMTeacher([0.0], [1.0], seed=0, reward_range=(0.0, 1.0), absolute_lp=True)
    rng = np.random.default_rng(1)
    for i in range(250):
        p = rng.random()
        teacher.update([p], 1.0 - i / 250 if p < 0.5 else 0.5)  # falling left (forgetting), flat right
    covariance = teacher.gmm.covariances[:, 1, 2]
    np.testing.assert_allclose(teacher.interest(teacher.gmm), np.abs(covariance))
    assert teacher.interest(teacher.gmm).max() > 0 and covariance.min() < 0


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("low, high, match", [
    ([0.0, 0.0], [1.0], "same shape"),
    ([0.0, 1.0], [1.0, 1.0], "below high in every dimension; not so in dimensions \\[1\\]"),
    ([0.0, np.nan], [1.0, 1.0], "finite"),
    ([0.0, 0.0], [1.0, np.inf], "finite"),
])
@pytest.mark.parametrize("cls", [RandomTeacher, ALPGMMTeacher])
def test_bad_bounds_are_refused(cls, low, high, match):
    with pytest.raises(ValueError, match=match):
        cls(low, high, reward_range=(0, 1))


def test_unknown_teacher_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names are alp-gmm, covar-gmm, random, riac; did you mean 'alp-gmm'"):
        make_teacher("alpgmm", LOW, HIGH)


def test_non_finite_return_is_refused_with_the_episode_number():
    teacher = RandomTeacher(LOW, HIGH)
    feed(teacher, 16)
    with pytest.raises(ValueError, match="episode 17 returned nan"):
        teacher.update(teacher.sample(), float("nan"))
    assert teacher.n_episodes == 16  # nothing recorded


def test_bad_params_are_refused():
    teacher = RandomTeacher(LOW, HIGH)
    with pytest.raises(ValueError, match="2 values"):
        teacher.update([0.5], 1.0)
    with pytest.raises(ValueError, match="outside the box"):
        teacher.update([0.5, 4.0], 1.0)
    teacher.update(np.float32(HIGH), 1.0)  # float32 rounding of a bound is tolerated (and clipped)
    assert (teacher.history[0] <= HIGH).all()


@pytest.mark.parametrize("name", ["alp-gmm", "riac", "covar-gmm"])
def test_teachers_that_compare_returns_need_a_reward_range(name):
    with pytest.raises(ValueError, match="needs reward_range"):
        make_teacher(name, LOW, HIGH)
    with pytest.raises(ValueError, match="r_min < r_max"):
        make_teacher(name, LOW, HIGH, reward_range=(1.0, 1.0))
    make_teacher("random", LOW, HIGH)  # the random teacher does not compare returns


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least k_max"):
        ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1), bootstrap=5)
    with pytest.raises(ValueError, match="random_share"):
        ALPGMMTeacher(LOW, HIGH, reward_range=(0, 1), random_share=1.5)
    with pytest.raises(ValueError, match="shares"):
        RIACTeacher(LOW, HIGH, reward_range=(0, 1), shares=(0.5, 0.2, 0.1))


@pytest.mark.parametrize("content, error", [
    (b"a", "IndexError"),  # what torch's weights-only unpickler hits first on these bytes
    (b"", "EOFError"),
    (b"hello", "KeyError"),
    (b"# notes\n", "UnpicklingError: Weights only load failed"),  # not the page of advice that follows
])
def test_a_file_that_is_not_an_rvae_checkpoint_is_refused_naming_it(tmp_path, content, error):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path} is not an RVAE checkpoint written by cadence.curricula.save_rvae: "
                                         f"reading it failed with {error}") as caught:
        read_rvae(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 250


def test_a_checkpoint_of_something_else_is_refused_naming_it(tmp_path):
    torch.save({"config": {}, "state": {}}, tmp_path / "other.pt")  # the right keys, not a model's config
    with pytest.raises(ValueError, match="other.pt is not an RVAE checkpoint .*KeyError: 'shape'"):
        read_rvae(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no RVAE checkpoint at"):
        read_rvae(tmp_path / "missing.pt")

