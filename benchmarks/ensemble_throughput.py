"""cadence GaussianEnsemble against a per-member Python loop: ensemble training throughput, same run.

Both train 7 Gaussian dynamics models with hidden [200]x4 and SiLU on Hopper-v5 shapes (obs 11, action 3),
predicting (s' - s, r) from normalised (s, a) with the same soft-bounded log-variance, the same Gaussian NLL
(summed over members, plus the log-variance bound penalty) and the same optimiser: Adam with lr 1e-3 and
weight decay 1e-5. cadence uses the fused Adam kernel (``cadence.nn.adam``); the loop gets ``fused=True`` too,
so the comparison is about batching the members, not about the optimiser.

- cadence: one ``GaussianEnsemble`` (ensemble-linear layers, one batched module); a step is what
  ``EnsembleTrainer`` does: ``model.loss(batch)``, zero_grad, backward, Adam step, ``loss.item()``.
- loop: 7 independent ``nn.Sequential`` MLPs of ``nn.Linear`` layers with shared input normalisation and shared
  log-variance bounds (as in cadence). A step runs each member's forward and backward in a Python loop, then
  one Adam step over all parameters, then ``loss.item()``.

Each member gets its own batch of 256 per step (as ``EnsembleTrainer`` draws them), from ``--size`` random
transitions with a fixed seed; the batch is gathered the same way for both (``[members, 256]`` indices) and
inside the timed loop. Before timing, the script copies cadence's weights into the loop's MLPs and checks on
one batch that loss, gradients and the loss after one Adam step agree. Timing: ``--steps`` gradient steps
after ``--warmup`` untimed ones, per peer, interleaved over ``--repeats`` (order alternating) so machine
drift hits both. Reports gradient steps/s and transitions/s (members x batch per step).
Writes ``benchmarks/results/ensemble_throughput.json`` and ``ensemble_throughput.png``.

With ``--sweep 16 64 256 1024`` it also times both peers at other per-member batch sizes (same seeds, same
steps), to show the regime: a small batch leaves the loop paying Python and kernel-launch overhead per member,
a large one leaves both bound by the same matrix products. The headline ratio is at the training batch (256).

    python benchmarks/ensemble_throughput.py [--steps 200] [--repeats 3] [--threads 2] [--sweep 16 64 256 1024]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS
from torch import nn

from cadence.evaluation.plots import plot_bars
from cadence.io import atomic_write_json
from cadence.nn import EnsembleLinear, adam, optimizer_step
from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble

OBS, ACT = 11, 3  # Hopper-v5
TARGET_RATIO = 3.0
Batch = dict[str, torch.Tensor]


def random_data(n: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    return {"obs": obs, "action": torch.rand(n, ACT, generator=g) * 2 - 1,
            "next_obs": obs + 0.1 * torch.randn(n, OBS, generator=g), "reward": torch.randn(n, generator=g)}


class LoopEnsemble(nn.Module):
    """The same ensemble as independent ``nn.Sequential`` MLPs, evaluated member by member."""

    def __init__(self, cfg: EnsembleConfig):
        super().__init__()
        self.out_dim = OBS + int(cfg.learn_reward)
        dims = [OBS + ACT, *cfg.hidden_sizes]
        self.members = nn.ModuleList()
        for _ in range(cfg.n_members):
            layers: list[nn.Module] = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), nn.SiLU()]
            layers.append(nn.Linear(dims[-1], 2 * self.out_dim))
            self.members.append(nn.Sequential(*layers))
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0))
        self.register_buffer("in_mean", torch.zeros(OBS + ACT))
        self.register_buffer("in_std", torch.ones(OBS + ACT))

    def member_nll(self, m: int, batch: Batch) -> torch.Tensor:
        """Gaussian NLL of member ``m`` on its own slice ``batch[k][m]``."""
        obs, act = batch["obs"][m], batch["action"][m]
        target = torch.cat([batch["next_obs"][m] - obs, batch["reward"][m].unsqueeze(-1)], dim=-1)
        x = (torch.cat([obs, act], dim=-1) - self.in_mean) / self.in_std
        mean, raw_logvar = self.members[m](x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return 0.5 * (((mean - target) ** 2) * torch.exp(-logvar) + logvar).mean()

    def bound_penalty(self) -> torch.Tensor:
        return 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    def loss(self, batch: Batch) -> torch.Tensor:
        """Sum of member NLLs plus the bound penalty (the quantity cadence's ``loss`` returns)."""
        return sum(self.member_nll(m, batch) for m in range(len(self.members))) + self.bound_penalty()

    def backward(self, batch: Batch) -> torch.Tensor:
        """Each member's own forward and backward in a loop; gradients accumulate. Returns the total loss."""
        total = self.bound_penalty()
        total.backward()
        total = total.detach()
        for m in range(len(self.members)):
            nll = self.member_nll(m, batch)
            nll.backward()
            total = total + nll.detach()
        return total


@torch.no_grad()
def copy_weights(src: GaussianEnsemble, dst: LoopEnsemble) -> None:
    layers = [layer for layer in src.net.net if isinstance(layer, EnsembleLinear)]
    for m, member in enumerate(dst.members):
        linears = [layer for layer in member if isinstance(layer, nn.Linear)]
        for ens, lin in zip(layers, linears, strict=True):
            lin.weight.copy_(ens.weight[m].T)  # EnsembleLinear: [members, in, out]; nn.Linear: [out, in]
            lin.bias.copy_(ens.bias[m, 0])
    for name in ("max_logvar", "min_logvar", "in_mean", "in_std"):
        getattr(dst, name).copy_(getattr(src, name))


def grad_pairs(src: GaussianEnsemble, dst: LoopEnsemble) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = [layer for layer in src.net.net if isinstance(layer, EnsembleLinear)]
    pairs = [(src.max_logvar.grad, dst.max_logvar.grad), (src.min_logvar.grad, dst.min_logvar.grad)]
    for m, member in enumerate(dst.members):
        linears = [layer for layer in member if isinstance(layer, nn.Linear)]
        for ens, lin in zip(layers, linears, strict=True):
            pairs += [(ens.weight.grad[m].T, lin.weight.grad), (ens.bias.grad[m, 0], lin.bias.grad)]
    return pairs


def sanity_check(cfg: EnsembleConfig, data: Batch, batch: Batch) -> dict[str, float | bool]:
    """Same weights, same batch: loss, gradients and the loss after one fused Adam step must agree."""
    torch.manual_seed(123)
    ours = GaussianEnsemble(OBS, ACT, cfg)
    ours.set_normalizer(data["obs"], data["action"])
    theirs = LoopEnsemble(cfg)
    copy_weights(ours, theirs)
    loss_c, _ = ours.loss(batch)
    loss_l = theirs.loss(batch)
    opt_c = adam(ours.parameters(), cfg.lr, cfg.weight_decay)
    opt_l = torch.optim.Adam(theirs.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    opt_c.zero_grad(set_to_none=True)
    opt_l.zero_grad(set_to_none=True)
    loss_c.backward()
    loop_total = theirs.backward(batch)
    grad_err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in grad_pairs(ours, theirs))
    opt_c.step()
    opt_l.step()
    with torch.no_grad():
        after_c, after_l = ours.loss(batch)[0].item(), theirs.loss(batch).item()
    result = {
        "loss_cadence": loss_c.item(), "loss_loop": loss_l.item(), "loss_loop_from_backward": loop_total.item(),
        "max_relative_grad_error": grad_err, "loss_after_step_cadence": after_c, "loss_after_step_loop": after_l,
    }
    ok = (np.isclose(result["loss_cadence"], result["loss_loop"], rtol=1e-5, atol=1e-5)
          and np.isclose(result["loss_cadence"], result["loss_loop_from_backward"], rtol=1e-5, atol=1e-5)
          and grad_err < 1e-4 and np.isclose(after_c, after_l, rtol=1e-4, atol=1e-4))
    result["passed"] = bool(ok)
    assert ok, f"cadence and the loop disagree on identical weights: {result}"
    return result


def make_batches(data: Batch, members: int, batch_size: int, seed: int) -> Callable[[], Batch]:
    """A batch per call: ``[members, batch_size]`` random indices, a different batch per member."""
    n = data["obs"].shape[0]
    g = torch.Generator().manual_seed(seed)

    def draw() -> Batch:
        idx = torch.randint(n, (members, batch_size), generator=g)
        return {k: v[idx] for k, v in data.items()}

    return draw


def rate(step: Callable[[Batch], float], draw: Callable[[], Batch], warmup: int, steps: int) -> float:
    """Gradient steps per second over ``steps`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(draw())
    t0 = time.perf_counter()
    for _ in range(steps):
        step(draw())
    return steps / (time.perf_counter() - t0)


def measure(cfg: EnsembleConfig, data: Batch, warmup: int, steps: int, repeats: int,
            verbose: bool = False) -> dict[str, list[float]]:
    """Gradient steps/s of cadence and of the loop, ``repeats`` times each, interleaved with alternating order."""
    torch.manual_seed(0)
    ours = GaussianEnsemble(OBS, ACT, cfg)
    ours.set_normalizer(data["obs"], data["action"])
    opt_c = adam(ours.parameters(), cfg.lr, cfg.weight_decay)
    theirs = LoopEnsemble(cfg)
    theirs.in_mean.copy_(ours.in_mean)
    theirs.in_std.copy_(ours.in_std)
    opt_l = torch.optim.Adam(theirs.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def cadence_step(batch: Batch) -> float:  # what EnsembleTrainer.fit does per batch
        loss, _ = ours.loss(batch)
        optimizer_step(opt_c, loss)
        return loss.item()

    def loop_step(batch: Batch) -> float:
        opt_l.zero_grad(set_to_none=True)
        loss = theirs.backward(batch)
        opt_l.step()
        return loss.item()

    peers = {"cadence": cadence_step, "loop": loop_step}
    runs: dict[str, list[float]] = {k: [] for k in peers}
    for r in range(repeats):
        order = list(peers) if r % 2 == 0 else list(peers)[::-1]  # alternate who goes first
        for name in order:
            draw = make_batches(data, cfg.n_members, cfg.batch_size, seed=100 + r)  # same batches for both
            runs[name].append(rate(peers[name], draw, warmup, steps))
        if verbose:
            print(f"repeat {r}: cadence {runs['cadence'][-1]:.1f} steps/s, loop {runs['loop'][-1]:.1f} steps/s")
    return runs


def plot(result: dict) -> Path:
    """Median gradient-step rates of the ensemble and the per-member loop, from an ``ensemble_throughput.json``."""
    g, batch = result["grad_steps_per_second"], result["batch_per_member"]
    peers = ("cadence GaussianEnsemble", "per-member loop")
    rates = {batch: (g["cadence"], g["loop"]), **{int(b): (v["cadence"], v["loop"])
                                                  for b, v in result["by_batch_size"].items()}}
    groups = {f"batch {b}/member": dict(zip(peers, rates[b], strict=True)) for b in sorted(rates)}
    widths = sorted(set(result["hidden"]))
    hidden = f"[{widths[0]}]x{len(result['hidden'])}" if len(widths) == 1 else str(result["hidden"])
    return plot_bars(groups, RESULTS / "ensemble_throughput.png", "gradient steps / s (median)",
                     f"{result['members']} members, {hidden}, {result['machine']['torch_threads']} torch threads, "
                     f"median of {result['repeats']} repeats of {result['timed_steps']} steps;\n"
                     f"batch {batch}/member: {g['ratio']:.2f}x the per-member loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="random transitions to draw batches from")
    parser.add_argument("--steps", type=int, default=200, help="timed gradient steps per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed gradient steps before each measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="other per-member batch sizes to time")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from ensemble_throughput.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot(json.loads((RESULTS / 'ensemble_throughput.json').read_text()))}")
        return
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    cfg = EnsembleConfig()  # 7 members, [200]x4, batch 256, lr 1e-3, weight decay 1e-5
    data = random_data(args.size)
    draw_check = make_batches(data, cfg.n_members, cfg.batch_size, seed=1)
    check = sanity_check(cfg, data, draw_check())
    print(f"sanity check (identical weights, one batch): cadence loss {check['loss_cadence']:.6f}, "
          f"loop loss {check['loss_loop']:.6f}, max relative grad error {check['max_relative_grad_error']:.2e}, "
          f"after one Adam step {check['loss_after_step_cadence']:.6f} vs {check['loss_after_step_loop']:.6f}: "
          f"{'passed' if check['passed'] else 'FAILED'}")

    runs = measure(cfg, data, args.warmup, args.steps, args.repeats, verbose=True)
    sweep = {}
    for batch_size in args.sweep:
        swept = measure(dataclasses.replace(cfg, batch_size=batch_size), data, args.warmup, args.steps, args.repeats)
        c_b, l_b = float(np.median(swept["cadence"])), float(np.median(swept["loop"]))
        sweep[str(batch_size)] = {"cadence": c_b, "loop": l_b, "ratio": c_b / l_b}
        print(f"batch {batch_size:5d}/member: cadence {c_b:7.1f} steps/s, loop {l_b:7.1f} steps/s, "
              f"ratio {c_b / l_b:.2f}x")

    per_step = cfg.n_members * cfg.batch_size
    c, lp = float(np.median(runs["cadence"])), float(np.median(runs["loop"]))
    load_after = os.getloadavg()
    result = {
        "env_shapes": "Hopper-v5 (obs 11, action 3), predicting delta obs + reward",
        "members": cfg.n_members, "hidden": list(cfg.hidden_sizes), "activation": "SiLU",
        "batch_per_member": cfg.batch_size, "transitions_per_step": per_step, "dataset_transitions": args.size,
        "optimizer": f"Adam lr {cfg.lr}, weight decay {cfg.weight_decay}, fused=True for both",
        "timed_steps": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
        "sanity_check": check,
        "grad_steps_per_second": {"cadence": c, "loop": lp, "ratio": c / lp, "runs": runs},
        "transitions_per_second": {"cadence": c * per_step, "loop": lp * per_step},
        "ratio_cadence_over_loop": c / lp, "by_batch_size": sweep, "target_ratio_at_least": TARGET_RATIO,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": load_after},
    }
    atomic_write_json(RESULTS / "ensemble_throughput.json", result)
    plot(result)
    print(f"cadence {c:.1f} steps/s ({c * per_step:,.0f} transitions/s), loop {lp:.1f} steps/s "
          f"({lp * per_step:,.0f} transitions/s), ratio {c / lp:.2f}x (target >= {TARGET_RATIO:.0f}x)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
