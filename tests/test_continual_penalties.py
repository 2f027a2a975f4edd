import pytest
import torch
from torch import nn

from cadence.world_models import EWC, SI, train_model_steps


def line(w: float, b: float) -> nn.Linear:
    """y = w x + b: a model with exactly two parameters."""
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(w)
        model.bias.fill_(b)
    return model


def set_params(model: nn.Linear, w: float, b: float) -> None:
    with torch.no_grad():
        model.weight.fill_(w)
        model.bias.fill_(b)


def squared_error(model: nn.Module):
    return lambda batch: ((model(batch["x"]) - batch["y"]) ** 2).mean()


def row(x: float, y: float) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor([[x]]), "y": torch.tensor([[y]])}


def test_ewc_penalty_matches_the_hand_computed_fisher():
    model = line(1.0, 0.0)
    ewc = EWC(model, lam=2.0)
    assert ewc.penalty().item() == 0.0  # nothing consolidated yet
    # at w=1, b=0 both rows have residual 1: grads (2x, 2) = (2, 2) and (4, 2); F = mean of squares = (10, 4)
    ewc.consolidate([row(1.0, 0.0), row(2.0, 1.0)], squared_error(model))
    assert model.weight.grad is None  # consolidation leaves .grad alone
    torch.testing.assert_close(ewc.fisher["weight"], torch.tensor([[10.0]]))
    torch.testing.assert_close(ewc.fisher["bias"], torch.tensor([4.0]))
    assert ewc.penalty().item() == 0.0  # at the anchor
    set_params(model, 1.5, -1.0)
    penalty = ewc.penalty()
    torch.testing.assert_close(penalty, torch.tensor(2.0 / 2 * (10 * 0.5**2 + 4 * 1.0**2)))  # 6.5
    penalty.backward()  # d/dw = lam F_w (w - w*) = 2 * 10 * 0.5
    torch.testing.assert_close(model.weight.grad, torch.tensor([[10.0]]))

    # a second task: Fishers add up, the anchor moves to the current parameters
    # at w=1.5, b=-1 the row (1, 0) has residual 0.5: grads (1, 1), squares (1, 1) -> F = (11, 5)
    ewc.consolidate([row(1.0, 0.0)], squared_error(model))
    torch.testing.assert_close(ewc.fisher["weight"], torch.tensor([[11.0]]))
    torch.testing.assert_close(ewc.fisher["bias"], torch.tensor([5.0]))
    set_params(model, 2.0, -1.0)
    torch.testing.assert_close(ewc.penalty(), torch.tensor(1.0 * 11 * 0.5**2))

    other = EWC(line(2.0, -1.0), lam=2.0)
    other.load_state_dict(ewc.state_dict())
    torch.testing.assert_close(other.penalty(), ewc.penalty())
    with pytest.raises(ValueError):
        ewc.consolidate([], squared_error(model))


def test_ewc_decay_shrinks_earlier_fishers():
    model = line(1.0, 0.0)
    ewc = EWC(model, lam=1.0, decay=0.5)
    ewc.consolidate([row(1.0, 0.0), row(2.0, 1.0)], squared_error(model))  # F = (10, 4), as above
    set_params(model, 1.5, -1.0)
    ewc.consolidate([row(1.0, 0.0)], squared_error(model))  # 0.5 * (10, 4) + (1, 1)
    torch.testing.assert_close(ewc.fisher["weight"], torch.tensor([[6.0]]))
    torch.testing.assert_close(ewc.fisher["bias"], torch.tensor([3.0]))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="decay must be in"):
            EWC(model, lam=1.0, decay=bad)


def test_si_penalty_matches_the_hand_computed_path_integral():
    model = line(0.0, 0.0)
    si = SI(model, c=1.0, xi=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def task1(batch):  # (w - 3)^2 + 2 (b + 1)^2, data ignored
        loss = (model.weight - 3.0).pow(2).sum() + 2 * (model.bias + 1.0).pow(2).sum()
        return loss, {}

    data = {"x": torch.zeros(4, 1)}
    si.begin_task()
    train_model_steps(task1, model.parameters(), data, 2, 2, optimizer, None, torch.Generator(), si=si)
    # by hand, SGD with lr 0.1 from (0, 0):
    #   g = (2(w-3), 4(b+1)) = (-6, 4), step (0.6, -0.4), omega += -g*step = (3.6, 1.6)
    #   at (0.6, -0.4): g = (-4.8, 2.4), step (0.48, -0.24), omega += (2.304, 0.576)
    omega = (3.6 + 2.304, 1.6 + 0.576)
    end = (1.08, -0.64)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[end[0]]]))
    torch.testing.assert_close(si.omega["weight"], torch.tensor([[omega[0]]]))
    torch.testing.assert_close(si.omega["bias"], torch.tensor([omega[1]]))
    si.end_task()
    importance = (omega[0] / (end[0] ** 2 + 0.1), omega[1] / (end[1] ** 2 + 0.1))
    torch.testing.assert_close(si.importance["weight"], torch.tensor([[importance[0]]]))
    torch.testing.assert_close(si.importance["bias"], torch.tensor([importance[1]]))
    assert si.omega["weight"].item() == 0.0 and si.penalty().item() == 0.0  # omega restarts; at the anchor

    set_params(model, end[0] + 1.0, end[1] - 2.0)
    torch.testing.assert_close(si.penalty(), torch.tensor(importance[0] * 1.0 + importance[1] * 4.0))

    # task 2's loss ignores b: b moves only by the penalty's pull, which must not enter omega
    def task2(batch):
        return model.weight.pow(2).sum(), {}

    si.begin_task()
    w0, b0 = end[0] + 1.0, end[1] - 2.0
    metrics = train_model_steps(task2, model.parameters(), data, 1, 2, optimizer, None, torch.Generator(),
                                penalty=si.penalty, si=si)
    assert model.bias.item() != pytest.approx(b0)  # the penalty moved b ...
    assert si.omega["bias"].item() == 0.0  # ... but b has no task-loss gradient
    g_task, g_pen = 2 * w0, 2 * importance[0] * (w0 - end[0])
    step = -0.1 * (g_task + g_pen)
    torch.testing.assert_close(si.omega["weight"], torch.tensor([[-g_task * step]]))
    assert metrics["model/penalty"] == pytest.approx(importance[0] + 4 * importance[1], rel=1e-5)

    other = SI(line(0.0, 0.0), c=1.0)
    other.load_state_dict(si.state_dict())
    torch.testing.assert_close(other.importance["bias"], si.importance["bias"])
    other.end_task()  # the task in progress carried over


def test_si_hooks_need_a_task():
    si = SI(line(0.0, 0.0), c=1.0)
    with pytest.raises(RuntimeError):
        si.before_step()
    with pytest.raises(RuntimeError):
        si.end_task()


def test_train_model_steps_fits_a_tiny_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 1)
    data = {"x": x, "y": 3 * x - 1}
    model = nn.Linear(1, 1)

    def mse(batch):
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return loss, {"model/mse": loss.item()}

    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    first = train_model_steps(mse, model.parameters(), data, 20, 32, optimizer, 5.0, generator)
    last = train_model_steps(mse, model.parameters(), data, 300, 32, optimizer, 5.0, generator,
                             penalty=lambda: torch.zeros(()))
    assert set(first) == {"model/mse", "model/loss", "model/penalty"} and last["model/penalty"] == 0.0
    assert last["model/loss"] < 0.1 * first["model/loss"]
    assert mse(data)[0].item() < 1e-3
