"""Graphed updates (agent.cuda_graphs): the CPU fallback, the capture machinery run eagerly on the CPU, and on a
CUDA device the real graphs against eager updates."""

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cadence.agents import SAC, SRL, SACConfig, SRLConfig, graphs
from cadence.agents.graphs import load_optimizer_in_place, metric_floats
from cadence.config import ConfigError, build
from cadence.loops import TrainState, learn
from cadence.loops.common import read_metrics
from cadence.nn import mixed_precision
from cadence.replay import ReplayBuffer

OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
SAC_SMALL = SACConfig(hidden_sizes=(32, 32), batch_size=32, learning_starts=0)
SRL_SMALL = SRLConfig(sequence_length=3, hidden_sizes=(32, 32), encoder_sizes=(32,), gru_size=16, batch_size=32,
                      actor_batch_size=16, model_members=2, model_hidden_sizes=(32,), learning_starts=0)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make(algo: str, device: str = "cpu", **changes):
    """A small SAC or SRL (act_dim 2) built from seed 0."""
    torch.manual_seed(0)
    if algo == "sac":
        return SAC(OBS, spaces.Box(-1, 1, (2,), np.float32), SACConfig(**{**vars(SAC_SMALL), **changes}), device)
    return SRL(OBS, spaces.Box(-1, 1, (6,), np.float32), SRLConfig(**{**vars(SRL_SMALL), **changes}), device)


def filled_buffer(device: str = "cpu") -> ReplayBuffer:
    buffer = ReplayBuffer(500, (4,), (2,), device)
    rng = np.random.default_rng(0)
    buffer.add(rng.normal(size=(500, 4)), rng.uniform(-1, 1, (500, 2)), rng.normal(size=500),
               rng.normal(size=(500, 4)), rng.random(500) < 0.1)
    return buffer


