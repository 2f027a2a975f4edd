import io

import pytest
import torch

from cadence.replay import ContinualMemory, CoresetSelector, NearestSelector, RandomSelector, ScoreSelector, Selector
from cadence.replay.selection import equal_quotas, nearest_distance


def rows(n, start=0, obs=None, action=None):
    """``n`` transitions whose reward is a global row id ``start..start+n-1``."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    obs = torch.randn(n, 2) if obs is None else obs
    action = torch.randn(n, 1) if action is None else action
    return {"obs": obs, "action": action, "reward": ids, "next_obs": obs + 1, "terminated": torch.zeros(n, dtype=bool)}


def stored_ids(memory):
    return sorted(int(r) for r in memory.transitions()["reward"])


def coverage_radius(x, picks):
    """Largest distance from any row of ``x`` to its nearest picked row."""
    return float(torch.cdist(x, x[picks]).min(dim=1).values.max())


# --- reservoir -----------------------------------------------------------------------------------------------
def test_reservoir_keeps_min_of_capacity_and_offered():
    memory = ContinualMemory.reservoir(10, (2,), (1,), seed=0)
    offered = 0
    for n in [3, 4, 1, 9, 50, 1]:
        memory.add(rows(n, start=offered))
        offered += n
        assert len(memory) == min(10, offered) and memory.offered == offered
        assert len(set(stored_ids(memory))) == len(memory)  # distinct rows, all from what was offered
        assert max(stored_ids(memory)) < offered


def test_reservoir_inclusion_is_uniform():
    # 40 items into capacity 4, 2000 seeded trials: each item's inclusion count is Binomial(2000, 0.1), i.e.
    # mean 200 and sd 13.4; a 5-sd band per item fails by chance with probability ~2e-5 over all 40 items.
    # The items that first filled the memory face every later replacement draw, so their total (mean 800,
    # sd 25.8 from the per-trial hypergeometric variance) shows a biased replacement rule most clearly: drawing
    # the slot from U{0..t-1} instead of U{0..t} keeps them with probability 3/39, a total near 615 (-7 sd).
    trials, n_items, capacity = 2000, 40, 4
    counts = torch.zeros(n_items)
    for seed in range(trials):
        memory = ContinualMemory.reservoir(capacity, (1,), (1,), seed=seed)
        for start, n in [(0, 3), (3, 10), (13, 27)]:  # crosses the fill boundary, several batches
            ids = torch.arange(start, start + n, dtype=torch.float32)
            memory.add({"obs": ids[:, None], "action": ids[:, None], "reward": ids, "next_obs": ids[:, None],
                        "terminated": torch.zeros(n, dtype=bool)})
        counts[memory.transitions()["reward"].long()] += 1
    assert counts.sum() == trials * capacity
    assert (counts - 200).abs().max() < 5 * 13.4, counts
    assert abs(counts[:capacity].sum() - 800) < 5 * 25.8, counts


def test_reservoir_batch_equals_one_by_one():
    data = rows(120)
    batched = ContinualMemory.reservoir(16, (2,), (1,), seed=3)
    for start, stop in [(0, 5), (5, 70), (70, 120)]:
        batched.add({k: v[start:stop] for k, v in data.items()})
    single = ContinualMemory.reservoir(16, (2,), (1,), seed=3)
    for i in range(120):
        single.add({k: v[i : i + 1] for k, v in data.items()})
    for k, v in batched.transitions().items():
        assert torch.equal(v, single.transitions()[k]), k


def test_reservoir_end_task_sets_task_ids():
    memory = ContinualMemory.reservoir(30, (2,), (1,), seed=0)
    for task in range(3):
        data = rows(20, start=20 * task)
        data["task_id"] = torch.full((20,), 99)
        memory.end_task(data, task_id=task)
    counts = memory.task_counts()
    assert list(counts) == [0, 1, 2] and sum(counts.values()) == 30
    ids = memory.transitions()["reward"].long() // 20  # which task each stored row came from
    assert torch.equal(ids, memory.transitions()["task_id"])


# --- per-task quota ------------------------------------------------------------------------------------------
def test_equal_quotas():
    assert equal_quotas(10, 1) == [10]
    assert equal_quotas(10, 3) == [4, 3, 3]
    assert equal_quotas(10, 4) == [3, 3, 2, 2]
    assert equal_quotas(2, 3) == [1, 1, 0]


def test_per_task_quota_shrinks_earlier_tasks():
    memory = ContinualMemory.per_task(10, (2,), (1,), RandomSelector(), seed=0)
    expected = [{0: 10}, {0: 5, 1: 5}, {0: 4, 1: 3, 2: 3}]
    previous = set()
    for task in range(3):
        memory.end_task(rows(20, start=20 * task), task_id=task)
        assert memory.task_counts() == expected[task]
        task0 = {i for i in stored_ids(memory) if i < 20}
        assert task == 0 or task0 < previous  # task 0 shrinks to a subset of what it kept before
        previous = task0
    # rows are stored by task, so each stored row's id range matches its task_id
    assert torch.equal(memory.transitions()["reward"].long() // 20, memory.transitions()["task_id"])


def test_per_task_with_score_selector_keeps_top_rows():
    memory = ContinualMemory.per_task(10, (2,), (1,), ScoreSelector(lambda c: c["reward"]))
    memory.end_task(rows(20, start=0), task_id=5)
    assert stored_ids(memory) == list(range(10, 20))
    memory.end_task(rows(20, start=20), task_id=6)
    assert stored_ids(memory) == [15, 16, 17, 18, 19, 35, 36, 37, 38, 39]
    memory.end_task(rows(20, start=40), task_id=7)
    assert stored_ids(memory) == [16, 17, 18, 19, 37, 38, 39, 57, 58, 59]
    assert memory.task_counts() == {5: 4, 6: 3, 7: 3}


def test_more_tasks_than_capacity():
    memory = ContinualMemory.per_task(2, (2,), (1,), RandomSelector())
    for task in range(3):
        memory.end_task(rows(5, start=5 * task), task_id=task)
    assert memory.task_counts() == {0: 1, 1: 1, 2: 0}


def test_small_task_leaves_its_quota_empty():
    memory = ContinualMemory.per_task(10, (2,), (1,), RandomSelector())
    memory.end_task(rows(2), task_id=0)
    memory.end_task(rows(20, start=100), task_id=1)
    assert memory.task_counts() == {0: 2, 1: 5}


def test_memory_sample():
    memory = ContinualMemory.per_task(10, (2,), (1,), RandomSelector())
    memory.end_task(rows(30), task_id=0)
    batch = memory.sample(64, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (64, 2)
    assert set(batch["reward"].long().tolist()) <= set(stored_ids(memory))


# --- selectors -----------------------------------------------------------------------------------------------
def clusters(n_per=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 20.0]])
    obs = centres.repeat_interleave(n_per, 0) + 0.1 * torch.randn(len(centres) * n_per, 2, generator=g)
    # actions follow the clusters: a pure-noise feature would be blown up to unit scale by the standardisation
    action = obs[:, :1] / 10 + 0.01 * torch.randn(len(obs), 1, generator=g)
    return rows(len(obs), obs=obs, action=action), torch.arange(len(centres)).repeat_interleave(n_per)


def test_coreset_picks_one_point_per_cluster_and_beats_random():
    data, label = clusters()
    x = torch.cat([data["obs"], data["action"]], 1)
    random_radius = []
    for seed in range(20):
        picks = CoresetSelector().select(data, 5, torch.Generator().manual_seed(seed))
        assert sorted(label[picks].tolist()) == [0, 1, 2, 3, 4]
        assert coverage_radius(x, picks) < 1.0
        random_radius.append(coverage_radius(x, RandomSelector().select(data, 5, torch.Generator().manual_seed(seed))))
    assert sorted(random_radius)[10] > 5.0  # random usually misses a cluster


def test_coreset_uses_actions_and_is_scale_invariant():
    g = torch.Generator().manual_seed(0)
    action = torch.cat([torch.full((30, 1), -1.0), torch.full((30, 1), 1.0)]) + 0.01 * torch.randn(60, 1, generator=g)
    data = rows(60, obs=torch.zeros(60, 2), action=action)  # only the actions tell the two groups apart
    picks = CoresetSelector().select(data, 2, torch.Generator().manual_seed(0))
    assert picks[0] < 30 <= picks[1]

    data, _ = clusters()
    scaled = dict(data, obs=data["obs"] * torch.tensor([1000.0, 0.001]))
    a = CoresetSelector().select(data, 12, torch.Generator().manual_seed(1))
    b = CoresetSelector().select(scaled, 12, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_coreset_never_repeats_rows_among_duplicates():
    obs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    data = rows(12, obs=obs, action=torch.zeros(12, 1))
    picks = CoresetSelector().select(data, 5, torch.Generator().manual_seed(0))
    assert len(set(picks.tolist())) == 5
    assert {tuple(o) for o in obs[picks].tolist()} == {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}


def test_score_selector_keeps_exactly_top_k():
    scores = torch.randperm(50, generator=torch.Generator().manual_seed(0)).float()
    picks = ScoreSelector(lambda c: scores).select(rows(50), 7)
    assert torch.equal(picks, torch.sort(torch.topk(scores, 7).indices).values)
    ties = ScoreSelector(lambda c: torch.zeros(50)).select(rows(50), 4)
    assert picks.dtype == torch.int64 and ties.tolist() == [0, 1, 2, 3]  # ties go to the earlier rows


def test_selector_trivial_cases_and_answer_check():
    data = rows(6)
    for selector in [RandomSelector(), CoresetSelector(), ScoreSelector(lambda c: c["reward"])]:
        assert selector.select(data, 9).tolist() == list(range(6))
        assert selector.select(data, 0).tolist() == []
        picks = selector.select(data, 4, torch.Generator().manual_seed(0))
        assert len(set(picks.tolist())) == 4 and torch.equal(picks, picks.sort().values)

    class Broken(Selector):
        def _select(self, candidates, k, generator):
            return torch.zeros(k, dtype=torch.int64)

    with pytest.raises(ValueError, match="distinct"):
        Broken().select(data, 3)


def test_nearest_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    points, refs = torch.randn(50, 3, generator=g), torch.randn(20, 3, generator=g)
    expected = torch.cdist(points, refs).min(dim=1).values
    assert torch.allclose(nearest_distance(points, refs, chunk_size=7), expected)


# --- persistence -----------------------------------------------------------------------------------------------
def round_trip(memory, fresh):
    buf = io.BytesIO()
    torch.save(memory.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=False))
    return fresh


def test_reservoir_state_dict_round_trip():
    memory = ContinualMemory.reservoir(16, (2,), (1,), seed=0)
    memory.add(rows(40))
    resumed = round_trip(memory, ContinualMemory.reservoir(16, (2,), (1,), seed=123))
    assert resumed.offered == 40
    later = rows(200, start=40)
    memory.add(later)
    resumed.add(later)
    for k, v in memory.transitions().items():
        assert torch.equal(v, resumed.transitions()[k]), k
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(memory.sample(32, g1)["reward"], resumed.sample(32, g2)["reward"])


def test_per_task_state_dict_round_trip():
    memory = ContinualMemory.per_task(12, (2,), (1,), RandomSelector(), seed=0)
    memory.end_task(rows(30, start=0), task_id=0)
    memory.end_task(rows(30, start=30), task_id=1)
    resumed = round_trip(memory, ContinualMemory.per_task(12, (2,), (1,), RandomSelector(), seed=99))
    later = rows(30, start=60)
    memory.end_task(later, task_id=2)
    resumed.end_task(later, task_id=2)
    assert stored_ids(memory) == stored_ids(resumed) and resumed.task_counts() == {0: 4, 1: 4, 2: 4}
    with pytest.raises(ValueError, match="task_id 1"):
        resumed.end_task(rows(5), task_id=1)  # the task order was restored too
    with pytest.raises(ValueError, match="capacity/mode"):
        ContinualMemory.reservoir(12, (2,), (1,)).load_state_dict(memory.state_dict())


# --- bad input -----------------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        ContinualMemory.reservoir(0, (2,), (1,))
    with pytest.raises(ValueError, match="capacity"):
        ContinualMemory.per_task(0, (2,), (1,), RandomSelector())
    with pytest.raises(ValueError, match="k must be >= 0"):
        RandomSelector().select(rows(5), -1)
    bad = dict(rows(5), reward=torch.zeros(4))
    with pytest.raises(ValueError, match="different lengths"):
        CoresetSelector().select(bad, 2)
    memory = ContinualMemory.per_task(10, (2,), (1,), RandomSelector())
    with pytest.raises(ValueError, match="different lengths"):
        memory.end_task(bad, task_id=0)
    memory.end_task(rows(5), task_id=0)
    with pytest.raises(ValueError, match="task_id 0 was already given"):
        memory.end_task(rows(5), task_id=0)
    with pytest.raises(ValueError, match="add\\(\\) is for reservoir"):
        memory.add(rows(5))
    with pytest.raises(ValueError, match="missing fields \\['next_obs'\\]"):
        memory.end_task({k: v for k, v in rows(5).items() if k != "next_obs"}, task_id=1)
    with pytest.raises(ValueError, match="unknown fields \\['next_observations'\\]"):
        memory.end_task(dict(rows(5), next_observations=torch.zeros(5, 2)), task_id=1)
    with pytest.raises(ValueError, match="one score per row"):
        ScoreSelector(lambda c: torch.zeros(3)).select(rows(5), 2)
    with pytest.raises(ValueError, match="NaN"):
        ScoreSelector(lambda c: torch.full((5,), float("nan"))).select(rows(5), 2)
    with pytest.raises(ValueError, match="needs fields"):
        CoresetSelector(fields=("state",)).select(rows(5), 2)
    assert memory.task_counts() == {0: 5}  # failed calls changed nothing


# --- MBES: rows nearest a task's reference states --------------------------------------------------------------
def test_nearest_selector_keeps_the_rows_nearest_the_reference_states():
    # candidates on a line x = 0..9; the policy's (model) states sit at 2.1 and 7.8: keep 2, 8, then 3 or 1, 7 or 9
    obs = torch.stack([torch.arange(10.0), torch.zeros(10)], dim=1)
    batch = {**rows(10, obs=obs), "task_id": torch.zeros(10, dtype=torch.int64)}
    selector = NearestSelector({0: torch.tensor([[2.1, 0.0], [7.8, 0.0]])})
    assert selector.select(batch, 2).tolist() == [2, 8]
    assert selector.select(batch, 4).tolist() == [2, 3, 7, 8]  # 1.1 < 1.8 from 3 and 1 resp.; 0.8 from 7
    assert selector.scores(batch)[0].item() == pytest.approx(-2.1)


def test_nearest_selector_scales_features_and_refuses_mixed_or_unknown_tasks():
    obs = torch.tensor([[0.0, 10.0], [1.0, 0.0]])
    batch = {**rows(2, obs=obs), "task_id": torch.zeros(2, dtype=torch.int64)}
    refs = {0: torch.tensor([[0.0, 0.0]])}
    assert NearestSelector(refs).select(batch, 1).tolist() == [1]  # raw units: row 1 is nearer
    assert NearestSelector(refs, scale=torch.tensor([0.1, 100.0])).select(batch, 1).tolist() == [0]
    with pytest.raises(ValueError, match="one task's rows at a time, got task ids \\[0, 1\\]"):
        NearestSelector(refs).select({**batch, "task_id": torch.tensor([0, 1])}, 1)
    with pytest.raises(ValueError, match="no reference states for task 0"):
        NearestSelector({}).select(batch, 1)


def test_memory_with_nearest_selector_keeps_its_quota_per_task_and_reselects_old_tasks():
    selector = NearestSelector()
    memory = ContinualMemory.per_task(12, (2,), (1,), selector)
    for task in range(3):
        obs = torch.stack([torch.arange(20.0), torch.full((20,), float(task))], dim=1)
        selector.references[task] = torch.tensor([[5.0 + task, float(task)]])
        memory.end_task(rows(20, start=100 * task, obs=obs), task)
        assert len(memory) <= 12
    assert memory.task_counts() == {0: 4, 1: 4, 2: 4}
    kept = memory.transitions()
    for task in range(3):  # the 4 rows nearest the task's own reference at x = 5 + task (a tie goes to the earlier)
        xs = sorted(kept["obs"][kept["task_id"] == task, 0].tolist())
        assert xs == [3.0 + task, 4.0 + task, 5.0 + task, 6.0 + task]
