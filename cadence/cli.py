"""The cadence command line.

  cadence train sac --env Hopper-v5 --seed 1 --total-steps 300000 [--config F.toml] [--set KEY=VALUE ...]
  cadence train srl --env Hopper-v5 --sequence-length 8
  cadence train sac --resume RUN_DIR [--total-steps N]
  cadence train mopo --dataset hopper-medium [--morec]      (offline; also: mobile)
  cadence train sac --help                                  (the algo's config keys, for --set)
  cadence eval fas RUN_DIR [--episodes 10] [--asl 1,2,4,...] [--planner]
  cadence eval fas --sb3 MODEL.zip --env Hopper-v5 [--out DIR]
  cadence collect --env Hopper-v5 --kind medium [--size N] [--policy-steps N] [--record-reference]
  cadence collect --sequence cheetah-vel-3 --kind medium     (one data set per task; --env FAMILY --task T: one)
  cadence config sac > sac.toml                             (then: cadence train sac --config sac.toml)
  cadence plot RUN_DIR... [--group algo] [--what eval|fas] [--out FILE]
  cadence sweep GRID.toml [--executor local|ray] [--workers N] [--runs-dir DIR] [--dry-run]
  cadence report SWEEP_DIR [--out DIR] [--compare METHOD_A METHOD_B]
  cadence dashboard [DIR]                                   (TensorBoard on a runs or sweep folder)
  cadence task-gap SEQUENCE [--n 1000] [--fit-steps 2000]   (can the sequence show forgetting?)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

import cadence
from cadence.config import ConfigError

if TYPE_CHECKING:  # torch, numpy and the recipes load inside the commands: --help stays fast
    from rich.table import Table

    from cadence.evaluation.fas import FASResult

#: The algos of cadence.recipes.RECIPES with a line of help (kept here so that --help needs no torch;
#: tests/test_cli.py keeps the two equal).
ALGOS: dict[str, str] = {
    "sac": "Soft Actor-Critic, online (SAC-J: --set agent.action_repeat=J)",
    "srl": "Sequence RL, online: J actions per state (--sequence-length J)",
    "mopo": "MOPO, offline from a data set (--dataset NAME) [--morec]",
    "mobile": "MOBILE, offline from a data set (--dataset NAME) [--morec]",
    "hypercrl": "HyperCRL, continual model-based over a task sequence (--sequence NAME --steps-per-task N)",
    "mbrl-finetune": "continual model-based baseline: one model finetuned task after task (--sequence NAME)",
    "mbrl-coreset": "continual model-based baseline: a growing replay of earlier tasks (--sequence NAME)",
    "mbrl-ewc": "continual model-based baseline: Elastic Weight Consolidation (--sequence NAME)",
    "mbrl-si": "continual model-based baseline: Synaptic Intelligence (--sequence NAME)",
    "mbrl-multitask": "continual model-based bound: one model on every task's data (--sequence NAME)",
    "mbrl-single": "continual model-based bound: one model per task (--sequence NAME)",
    "oer": "OER, continual offline: MBES memory + dual behaviour cloning over one data set per task "
           "(--sequence NAME --memory N)",
    "er": "continual offline baseline: a random memory replayed in every loss (--sequence NAME --memory N)",
    "mbes": "continual offline ablation: OER's MBES memory without dual cloning (--sequence NAME)",
    "dbc": "continual offline ablation: dual behaviour cloning with a random memory (--sequence NAME)",
    "finetune": "continual offline bound: TD3+BC on each task's data set in turn (--sequence NAME)",
    "multitask": "continual offline bound: TD3+BC on every data set so far (--sequence NAME)",
}
#: cadence.collection.KINDS, for the same reason.
COLLECT_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _parse_asl(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--asl must be a comma-separated list of integers, got {text!r}") from None


def _parse_task(text: str) -> tuple[float, ...] | str:
    """``--task``: comma-separated numbers (a task family's params, ``0.6,1,1``) or a preset name (``low-gravity``)."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise argparse.ArgumentTypeError("--task needs comma-separated numbers or a preset name")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        return text.strip()


def _first_sentence(doc: str, limit: int = 100) -> str:
    text = re.split(r"(?<=\.)\s+(?=[A-Z(])", " ".join(doc.split()), maxsplit=1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: how a new run's config is layered, for --help, the README and `cadence config`
PRECEDENCE = ("config precedence, lowest first: the algo's defaults (per-env defaults included, e.g. "
              "agent.learning_starts 1000 on InvertedPendulum-v5), then a --config file, then the flags (--env, "
              "--seed, --total-steps, ...), then --set KEY=VALUE")


def _env_values(algo: str) -> dict[str, dict[str, Any]]:
    """``section.key -> {env id: value}`` of the algo's per-env defaults."""
    from cadence.schema import algo_schema

    out: dict[str, dict[str, Any]] = {}
    for env, sections in algo_schema(algo)["env_defaults"].items():
        for section, values in sections.items():
            for key, value in values.items():
                out.setdefault(f"{section}.{key}", {})[env] = value
    return out


def _per_env_text(values: dict[str, Any]) -> str:
    """``1000 on InvertedPendulum-v5, Pendulum-v1; 2000 on Reacher-v5``."""
    from cadence.config import toml_value

    by_value: dict[str, list[str]] = {}
    for env, value in values.items():
        by_value.setdefault(toml_value(value), []).append(env)
    return "; ".join(f"{value} on {', '.join(envs)}" for value, envs in by_value.items())


def _fields(algo: str, env: str | None) -> tuple[dict[str, list[tuple[str, str | None, str]]], dict[str, str]]:
    """The algo's ``(name, TOML default, doc)`` per section, with ``env``'s per-env defaults (and ``train.env``)
    filled in when ``env`` is given; and a note per key whose default depends on the env."""
    from cadence.config import toml_value
    from cadence.schema import algo_schema

    per_env, notes = _env_values(algo), {}
    sections: dict[str, list[tuple[str, str | None, str]]] = {}
    for section, fields in algo_schema(algo)["sections"].items():
        rows = []
        for f in fields:
            key, text = f"{section}.{f['name']}", f["default"]
            if key in per_env:
                if env is not None and env in per_env[key]:
                    text = toml_value(per_env[key][env])
                    notes[key] = f"{env}'s own default; the algo's is {f['default']}"
                elif env is not None:
                    notes[key] = f"the algo's default, which {env} keeps (others: {_per_env_text(per_env[key])})"
                else:
                    notes[key] = f"depends on train.env: {_per_env_text(per_env[key])}; {f['default']} elsewhere"
            if key == "train.env" and env is not None:
                text = toml_value(env)
            rows.append((f["name"], text, f["doc"]))
        sections[section] = rows
    return sections, notes


def config_keys_help(algo: str, env: str | None = None) -> str:
    """The algo's config keys with their defaults (``env``'s, when given) and one-line docs, for ``cadence train
    ALGO --help`` (read from :mod:`cadence.schema`: no torch)."""
    sections, notes = _fields(algo, env)
    rows = []
    for section, fields in sections.items():
        for name, text, doc in fields:
            key = f"{section}.{name}"
            note = f" [{notes[key]}]" if key in notes else ""
            rows.append((f"{key} = {'(unset)' if text is None else text}", _first_sentence(doc) + note))
    width = min(44, max(len(key) for key, _ in rows))
    where = f" on {env}" if env else ""
    head = (f"config keys and their defaults{where} (--set KEY=VALUE, or a --config file; full docs: cadence config "
            f"{algo}{' --env ' + env if env else ''}):")
    return "\n".join([head] + [f"  {key:<{width}}  {doc}" for key, doc in rows])


def _wrapped(text: str, width: int = 100, prefix: str = "") -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width, initial_indent=prefix, subsequent_indent=prefix)
                     for line in text.splitlines())


