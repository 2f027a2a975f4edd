"""The ``cadence`` command line.

    cadence train sac --env Hopper-v5 --seed 1 --total-steps 300000 [--config F.toml] [--set key=value ...]
    cadence train srl --env Hopper-v5 --sequence-length 8
    cadence train sac --resume RUN_DIR [--total-steps N]
    cadence train mopo --dataset hopper-medium [--morec]      (offline; also: mobile)
    cadence eval fas RUN_DIR [--episodes 10] [--asl 1,2,4,...] [--planner]
    cadence collect --env Hopper-v5 --kind medium [--size N] [--policy-steps N] [--record-reference]
    cadence config sac
    cadence dashboard [--logdir runs]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cadence.agents.planning import CEMConfig
from cadence.checkpoint import CheckpointError
from cadence.collection import KINDS as COLLECT_KINDS
from cadence.collection import CollectConfig
from cadence.config import ConfigError, field_docs, to_dict
from cadence.evaluation.fas import ASL_GRID, PUBLISHED_SAC_J_FAS, FASResult, env_family
from cadence.recipes import RECIPES, recipe

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _parse_asl(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--asl must be a comma-separated list of integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train an agent; writes a run folder")
    p_train.add_argument("algo", choices=sorted(RECIPES))
    p_train.add_argument("--env", help="env id, e.g. Hopper-v5")
    p_train.add_argument("--seed", type=int)
    p_train.add_argument("--total-steps", type=int,
                         help="budget in primitive env steps (offline algos: gradient steps)")
    p_train.add_argument("--dataset", help="offline algos: data set name or path (hopper-medium, d4rl:NAME, ...)")
    p_train.add_argument("--morec", action="store_true",
                         help="offline algos: MOREC's dynamics-reward transition filter in model rollouts")
    p_train.add_argument("--sequence-length", type=int, metavar="J", help="SRL-J: actions decided per state (srl only)")
    p_train.add_argument("--config", type=Path, help="TOML file with [train] and [agent] sections")
    p_train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config value, e.g. --set agent.batch_size=128 (repeatable)")
    p_train.add_argument("--run-dir", type=Path, help="run folder (default runs/<algo>_<env>_s<seed>_<time>)")
    p_train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p_eval = sub.add_parser("eval", help="evaluate a trained run")
    eval_sub = p_eval.add_subparsers(dest="what", required=True)
    p_fas = eval_sub.add_parser("fas", help="Frequency-Averaged Score sweep over action-sequence lengths")
    p_fas.add_argument("run_dir", type=Path)
    p_fas.add_argument("--episodes", type=int, default=10, help="episodes per ASL")
    p_fas.add_argument("--asl", type=_parse_asl, default=ASL_GRID, help="ASL grid, e.g. 1,2,4,8")
    p_fas.add_argument("--seed", type=int, default=0, help="seed of the first evaluation episode")
    p_fas.add_argument("--planner", action="store_true",
                       help="plan with CEM-MPC through the run's learned model (srl runs) instead of its actor")
    p_fas.add_argument("--sequential", action="store_true",
                       help="one Gymnasium env per ASL in turn instead of all worlds in one batch (same FAS)")
    p_fas.add_argument("--horizon", type=int, default=CEMConfig.horizon, help="CEM planning horizon")
    p_fas.add_argument("--samples", type=int, default=CEMConfig.samples, help="CEM candidates per iteration")
    p_fas.add_argument("--iterations", type=int, default=CEMConfig.iterations, help="CEM iterations")

    p_col = sub.add_parser("collect", help="make a D4RL-style data set from cadence's own SAC policies")
    p_col.add_argument("--env", default=CollectConfig.env)
    p_col.add_argument("--kind", default=CollectConfig.kind, choices=COLLECT_KINDS)
    p_col.add_argument("--size", type=int, default=CollectConfig.size, help="transitions to collect")
    p_col.add_argument("--seed", type=int, default=CollectConfig.seed, help="seed of the collection episodes")
    p_col.add_argument("--policy-seed", type=int, default=CollectConfig.policy_seed, help="seed of the SAC run")
    p_col.add_argument("--policy-steps", type=int, default=CollectConfig.policy_steps,
                       help="SAC training budget; its final policy is the expert")
    p_col.add_argument("--eval-every", type=int, default=CollectConfig.eval_every,
                       help="policy snapshot interval (the medium policy is one snapshot)")
    p_col.add_argument("--medium-fraction", type=float, default=CollectConfig.medium_fraction)
    p_col.add_argument("--reference-episodes", type=int, default=CollectConfig.reference_episodes,
                       help="episodes that measure the random or expert reference return")
    p_col.add_argument("--record-reference", action="store_true",
                       help="write the measured random/expert return into the reference-score table")
    p_col.add_argument("--out", default="", help="output folder (default $CADENCE_DATA_DIR or ~/.cadence/datasets)")
    p_col.add_argument("--threads", type=int, default=CollectConfig.threads)
    p_col.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override the SAC run's config, e.g. --set agent.learning_starts=1000")
    p_col.add_argument("--no-progress", action="store_true")

    p_cfg = sub.add_parser("config", help="print an agent's config with its defaults and documentation")
    p_cfg.add_argument("algo", choices=sorted(RECIPES))

    p_dash = sub.add_parser("dashboard", help="start TensorBoard on a runs folder")
    p_dash.add_argument("--logdir", type=Path, default=Path("runs"))
    p_dash.add_argument("--port", type=int, default=6006)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from cadence.runs import default_run_dir, read_run_config, resolve_config, train

    if args.resume is not None:
        algo, sections = read_run_config(args.resume)
        if algo != args.algo:
            raise ConfigError(f"{args.resume} is a {algo!r} run, not {args.algo!r}")
        given = {"--env": args.env, "--seed": args.seed, "--config": args.config, "--dataset": args.dataset,
                 "--sequence-length": args.sequence_length, "--run-dir": args.run_dir}
        ignored = [flag for flag, value in given.items() if value is not None]
        ignored += (["--set"] if args.set else []) + (["--morec"] if args.morec else [])
        if ignored:
            raise ConfigError(f"--resume continues the run's own config in its own folder; drop {', '.join(ignored)}")
        if args.total_steps is not None:
            sections["train"] = dataclasses.replace(sections["train"], total_steps=args.total_steps)
        if args.no_progress:  # display only: the numbers do not change
            sections["train"] = dataclasses.replace(sections["train"], progress=False)
        run_dir = args.resume
    else:
        base = {"train": {k: v for k, v in (("env", args.env), ("seed", args.seed),
                                            ("total_steps", args.total_steps)) if v is not None}}
        if args.no_progress:
            base["train"]["progress"] = False
        offline = recipe(args.algo).offline
        if (args.dataset is not None or args.morec) and not offline:
            raise ConfigError(f"--dataset and --morec are for the offline algos (mopo, mobile), not {args.algo}")
        if offline and args.dataset is not None:
            base["train"]["dataset"] = args.dataset
        if args.morec:
            base["agent"] = {"morec": True}
        if args.sequence_length is not None:
            if args.algo != "srl":
                raise ConfigError("--sequence-length is for srl; for SAC-J use --set agent.action_repeat=J")
            base["agent"] = {"sequence_length": args.sequence_length}
        sections = resolve_config(args.algo, base, args.config, args.set)
        t = sections["train"]
        label = Path(t.dataset).stem.replace(":", "-") if offline else t.env
        run_dir = args.run_dir or default_run_dir(args.algo, label, t.seed)
    console.print(f"[bold]run folder[/bold] {run_dir}")
    state = train(args.algo, sections, run_dir, resume=args.resume is not None)
    unit = "gradient steps" if recipe(args.algo).offline else f"env steps, {state.episodes} episodes"
    console.print(f"done: {state.step} {unit}, final eval return {state.evals[-1][1]:.1f}")
    console.print(f"TensorBoard: tensorboard --logdir {run_dir}")


def cmd_collect(args: argparse.Namespace) -> None:
    from cadence.collection import collect
    from cadence.replay import OfflineDataset

    cfg = CollectConfig(env=args.env, kind=args.kind, size=args.size, seed=args.seed, policy_seed=args.policy_seed,
                        policy_steps=args.policy_steps, eval_every=args.eval_every,
                        medium_fraction=args.medium_fraction, reference_episodes=args.reference_episodes,
                        record_reference=args.record_reference, out=args.out,
                        threads=args.threads, progress=not args.no_progress)
    path = collect(cfg, tuple(args.set))
    meta = OfflineDataset.load_hdf5(path).metadata
    console.print(f"[bold]{path}[/bold]: {meta.get('transitions')} transitions, {meta.get('episodes')} episodes, "
                  f"mean return {meta.get('mean_return', float('nan')):.1f}")
    console.print(f"policy: {meta.get('policy')}")
    if "reference_return" in meta:
        console.print(f"{cfg.kind} reference return {meta['reference_return']:.1f} over "
                      f"{meta['reference_episodes']} episodes" + (" (recorded)" if cfg.record_reference else ""))


def fas_table(results: dict[str, FASResult], title: str = "Frequency-Averaged Score") -> Table:
    """Mean return per ASL, one column per agent, with FAS in the last row."""
    table = Table(title=title)
    table.add_column("ASL", justify="right")
    for label in results:
        table.add_column(label, justify="right")
    first = next(iter(results.values()))
    for i, asl in enumerate(first.asl):
        table.add_row(str(asl), *(f"{r.mean[i]:.1f} ± {r.std[i]:.1f}" for r in results.values()))
    table.add_row("[bold]FAS", *(f"[bold]{r.fas:.3f}" for r in results.values()))
    return table


def cmd_eval_fas(args: argparse.Namespace) -> None:
    from cadence.runs import evaluate_fas

    planner = None
    if args.planner:
        planner = CEMConfig(horizon=args.horizon, samples=args.samples, iterations=args.iterations,
                            elites=max(1, min(CEMConfig.elites, args.samples // 10)))
    with console.status("FAS sweep") as status:
        show = lambda asl, r: status.update(f"FAS sweep: ASL {asl} mean return {r.mean():.1f}")
        result = evaluate_fas(args.run_dir, args.asl, args.episodes, args.seed, planner=planner,
                              batched=False if args.sequential else None, on_asl=show)
    console.print(fas_table({"MPC" if args.planner else "agent": result}, title=f"FAS on {result.env_id}"))
    published = PUBLISHED_SAC_J_FAS.get(env_family(result.env_id), {}).get(1)
    if published is not None:
        console.print(f"published SAC-1 FAS on the Gym v2 task: {published:.3f} (cadence uses Gymnasium v5)")
    suffix = "_mpc" if args.planner else ""
    console.print(f"wrote {args.run_dir / f'fas{suffix}.json'} and {args.run_dir / f'fas{suffix}.png'}; "
                  f"eval/fas{suffix} logged to TensorBoard")


def cmd_config(args: argparse.Namespace) -> None:
    spec = recipe(args.algo)
    for section, cls in (("train", spec.train_config_cls), ("agent", spec.config_cls)):
        docs = field_docs(cls)
        print(f"[{section}]")
        values = to_dict(cls())
        for f in dataclasses.fields(cls):
            print(f"# {docs.get(f.name, '')}")
            print(f"{f.name} = {values[f.name]!r}" if f.name in values else f"# {f.name} = (unset)")
        print()


def cmd_dashboard(args: argparse.Namespace) -> None:
    console.print(f"TensorBoard on {args.logdir} at http://localhost:{args.port}")
    subprocess.run([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir), "--port", str(args.port)],
                   check=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            cmd_train(args)
        elif args.command == "eval":
            cmd_eval_fas(args)
        elif args.command == "collect":
            cmd_collect(args)
        elif args.command == "config":
            cmd_config(args)
        elif args.command == "dashboard":
            cmd_dashboard(args)
    except (ConfigError, CheckpointError, ValueError) as e:
        err_console.print(f"[red]error:[/red] {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