def batches(n: int, device: str = "cpu", size: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [filled_buffer().sample(size, generator=g) for _ in range(n)] if device == "cpu" else \
        [{k: v.to(device) for k, v in b.items()} for b in batches(n, "cpu", size)]


def state_of(agent) -> list[torch.Tensor]:
    """Every learned tensor: parameters, buffers, optimiser moments and log alpha."""
    out = [agent.log_alpha.detach()]
    for name in agent.PARTS:
        part = getattr(agent, name)
        if isinstance(part, torch.nn.Module):
            out += [t.detach() for t in part.state_dict().values()]
        else:
            out += [v for s in part.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return out


class EagerGraph:
    """A stand-in for a captured graph: replay runs the recorded function again and writes the static outputs."""

    def __init__(self, fn, out):
        self.fn, self.out = fn, out


class EagerBackend:
    """The capture backend with CUDA taken out: the same warm-up, restore, capture and check steps, run eagerly on
    the CPU, so every step of the machinery is exercised here."""

    def __init__(self, device=None):
        self.captures = 0

    def rng_state(self):
        return torch.get_rng_state()

    def set_rng_state(self, state):
        torch.set_rng_state(state)

    def warmup(self):
        import contextlib

        return contextlib.nullcontext()

    def capture(self, fn):
        self.captures += 1
        out = fn()  # runs (a real capture records): the machinery restores the state after it
        return EagerGraph(fn, out), out

    def replay(self, graph):
        graph.out.copy_(graph.fn())

    def recover(self):
        pass


@pytest.fixture
def eager_graphs(monkeypatch):
    """Graphed updates on the CPU through :class:`EagerBackend`."""
    backend = EagerBackend()
    monkeypatch.setattr(graphs, "backend_for", lambda device: backend)
    return backend


def graphed(algo: str, **changes):
    agent = make(algo, **changes)
    agent.graphed = agent.make_graphed()
    return agent


# --- the option and its CPU fallback -------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_option_on_cpu_warns_once_and_updates_exactly_as_eager(algo):
    with pytest.warns(RuntimeWarning, match="cuda_graphs needs a CUDA device") as caught:
        agent = make(algo, cuda_graphs=True)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1 and agent.graphed is None
    eager = make(algo)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # and no more warnings while updating
        for batch in batches(3):
            torch.manual_seed(7)
            m = agent.update(batch)
            torch.manual_seed(7)
            assert m == eager.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(state_of(agent), state_of(eager)))


def test_config_validation():
    assert SACConfig().cuda_graphs is False and SRLConfig().cuda_graphs is False  # eager by default
    assert build(SACConfig, {"cuda_graphs": True}, "agent").cuda_graphs is True
    with pytest.raises(ConfigError, match="agent.cuda_graphs='yes': must be true or false"):
        build(SRLConfig, {"cuda_graphs": "yes"}, "agent")
    with pytest.raises(ConfigError, match="cuda_graphs"):
        SACConfig(cuda_graphs=1)


def test_metric_floats_reads_tensors_and_numbers_together():
    assert metric_floats({"a": torch.tensor(1.5), "b": 2, "c": torch.tensor([3.0])}) == {"a": 1.5, "b": 2.0, "c": 3.0}
    assert metric_floats({}) == {}


# --- the capture machinery, run eagerly -----------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_graphed_updates_equal_eager_ones(algo, eager_graphs):
    """Warm-up and the check update the agent several times; all of it is undone, the generator included, so the
    graphed agent's updates equal the eager agent's bit for bit, batch after batch (static inputs refreshed)."""
    agent, eager = graphed(algo), make(algo)
    torch.manual_seed(3)
    got = [metric_floats(agent.update_tensors(b)) for b in batches(4)]
    torch.manual_seed(3)
    want = [eager.update(b) for b in batches(4)]
    assert got == want and eager_graphs.captures == 1 and not agent.graphed.failed
    assert agent.updates == eager.updates == 4
    assert all(torch.equal(a, b) for a, b in zip(state_of(agent), state_of(eager)))


def test_graphed_updates_through_the_training_loops_learn(eager_graphs):
    """learn(defer=True) leaves metrics as tensors; read_metrics reads them (and equals the eager floats)."""
    agent, eager = graphed("sac"), make("sac")
    buffer = filled_buffer()
    torch.manual_seed(5)
    deferred = learn(agent, buffer, 3, TrainState(), Path("."), defer=True)
    assert all(isinstance(v, torch.Tensor) for v in deferred.values())
    torch.manual_seed(5)
    assert read_metrics(deferred, TrainState(), Path(".")) == learn(eager, buffer, 3, TrainState(), Path("."))


def test_bf16_mixed_under_graphs_equals_eager(eager_graphs):
    agent, eager = graphed("sac"), make("sac")
    for a in (agent, eager):
        torch.manual_seed(2)
        for batch in batches(3):
            with mixed_precision("bf16-mixed", "cpu"):
                a.update_tensors(batch)
    assert all(torch.equal(a, b) for a, b in zip(state_of(agent), state_of(eager)))
    assert len(agent.graphed.graphs) == 1  # captured under autocast: its own signature


def test_failed_capture_warns_once_and_leaves_eager_numbers(eager_graphs, monkeypatch):
    def broken(fn):
        fn()  # the update ran part-way (as a failing capture may leave it): the state must be restored
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(eager_graphs, "capture", broken)
    agent, eager = graphed("srl"), make("srl")
    with pytest.warns(RuntimeWarning, match="capture failed.*not permitted") as caught:
        torch.manual_seed(4)
        first = agent.update(batches(1)[0])
    assert len(caught) == 1 and agent.graphed.failed
    torch.manual_seed(4)
    assert first == eager.update(batches(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # one warning only, then plain eager updates
        torch.manual_seed(6)
        got = [agent.update(b) for b in batches(2)]
    torch.manual_seed(6)
    assert got == [eager.update(b) for b in batches(2)]
    assert all(torch.equal(a, b) for a, b in zip(state_of(agent), state_of(eager)))


def test_a_replay_that_disagrees_with_eager_is_refused(eager_graphs, monkeypatch):
    real_replay = eager_graphs.replay

    def stale(graph):  # a graph that reads a stale input: the check must catch it
        real_replay(graph)
        graph.out.add_(0.5)

    monkeypatch.setattr(eager_graphs, "replay", stale)
    agent, eager = graphed("sac"), make("sac")
    with pytest.warns(RuntimeWarning, match="differs from the eager one"):
        torch.manual_seed(1)
        got = agent.update(batches(1)[0])
    torch.manual_seed(1)
    assert got == eager.update(batches(1)[0]) and agent.graphed.failed


def test_a_metric_that_is_not_a_tensor_is_refused(eager_graphs, monkeypatch):
    agent = graphed("sac")
    real_step = agent.update_step
    agent.graphed.step = lambda batch: {**real_step(batch), "penalty": 0.0}  # as MOBILE's float penalty
    with pytest.warns(RuntimeWarning, match="'penalty' is a float"):
        agent.update(batches(1)[0])
    assert agent.graphed.failed


@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_checkpoint_round_trip_under_graphs_loads_in_place(algo, eager_graphs):
    """After a capture, loading a state copies into the tensors the graph reads (never rebinding them), and the
    loaded agent continues exactly as the one that saved it; state_dict looks as without graphs."""
    source = make(algo)
    source.update(batches(1)[0])
    agent = graphed(algo)
    agent.update(batches(2)[1])  # captured now
    tensors = [t.data_ptr() for t in state_of(agent)]
    assert all(g["capturable"] is False for opt in ("actor_optimizer", "critic_optimizer")
               for g in agent.state_dict()[opt]["param_groups"])  # checkpoints look as without graphs
    agent.load_state_dict(copy.deepcopy(source.state_dict()))
    assert [t.data_ptr() for t in state_of(agent)] == tensors and agent.graphed.captured
    assert all(torch.equal(a, b) for a, b in zip(state_of(agent), state_of(source)))
    torch.manual_seed(9)
    got = [agent.update(b) for b in batches(2)]
    torch.manual_seed(9)
    assert got == [source.update(b) for b in batches(2)] and eager_graphs.captures == 1


def test_loading_other_learning_rates_recaptures(eager_graphs):
    agent = graphed("sac")
    agent.update(batches(1)[0])
    other = make("sac", actor_lr=1e-3)
    other.update(batches(1)[0])
    agent.load_state_dict(other.state_dict())
    assert not agent.graphed.captured  # the old graph baked the old learning rate in: captured again when used
    agent.update(batches(1)[0])
    assert eager_graphs.captures == 2 and agent.actor_optimizer.param_groups[0]["lr"] == 1e-3


def test_load_optimizer_in_place_zeroes_states_the_checkpoint_lacks():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    p.grad = torch.ones(3)
    opt.step()
    moment = opt.state[p]["exp_avg"]
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1, fused=True).state_dict()
    assert load_optimizer_in_place(opt, fresh)
    assert opt.state[p]["exp_avg"] is moment and not moment.any() and opt.state[p]["step"].item() == 0


# --- on a CUDA device --------------------------------------------------------------------------------------------
def cuda_pair(algo: str, **changes):
    """An eager and a graphed agent on CUDA in the same state."""
    eager = make(algo, "cuda", **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a capture that fails on a real GPU fails the test
        agent = make(algo, "cuda", cuda_graphs=True, **changes)
    agent.load_state_dict(eager.state_dict())
    return eager, agent


def assert_close_states(a, b, tol=1e-5):
    """Every learned tensor equal to ``tol`` in relative norm (cuBLAS may pick other kernels under capture; an
    element-wise bound would trip on Adam's first steps, where a gradient near 0 may change sign)."""
    for x, y in zip(state_of(a), state_of(b), strict=True):
        x, y = x.double(), y.double()
        assert float(torch.linalg.vector_norm(x - y)) <= tol * max(float(torch.linalg.vector_norm(y)), 1e-6)


@CUDA
@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_cuda_graph_updates_equal_eager_updates(algo):
    eager, agent = cuda_pair(algo)
    data = batches(6, "cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for i, batch in enumerate(data):
            torch.cuda.manual_seed(100 + i)
            want = eager.update(batch)
            torch.cuda.manual_seed(100 + i)
            got = agent.update(batch)
            np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5, atol=1e-5)
            assert_close_states(agent, eager)
    assert agent.graphed.captured and not agent.graphed.failed and len(agent.graphed.graphs) == 1


@CUDA
def test_cuda_graphs_under_bf16_mixed_and_deferred_learn():
    eager, agent = cuda_pair("sac")
    buffer = filled_buffer("cuda")
    for a in (eager, agent):
        torch.cuda.manual_seed(1)
        out = learn(a, buffer, 4, TrainState(), Path("."), "bf16-mixed", defer=True)
        assert all(isinstance(v, torch.Tensor) and v.is_cuda for v in out.values())
        a.last = read_metrics(out, TrainState(), Path("."))
    # bfloat16 products: looser than fp32, still far below what a stale weight or input would change
    np.testing.assert_allclose(list(agent.last.values()), list(eager.last.values()), rtol=1e-2, atol=1e-3)
    assert_close_states(agent, eager, 1e-2)


@CUDA
@pytest.mark.parametrize("algo", ["sac", "srl"])
def test_cuda_checkpoint_round_trip_under_graphs(algo):
    source, agent = cuda_pair(algo)
    data = batches(4, "cuda")
    agent.update(data[0])
    source.update(data[1])  # now their states differ
    pointers = [t.data_ptr() for t in state_of(agent)]
    agent.load_state_dict(copy.deepcopy(source.state_dict()))
    assert [t.data_ptr() for t in state_of(agent)] == pointers
    for i, batch in enumerate(data[2:]):
        torch.cuda.manual_seed(i)
        want = source.update(batch)
        torch.cuda.manual_seed(i)
        np.testing.assert_allclose(list(agent.update(batch).values()), list(want.values()), rtol=1e-5, atol=1e-5)
    assert_close_states(agent, source)
    saved = agent.state_dict()
    assert all(g["capturable"] is False for g in saved["critic_optimizer"]["param_groups"])


@CUDA
def test_cuda_training_run_with_graphs(tmp_path):
    """The online loop on CUDA with graphed updates: deferred metrics, logging, evaluation, checkpoints."""
    pytest.importorskip("mujoco")
    from cadence.runs import resolve_config, train

    overrides = ["train.device=cuda", "agent.cuda_graphs=true", "train.total_steps=400", "train.eval_every=200",
                 "train.eval_episodes=1", "train.log_every=100", "train.progress=false", "agent.learning_starts=100",
                 "agent.batch_size=64", "agent.hidden_sizes=32,32"]
    sections = resolve_config("sac", {"train": {"env": "InvertedPendulum-v5"}}, None, overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = train("sac", sections, tmp_path / "run")
    assert not [w for w in caught if "cuda_graphs" in str(w.message) or "capture" in str(w.message)]
    assert state.step == 400 and len(state.evals) >= 2


@CUDA
@pytest.mark.parametrize("where", ["warmup", "capture", "invalidated"])
def test_cuda_failed_capture_falls_back_with_one_warning(where):
    """A host sync in the update (caught in warm-up), an error while recording, or a CUDA call that invalidates the
    capture: one warning, eager numbers, and the CUDA generator still works afterwards. Last in this file: a
    failure here that left CUDA unusable would not fail the tests before it."""
    eager, agent = cuda_pair("sac")
    real_step = agent.update_step

    def step(batch):
        metrics = real_step(batch)
        if where == "warmup":
            metrics["q_mean"].item()  # a host sync
        elif torch.cuda.is_current_stream_capturing():
            if where == "invalidated":
                torch.cuda.synchronize()  # not allowed while capturing: CUDA invalidates the capture
            raise RuntimeError("unsupported while capturing")
        return metrics

    agent.graphed.step = step
    data = batches(3, "cuda")
    with pytest.warns(RuntimeWarning, match="capture failed") as caught:
        torch.cuda.manual_seed(0)
        got = [agent.update(b) for b in data]
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1 and agent.graphed.failed
    torch.cuda.manual_seed(0)
    want = [eager.update(b) for b in data]
    np.testing.assert_allclose([list(m.values()) for m in got], [list(m.values()) for m in want], rtol=1e-5, atol=1e-5)
    assert_close_states(agent, eager)