#: ``--env`` as given on a command line that asks for --help (argparse shows help before it stores values)
_HELP_ENV: list[str] = []


def _scan_env(argv: list[str]) -> None:
    """Note ``--env ID`` (or ``--env=ID``) of a ``cadence train ALGO ... --help`` line, so the help shows that env's
    defaults."""
    _HELP_ENV.clear()
    for i, arg in enumerate(argv):
        if arg == "--env" and i + 1 < len(argv):
            _HELP_ENV.append(argv[i + 1])
        elif arg.startswith("--env="):
            _HELP_ENV.append(arg.split("=", 1)[1])


class AlgoParser(argparse.ArgumentParser):
    """The parser of ``cadence train ALGO``: its help ends with the algo's config keys, read only when shown."""

    def __init__(self, *args: Any, algo: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.algo = algo

    def format_help(self) -> str:
        if self.algo and self.epilog is None:
            self.epilog = config_keys_help(self.algo, _HELP_ENV[-1] if _HELP_ENV else None)
        return super().format_help()


def _seed(text: str) -> int:
    """A seed flag's value: an int >= 0, as Gymnasium and NumPy take seeds."""
    value = int(text)  # not an int: argparse reports "invalid seed value"
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are >= 0 (Gymnasium's and NumPy's), got {value}")
    return value


_seed.__name__ = "seed"  # argparse names the type in its message


def _train_flags() -> argparse.ArgumentParser:
    """The flags every ``cadence train ALGO`` takes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--env", help="env id, e.g. Hopper-v5 (train.env)")
    p.add_argument("--seed", type=_seed, help="seed of the networks, replay sampling and env (train.seed)")
    p.add_argument("--total-steps", type=int, help="budget in primitive env steps (offline algos: gradient steps)")
    p.add_argument("--dataset", help="offline algos (required): data set name or path (hopper-medium, d4rl:NAME, ...)")
    p.add_argument("--morec", action="store_true",
                   help="offline algos: MOREC's dynamics-reward transition filter in model rollouts")
    p.add_argument("--sequence-length", type=int, metavar="J", help="SRL-J: actions decided per state (srl only)")
    p.add_argument("--sequence", metavar="NAME",
                   help="continual algos: task sequence, e.g. HalfCheetahBody or cheetah-vel-3 (train.sequence)")
    p.add_argument("--teacher", metavar="NAME",
                   help="sac, srl: a curriculum teacher choosing each episode's task; on a task-family env "
                        "random, alp-gmm, riac or covar-gmm, on PointMazeLayout-v0 dr or clutr (train.teacher)")
    p.add_argument("--task", type=_parse_task, metavar="TASK",
                   help="sac, srl on a task-family env: fix every episode's task, as comma-separated params "
                        "(0.6,1,1) or a preset name (low-gravity) (train.task)")
    p.add_argument("--steps-per-task", type=int, metavar="N",
                   help="continual algos: env steps collected in each task; continual offline algos (oer, er, ...): "
                        "gradient steps on each task's data set (train.steps_per_task)")
    p.add_argument("--memory", type=int, metavar="N",
                   help="continual offline algos: transitions the memory keeps over all finished tasks (agent.memory)")
    p.add_argument("--config", type=Path, help="TOML file with [train] and [agent] sections (cadence config ALGO); "
                                               "the flags above beat its values")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set agent.batch_size=128 (repeatable); beats the flags "
                        "and --config")
    p.add_argument("--run-dir", type=Path, help="run folder (default runs/<algo>_<env>_s<seed>_<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _add_train(sub: Any) -> None:
    p_train = sub.add_parser("train", help="train an agent; writes a run folder",
                             description="Train an agent in a run folder. cadence train ALGO --help lists the "
                                         "algo's flags and config keys.")
    algos = p_train.add_subparsers(dest="algo", required=True, metavar="ALGO", parser_class=AlgoParser)
    flags = _train_flags()
    for name, text in ALGOS.items():
        algos.add_parser(name, help=text, description=f"{text}\n\n{_wrapped(PRECEDENCE + '.')}", parents=[flags],
                         algo=name, formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_eval(sub: Any) -> None:
    p_eval = sub.add_parser("eval", help="evaluate a trained run or a stable-baselines3 policy")
    eval_sub = p_eval.add_subparsers(dest="what", required=True)
    p = eval_sub.add_parser("fas", help="Frequency-Averaged Score sweep over action-sequence lengths")
    p.add_argument("run_dir", type=Path, nargs="?", help="a cadence run folder (or use --sb3)")
    p.add_argument("--sb3", type=Path, metavar="MODEL.zip", help="sweep a stable-baselines3 model instead (with --env)")
    p.add_argument("--env", help="--sb3: the env id the model acts in, e.g. Hopper-v5")
    p.add_argument("--out", type=Path, metavar="DIR", help="--sb3: output folder (default <model>_fas/)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per ASL")
    p.add_argument("--asl", type=_parse_asl, help="ASL grid within 1..30, e.g. 1,2,4,8 (default: the paper's "
                                                  "16 points; any other grid is no comparable FAS)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the first evaluation episode")
    p.add_argument("--planner", action="store_true",
                   help="plan with CEM-MPC through the run's learned model (srl runs) instead of its actor")
    p.add_argument("--sequential", action="store_true",
                   help="one Gymnasium env per ASL in turn instead of all worlds in one batch (same FAS)")
    p.add_argument("--horizon", type=int, help="CEM planning horizon (default 30)")
    p.add_argument("--samples", type=int, help="CEM candidates per iteration (default 500)")
    p.add_argument("--iterations", type=int, help="CEM iterations (default 5)")


def _add_collect(sub: Any) -> None:
    p = sub.add_parser("collect", help="make a D4RL-style data set from cadence's own SAC policies")
    p.add_argument("--env", help="env id (default Hopper-v5, or the --sequence's task family)")
    p.add_argument("--task", type=_parse_task, metavar="TASK",
                   help="a task-family env's task: comma-separated params (1.5) or a preset name (low-gravity)")
    p.add_argument("--sequence", metavar="NAME",
                   help="a task sequence, e.g. cheetah-vel-3: one data set per task, each from its own SAC run, "
                        "named <sequence>-<task index>-<kind>-v5.hdf5")
    p.add_argument("--task-index", type=int, metavar="I", help="--sequence: collect only its task I (from 0)")
    p.add_argument("--kind", choices=COLLECT_KINDS, help="which data set (default medium)")
    p.add_argument("--size", type=int, help="transitions to collect")
    p.add_argument("--seed", type=_seed, help="seed of the collection episodes")
    p.add_argument("--policy-seed", type=_seed, help="seed of the SAC run")
    p.add_argument("--policy-steps", type=int, help="SAC training budget; its final policy is the expert")
    p.add_argument("--eval-every", type=int, help="policy snapshot interval (the medium policy is one snapshot)")
    p.add_argument("--medium-fraction", type=float,
                   help="the medium policy is the first snapshot reaching this fraction of the expert's return")
    p.add_argument("--reference-episodes", type=int, help="episodes that measure the random or expert reference return")
    p.add_argument("--record-reference", action="store_true",
                   help="write the measured random/expert return into the reference-score table")
    p.add_argument("--out", help="output folder (default $CADENCE_DATA_DIR or ~/.cadence/datasets)")
    p.add_argument("--threads", type=int, help="torch threads while training and collecting")
    p.add_argument("--worlds", type=int, help="worlds collecting at once (batched; default 1: one Gymnasium env)")
    p.add_argument("--backend", choices=("rollout", "warp"), help="physics of the --worlds (default rollout)")
    p.add_argument("--device", help="where warp's physics runs: cpu or cuda (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the SAC run's config, e.g. --set agent.learning_starts=1000")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {cadence.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_collect(sub)
    p_cfg = sub.add_parser("config", help="print an algo's config as TOML, with its defaults and documentation")
    p_cfg.add_argument("algo", choices=ALGOS, help="one of: " + ", ".join(ALGOS))
    p_cfg.add_argument("--env", help="write the values for this env (per-env defaults such as learning_starts "
                                     "included); without it, keys whose default depends on the env stay commented out")
    p_plot = sub.add_parser("plot", help="plot run folders side by side (learning curves or return against ASL)")
    p_plot.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished run folders")
    p_plot.add_argument("--group", default="algo", help="metrics.json field to group runs by: algo, env or seed")
    p_plot.add_argument("--what", default="eval", choices=("eval", "fas"),
                        help="eval: learning curves; fas: return against ASL from each run's fas.json")
    p_plot.add_argument("--out", type=Path, metavar="FILE", help="image file (default plot_<what>_by_<group>.png)")
    _add_sweep(sub)
    p_gap = sub.add_parser("task-gap", help="how differently a sequence's tasks move the same (s, a): whether it "
                           "can show forgetting")
    p_gap.add_argument("sequence", help="a task sequence, e.g. halfcheetah-motor-3 (unknown names list the known)")
    p_gap.add_argument("--n", type=int, default=1000, help="random transitions per task (default 1000)")
    p_gap.add_argument("--seed", type=_seed, default=0, help="seed of the random actions, episodes and the model fit")
    p_gap.add_argument("--fit-steps", type=int, default=2000,
                       help="updates of a single-task model on the first task, whose held-out error the gap is "
                            "compared with (0: skip the fit)")
    p_gap.add_argument("--out", type=Path, metavar="FILE.json", help="also write the gaps as JSON")
    p_dash = sub.add_parser("dashboard", help="start TensorBoard on a runs or sweep folder")
    p_dash.add_argument("dir", type=Path, nargs="?", help="folder of run folders (default runs)")
    p_dash.add_argument("--logdir", type=Path, help="the same as DIR (TensorBoard's name for it)")
    p_dash.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default 6006)")
    return parser


# --- train ---------------------------------------------------------------------------------------------------------
def _resume_sections(args: argparse.Namespace) -> dict[str, Any]:
    """The config of the run in ``--resume``; flags that would change it are refused."""
    given = {"--env": args.env, "--seed": args.seed, "--config": args.config, "--dataset": args.dataset,
             "--sequence-length": args.sequence_length, "--run-dir": args.run_dir, "--sequence": args.sequence,
             "--steps-per-task": args.steps_per_task, "--teacher": args.teacher, "--task": args.task,
             "--memory": args.memory}
    ignored = [flag for flag, value in given.items() if value is not None]
    ignored += (["--set"] if args.set else []) + (["--morec"] if args.morec else [])
    if ignored:
        raise ConfigError(f"--resume continues the run's own config in its own folder; drop {', '.join(ignored)}")
    from cadence.runs import read_run_config

    algo, sections = read_run_config(args.resume)
    if algo != args.algo:
        raise ConfigError(f"{args.resume} is a {algo!r} run, not {args.algo!r}")
    if args.total_steps is not None:
        sections["train"] = dataclasses.replace(sections["train"], total_steps=args.total_steps)
    if args.no_progress:  # display only: the numbers do not change
        sections["train"] = dataclasses.replace(sections["train"], progress=False)
    return sections


#: the train flags that set one config key: key -> flag
FLAG_KEYS = {"train.env": "--env", "train.seed": "--seed", "train.total_steps": "--total-steps",
             "train.dataset": "--dataset", "agent.morec": "--morec", "train.sequence": "--sequence",
             "train.steps_per_task": "--steps-per-task", "train.teacher": "--teacher", "train.task": "--task",
             "agent.sequence_length": "--sequence-length", "agent.memory": "--memory"}


def _flag_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config values of the flags the user gave (``{"train": {...}, "agent": {...}}``), each checked against
    the algo (from :mod:`cadence.schema`, so a misplaced flag is refused before torch loads)."""
    from cadence.schema import algo_schema, field_names, schema

    info = algo_schema(args.algo)
    offline, continual = info["offline"], info["continual"]
    if (args.dataset is not None or args.morec) and not offline:
        raise ConfigError(f"--dataset and --morec are for the offline algos (mopo, mobile), not {args.algo}")
    if (args.sequence is not None or args.steps_per_task is not None) and not continual:
        raise ConfigError(f"--sequence and --steps-per-task are for the continual algos (hypercrl, mbrl-*, oer, er, "
                          f"mbes, dbc, finetune, multitask), not {args.algo}")
    if args.memory is not None and "memory" not in field_names(args.algo)["agent"]:
        raise ConfigError(f"--memory is for the continual offline algos (oer, er, mbes, dbc), not {args.algo}")
    if continual and (args.env is not None or args.total_steps is not None):
        raise ConfigError("a continual run's env and budget follow from its sequence: use --sequence NAME and "
                          "--steps-per-task N instead of --env / --total-steps")
    if args.teacher is not None:
        if args.algo not in ("sac", "srl"):
            raise ConfigError(f"--teacher chooses tasks for online agents (sac, srl), not {args.algo}")
        teachers = schema()["teachers"]
        if args.teacher not in teachers:
            import difflib

            close = difflib.get_close_matches(args.teacher.lower(), teachers, n=1, cutoff=0.5)
            raise ConfigError(f"--teacher {args.teacher!r} is no teacher" + (f"; did you mean {close[0]}?" if close
                              else f"; one of {', '.join(teachers)}"))
    if args.task is not None and args.algo not in ("sac", "srl"):
        raise ConfigError(f"--task fixes the task of online agents (sac, srl), not {args.algo}")
    if args.sequence_length is not None and args.algo != "srl":
        raise ConfigError("--sequence-length is for srl; for SAC-J use --set agent.action_repeat=J")
    task = args.task if args.task is None or isinstance(args.task, str) else list(args.task)
    given = {"train.env": args.env, "train.seed": args.seed, "train.total_steps": args.total_steps,
             "train.dataset": args.dataset, "agent.morec": True if args.morec else None,
             "train.sequence": args.sequence, "train.steps_per_task": args.steps_per_task,
             "train.teacher": args.teacher, "train.task": task, "agent.sequence_length": args.sequence_length,
             "agent.memory": args.memory, "train.progress": False if args.no_progress else None}
    flags: dict[str, dict[str, Any]] = {"train": {}, "agent": {}}
    for key, value in given.items():
        if value is not None:
            section, name = key.split(".")
            flags[section][name] = value
    return flags


def _check_keys(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The --config file's values, and every key of it and of --set checked against the algo's config, before
    torch loads; an unknown key gets its close match."""
    from cadence.config import config_key_in, parse_override, read_config_file
    from cadence.schema import field_names

    names = field_names(args.algo)
    loaded = read_config_file(args.config, list(names)) if args.config is not None else {}
    for section, values in loaded.items():
        for key in values:
            try:
                config_key_in(names, f"{section}.{key}")
            except ConfigError as e:
                raise ConfigError(f"{args.config}: {e}") from None
    for text in args.set:
        config_key_in(names, parse_override(text)[0])
    return loaded


def _note_overrides(args: argparse.Namespace, flags: dict[str, dict[str, Any]], loaded: dict[str, Any]) -> None:
    """Say which value won where the flags, the file and --set disagree (flags beat the file, --set beats both)."""
    from cadence.config import config_key_in, parse_override, toml_value
    from cadence.schema import field_names

    names = field_names(args.algo)
    for key, flag in FLAG_KEYS.items():
        section, name = key.split(".")
        if name in flags[section] and name in loaded.get(section, {}) and loaded[section][name] != flags[section][name]:
            shown = flags[section][name]
            shown = shown if isinstance(shown, str) else toml_value(shown)
            err_console.print(f"[yellow]note:[/yellow] {flag} {escape(shown)} is used, "
                              f"not {key} = {escape(toml_value(loaded[section][name]))} from {escape(str(args.config))}"
                              " (flags beat the config file)", highlight=False)
    for text in args.set:
        key, value = parse_override(text)
        section, name = config_key_in(names, key)
        flag = FLAG_KEYS.get(f"{section}.{name}")
        if flag and name in flags[section] and flags[section][name] != value:
            err_console.print(f"[yellow]note:[/yellow] --set {escape(text)} is used, not {flag} "
                              f"{escape(toml_value(flags[section][name]))} (--set beats the flags)", highlight=False)


def _new_sections(args: argparse.Namespace, offline: bool) -> dict[str, Any]:
    """A new run's config: defaults (per-env ones included) <- --config file <- flags <- --set."""
    flags = _flag_values(args)
    loaded = _check_keys(args)
    _note_overrides(args, flags, loaded)
    from cadence.runs import resolve_config

    sections = resolve_config(args.algo, None, args.config, args.set, flags)
    if offline and not sections["train"].dataset:
        from cadence.replay.datasets import available_hint

        raise ConfigError(f"{args.algo} learns from a data set: pass --dataset NAME; {available_hint()}")
    return sections


def cmd_train(args: argparse.Namespace) -> None:
    from cadence.schema import algo_schema

    offline = algo_schema(args.algo)["offline"]
    if args.resume is not None:
        sections, run_dir = _resume_sections(args), args.resume
    else:
        sections = _new_sections(args, offline)
        t = sections["train"]
        label = Path(t.dataset).stem.replace(":", "-") if offline else t.env
        from cadence.runs import default_run_dir

        run_dir = args.run_dir or default_run_dir(args.algo, label, t.seed)
    from cadence.runs import train

    total = sections["train"].total_steps
    state = train(args.algo, sections, run_dir, resume=args.resume is not None,
                  on_start=lambda folder: console.print(f"[bold]run folder[/bold] {folder}"),
                  on_resume=lambda step: console.print(f"resumed at step {step:,} of {total:,}", highlight=False))
    gradient_steps = offline or hasattr(sections["train"], "dataset_kind")  # continual offline: no env steps
    unit = "gradient steps" if gradient_steps else f"env steps, {state.episodes} episodes"
    console.print(f"done: {state.step} {unit}, final eval return {state.evals[-1][1]:.1f}")
    console.print(f"TensorBoard: tensorboard --logdir {run_dir}")


# --- eval fas ------------------------------------------------------------------------------------------------------
def fas_table(results: dict[str, FASResult], title: str = "Frequency-Averaged Score", score: str = "FAS") -> Table:
    """Mean return per ASL, one column per agent, with the score in the last row."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("ASL", justify="right")
    for label in results:
        table.add_column(label, justify="right")
    first = next(iter(results.values()))
    for i, asl in enumerate(first.asl):
        table.add_row(str(asl), *(f"{r.mean[i]:.1f} ± {r.std[i]:.1f}" for r in results.values()))
    table.add_row(f"[bold]{score}", *(f"[bold]{r.fas:.3f}" for r in results.values()))
    return table


def _fas_grid(asl: tuple[int, ...] | None) -> tuple[int, ...]:
    """The --asl grid, checked against FAS's range 1..30; the paper's full grid by default."""
    from cadence.evaluation.fas import ASL_GRID
    from cadence.runs import check_fas_grid

    if asl is None:
        return ASL_GRID
    try:
        return check_fas_grid(asl)
    except ValueError as e:
        raise ConfigError(f"--asl {','.join(map(str, asl))}: {e}") from None


def _check_fas_args(args: argparse.Namespace) -> None:
    """A run folder, or --sb3 with --env: exactly one source, and only the flags that apply to it."""
    if (args.run_dir is None) == (args.sb3 is None):
        raise ConfigError("eval fas needs exactly one of RUN_DIR (a cadence run) or --sb3 MODEL.zip --env ENV_ID")
    if args.sb3 is not None:
        if args.env is None:
            raise ConfigError("--sb3 needs --env ENV_ID, the env the model acts in (e.g. Hopper-v5)")
        if args.planner:
            raise ConfigError("--planner plans through a cadence srl run's model; an SB3 model has none")
    elif args.env is not None or args.out is not None:
        raise ConfigError("--env and --out are for --sb3; a run folder's sweep uses its own env and folder")


def _planner(args: argparse.Namespace) -> Any:
    from cadence.agents.planning import CEMConfig

    d = CEMConfig()
    samples = args.samples or d.samples
    return CEMConfig(horizon=args.horizon or d.horizon, samples=samples, iterations=args.iterations or d.iterations,
                     elites=max(1, min(d.elites, samples // 10)))


def _sweep_sb3(args: argparse.Namespace, grid: tuple[int, ...], show: Callable) -> tuple[FASResult, str, Path]:
    from cadence.agents.sb3 import load_sb3_policy
    from cadence.runs import evaluate_policy_fas

    policy = load_sb3_policy(args.sb3, args.env)
    out_dir = args.out or args.sb3.with_name(args.sb3.name.removesuffix(".zip") + "_fas")
    label = policy.algo.upper()
    result = evaluate_policy_fas(policy, args.env, out_dir, label, grid, args.episodes, args.seed, show,
                                 batched=False if args.sequential else None)
    return result, label, out_dir


def cmd_eval_fas(args: argparse.Namespace) -> None:
    from cadence.evaluation.fas import ASL_GRID, PUBLISHED_SAC_J_FAS, env_family
    from cadence.run_folder import read_metrics
    from cadence.runs import evaluate_fas, fas_stem

    _check_fas_args(args)
    grid = _fas_grid(args.asl)
    stem = fas_stem(grid, "_mpc" if args.planner else "")
    logged_step = lambda: read_metrics(args.run_dir).get(f"{stem}_logged_step") if args.run_dir is not None else None
    logged_before = logged_step()
    with console.status("FAS sweep") as status:
        show = lambda asl, r: status.update(f"FAS sweep: ASL {asl} mean return {r.mean():.1f}")
        if args.sb3 is not None:
            result, label, out_dir = _sweep_sb3(args, grid, show)
        else:
            planner = _planner(args) if args.planner else None
            result = evaluate_fas(args.run_dir, grid, args.episodes, args.seed, planner=planner,
                                  batched=False if args.sequential else None, on_asl=show)
            label, out_dir = "MPC" if args.planner else "agent", args.run_dir
    partial = grid != ASL_GRID
    title = f"{'partial-grid score' if partial else 'FAS'} on {result.env_id}"
    console.print(fas_table({label: result}, title=title, score="FAS (partial)" if partial else "FAS"))
    published = PUBLISHED_SAC_J_FAS.get(env_family(result.env_id), {}).get(1)
    if published is not None:
        console.print(f"published SAC-1 FAS on the Gym v2 task: {published:.3f} (cadence uses Gymnasium v5)")
    logged = ""
    if args.run_dir is not None and not partial:
        logged = (f"; eval/{stem} logged to TensorBoard" if logged_step() != logged_before else
                  f"; TensorBoard already holds this step's eval/{stem}, so nothing was logged again")
    console.print(f"wrote {out_dir / f'{stem}.json'} and {out_dir / f'{stem}.png'}{logged}")
    if partial:
        console.print(f"[yellow]note:[/yellow] ASL grid {','.join(map(str, grid))} is not the paper's 16-point grid "
                      f"({','.join(map(str, ASL_GRID))}): this score is not a FAS comparable with the paper's, so it "
                      f"was written to {stem}.json, not fas.json")


# --- collect, config, plot, dashboard ------------------------------------------------------------------------------
COLLECT_FLAGS = ("env", "kind", "size", "seed", "policy_seed", "policy_steps", "eval_every", "medium_fraction",
                 "reference_episodes", "out", "threads", "task", "sequence", "task_index", "worlds", "backend",
                 "device")


def cmd_collect(args: argparse.Namespace) -> None:
    from cadence.collection import CollectConfig, collect
    from cadence.replay import OfflineDataset

    given = {name: getattr(args, name) for name in COLLECT_FLAGS if getattr(args, name) is not None}
    cfg = CollectConfig(**given, record_reference=args.record_reference, progress=not args.no_progress)
    made = collect(cfg, tuple(args.set))
    for path in made if isinstance(made, list) else [made]:
        meta = OfflineDataset.load_hdf5(path).metadata
        task = f" (task {meta['task_index']}: {meta['task_label']})" if "task_index" in meta else (
            f" (task {meta['task_label']})" if "task_label" in meta else "")
        console.print(f"[bold]{escape(str(path))}[/bold]{escape(task)}: {meta.get('transitions')} transitions, "
                      f"{meta.get('episodes')} episodes, mean return {meta.get('mean_return', float('nan')):.1f}")
        console.print(f"policy: {escape(str(meta.get('policy')))}")
        if "reference_return" in meta:
            console.print(f"{cfg.kind} reference return {meta['reference_return']:.1f} over "
                          f"{meta['reference_episodes']} episodes" + (" (recorded)" if cfg.record_reference else ""))


def cmd_config(args: argparse.Namespace) -> None:
    from cadence.config import render_documented_toml
    from cadence.schema import algo_schema

    if args.env is not None and algo_schema(args.algo)["continual"]:
        raise ConfigError(f"{args.algo} learns a task sequence: its env follows from train.sequence, not --env")
    sections, notes = _fields(args.algo, args.env)
    # without an env, a key whose default depends on it stays commented out: the file then keeps the per-env
    # default of whichever --env it trains (it would pin the algo's default for every env otherwise)
    commented = set(notes) if args.env is None else set()
    where = f" on {args.env}" if args.env else ""
    header = f"{args.algo} defaults{where}; edit, then: cadence train {args.algo} --config FILE\n{PRECEDENCE}."
    print(_wrapped(header, prefix="# ") + "\n")
    print(render_documented_toml(sections, notes, commented), end="")


def cmd_plot(args: argparse.Namespace) -> None:
    from cadence.evaluation.plots import plot_runs

    path = plot_runs(args.run_dirs, group=args.group, what=args.what, out=args.out)
    console.print(f"wrote {path}")


def cmd_dashboard(args: argparse.Namespace) -> None:
    logdir = args.dir or args.logdir or Path("runs")
    if not logdir.is_dir():
        raise FileNotFoundError(f"{logdir} is not a folder; give a runs folder or a sweep folder "
                                "(cadence sweep writes runs/sweeps/<name>)")
    # smoothing 0 in the link: TensorBoard's default 0.6 would average a FAS curve's neighbouring ASLs together
    console.print(f"TensorBoard on {logdir} at http://localhost:{args.port}/#scalars&_smoothingWeight=0 (runs named "
                  "<method>/<settings>; the HParams tab compares them; in Custom Scalars set Smoothing to 0 and untick "
                  "'Ignore outliers' for the return-against-ASL chart)", soft_wrap=True)
    subprocess.run([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(args.port)],
                   check=False)


def cmd_task_gap(args: argparse.Namespace) -> None:
    from cadence.envs.task_gap import MIN_GAP_RATIO, gap_warning, task_gap
    from cadence.io import atomic_write_json

    if args.n < 2 or args.fit_steps < 0:
        raise ValueError(f"--n must be >= 2 and --fit-steps >= 0, got {args.n} and {args.fit_steps}")
    gap = task_gap(args.sequence, n=args.n, seed=args.seed)
    console.print(f"task gap of {args.sequence}: normalised squared next-state difference on the same (s, a) "
                  f"(row: whose (s, a); column: which task's physics; 1 = a typical step's variance)")
    console.print(gap.table(), highlight=False)
    console.print(f"smallest gap {gap.min_state_gap:.4g}", highlight=False)
    out = gap.to_dict()
    if args.fit_steps:
        from cadence.world_models.single_task import single_task_error

        error = single_task_error(gap.data[0], gap.state_scale, args.fit_steps, seed=args.seed)
        out["single_task_error"] = error
        console.print(f"single-task model ({args.fit_steps} updates on {gap.labels[0]!r}): held-out normalised state "
                      f"error {error:.4g}; gap / error = {gap.min_state_gap / max(error, 1e-12):.1f}x "
                      f"(>= {MIN_GAP_RATIO:g}x needed)", highlight=False)
        warning = gap_warning(gap.sequence, gap.min_state_gap, gap.min_reward_gap, error)
        if warning:
            err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if args.out:
        atomic_write_json(args.out, out)
        console.print(f"wrote {args.out}")


# --- sweep and report ----------------------------------------------------------------------------------------------
def _add_sweep(sub: Any) -> None:
    from cadence.sweeps import GRID_EXAMPLE

    p = sub.add_parser("sweep", help="run a grid of runs (TOML) locally or on Ray; resumable",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run every run of a grid file, skipping finished ones and resuming interrupted "
                                   "ones. A grid file:\n\n" + GRID_EXAMPLE)
    p.add_argument("grid", type=Path, metavar="GRID.toml", help="the grid file (format above)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine (default); ray: Ray tasks (extra 'ray')")
    p.add_argument("--workers", type=int, help="runs at once (default: one per CPU core)")
    p.add_argument("--runs-dir", type=Path, help="the sweep folder (default runs/sweeps/<name>); on a Ray cluster, "
                   "storage every node sees")
    p.add_argument("--ray-address", help="a Ray cluster to attach to (default: RAY_ADDRESS, else Ray starts here)")
    p.add_argument("--cpus-per-run", type=int, default=1, help="Ray: CPUs each run asks for (its torch threads)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs each run asks for")
    p.add_argument("--restart-changed", action="store_true",
                   help="delete and train again the runs whose folder holds a run trained with other settings than "
                        "the grid now gives (without it such a sweep is refused, naming the runs and keys)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their folders; run nothing")
    p = sub.add_parser("report", help="Markdown report of a sweep: IQM and mean with bootstrap CIs, plots")
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a folder written by cadence sweep")
    p.add_argument("--out", type=Path, help="report folder (default SWEEP_DIR/report)")
    p.add_argument("--compare", nargs=2, metavar=("METHOD_A", "METHOD_B"),
                   help="probability that A beats B (default: the grid's [sweep] compare)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from cadence import sweeps

    sweep = sweeps.load_sweep(args.grid)
    root = args.runs_dir or Path("runs") / "sweeps" / sweep.name
    if args.executor == "ray":
        executor = sweeps.RayExecutor(args.workers, args.ray_address, args.cpus_per_run, args.gpus_per_run)
    else:
        executor = sweeps.LocalExecutor(args.workers)
    if args.dry_run:
        changed = sweeps.changed_runs(sweep, root, executor.torch_threads)
        for run in sweep.runs:
            state = ("changed: " + ", ".join(changed[run.name]) if run.name in changed
                     else "done" if sweeps.is_done(run, root) else "to run")
            console.print(f"{run.name:60s} {run.algo:10s} {state}", highlight=False, soft_wrap=True)
        console.print(f"{len(sweep.runs)} runs in {root}; {executor.slots} at once, {executor.torch_threads} torch "
                      "thread(s) each", soft_wrap=True)
        if changed:
            console.print(f"{len(changed)} run(s) were trained with other settings than the grid gives: the sweep "
                          "would refuse them; --restart-changed deletes and trains them again", soft_wrap=True)
        return

    def waiting(name: str, holder: dict[str, Any]) -> None:
        err_console.print(f"waiting for {name}'s trainer (PID {holder.get('pid')}), left by a sweep that ended, to "
                          "write its checkpoint and stop")

    with _signals_as_interrupt(), sweeps.SweepProgress(sweep, root, executor.slots, err_console) as progress:
        outcome = sweeps.run_sweep(sweep, root, executor, progress, restart_changed=args.restart_changed,
                                   on_wait=waiting)
    if outcome.restarted:
        console.print(f"restarted {len(outcome.restarted)} run(s) whose settings changed: "
                      f"{', '.join(outcome.restarted)}", soft_wrap=True)
    console.print(f"sweep {sweep.name}: {len(outcome.done)} done, {len(outcome.skipped)} skipped (finished "
                  f"earlier), {len(outcome.failed)} failed in {outcome.seconds:.0f} s; folder {root}")
    if outcome.failed:
        for name, error in outcome.failed.items():
            err_console.print(f"[red]failed[/red] {escape(name)}: {escape(error)}")
        raise SweepFailed(f"{len(outcome.failed)} run(s) failed (errors in their sweep_run.json); run the same "
                          "command again to retry them")
    console.print(f"next: cadence report {root}   |   cadence dashboard {root}")


#: the signal that stopped the command (SIGTERM, SIGHUP), for its exit status 128 + N
_stopped_by: list[int] = []


@contextlib.contextmanager
def _signals_as_interrupt() -> Any:
    """SIGTERM and SIGHUP (a closed terminal, a scheduler's stop) stop a sweep as Ctrl-C does: each running run
    writes a checkpoint before the sweep exits (with 128 + the signal's number)."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        _stopped_by.append(signum)
        raise KeyboardInterrupt

    names = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {s: signal.signal(s, handler) for s in names if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed (the others finished)."""


def cmd_report(args: argparse.Namespace) -> None:
    from cadence.report import write_report

    path = write_report(args.sweep_dir, args.out, tuple(args.compare) if args.compare else None,
                        n_resamples=args.resamples)
    console.print(f"wrote {path}")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": cmd_train, "eval": cmd_eval_fas, "collect": cmd_collect, "config": cmd_config, "plot": cmd_plot,
    "dashboard": cmd_dashboard, "sweep": cmd_sweep, "report": cmd_report, "task-gap": cmd_task_gap,
}


def _user_error(e: Exception) -> bool:
    """An error that tells the user what to change: printed in one line, without a traceback."""
    if isinstance(e, (ValueError, FileNotFoundError)):  # ConfigError and DatasetError are ValueErrors
        return True
    checkpoint = sys.modules.get("cadence.checkpoint")  # not imported: none of its errors can have been raised
    return checkpoint is not None and isinstance(e, checkpoint.CheckpointError)


def _stdout_gone() -> int:
    """The reader of stdout has left (``cadence config sac | head``): stop quietly, as Unix tools do."""
    with contextlib.suppress(OSError, ValueError):  # later writes (the flush at exit) go nowhere, not failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what the shell reports for a tool stopped by a closed pipe


def main(argv: list[str] | None = None) -> int:
    _scan_env(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt as e:  # a run's RunInterrupted names its checkpoint and the signal
        said = str(e) or "interrupted before a checkpoint of the current step was written"
        err_console.print(f"[yellow]stopped:[/yellow] {escape(said)}")
        return _interrupted_status(said)
    except SweepFailed as e:
        err_console.print(f"[red]sweep incomplete:[/red] {escape(str(e))}")
        return 1
    except Exception as e:
        if _run_failure(e):  # a diverged loss or a failing hook: the run stopped, its last checkpoint is kept
            err_console.print(f"[red]run stopped:[/red] {escape(str(e))}")
            return 1
        if not _user_error(e):
            raise
        err_console.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    return 0


def _interrupted_status(message: str) -> int:
    """128 + the stopping signal's number, as shells report a process a signal ended: 130 for Ctrl-C (SIGINT),
    143 for SIGTERM (a run's RunInterrupted names it first), 129 for SIGHUP."""
    import signal

    if _stopped_by:
        return 128 + _stopped_by[-1]
    return 128 + int(signal.SIGTERM) if message.startswith("SIGTERM") else 130


def _run_failure(e: Exception) -> bool:
    loops = sys.modules.get("cadence.loops")
    return loops is not None and isinstance(e, (loops.TrainingDiverged, loops.HookError))


if __name__ == "__main__":
    sys.exit(main())
