"""Teachers by name: :data:`TEACHERS` over a task family's parameter box (:func:`make_teacher`), and
:data:`LAYOUT_TEACHERS` over maze layouts (:func:`make_layout_teacher`); their settings as a config gives them
(:func:`teacher_settings`, :func:`check_teacher_settings`)."""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cadence.config import ConfigError, coerce
from cadence.curricula.alp_gmm import ALPGMMTeacher
from cadence.curricula.base import ArrayLike, Teacher
from cadence.curricula.clutr import CLUTRTeacher
from cadence.curricula.covar_gmm import CovarGMMTeacher
from cadence.curricula.domain_randomisation import DomainRandomisationTeacher
from cadence.curricula.random_teacher import RandomTeacher
from cadence.curricula.riac import RIACTeacher
from cadence.curricula.rvae import LayoutRVAE, cached_rvae, load_rvae
from cadence.envs.maze_tasks import LayoutFamily

TEACHERS: dict[str, type[Teacher]] = {
    "random": RandomTeacher,
    "alp-gmm": ALPGMMTeacher,
    "riac": RIACTeacher,
    "covar-gmm": CovarGMMTeacher,
}


def make_teacher(name: str, low: ArrayLike, high: ArrayLike, seed: int = 0,
                 reward_range: Sequence[float] | None = None, **kwargs: Any) -> Teacher:
    """Build the teacher registered as ``name`` over the box ``[low, high]``.

    :param name: one of :data:`TEACHERS` (``random``, ``alp-gmm``, ``riac``, ``covar-gmm``).
    :param low: lower bounds of the task parameters (e.g. a task family's ``param_space.low``).
    :param high: upper bounds of the task parameters.
    :param seed: seed of the teacher's generator.
    :param reward_range: ``(r_min, r_max)`` of episode returns; required by all but ``random``.
    :param kwargs: the teacher's own settings (e.g. ``fit_every`` for ``alp-gmm``; see :func:`teacher_settings`).
    :raises ValueError: for an unknown name (listing the valid ones) or invalid settings.
    """
    if name in LAYOUT_TEACHERS:
        raise ValueError(f"the {name} teacher proposes maze layouts, not parameters in a box: use it on a layout env "
                         "(PointMazeLayout-v0) through make_layout_teacher")
    check_name(name, TEACHERS)
    return TEACHERS[name](low, high, seed=seed, reward_range=reward_range, **kwargs)


#: teachers over maze layouts (a :class:`~cadence.envs.maze_tasks.LayoutFamily`): domain randomisation and CLUTR
LAYOUT_TEACHERS: tuple[str, ...] = ("dr", "clutr")
_LAYOUT_CLASSES: dict[str, type[Teacher]] = {"dr": DomainRandomisationTeacher, "clutr": CLUTRTeacher}


def check_name(name: str, valid_names: Any) -> None:
    """``ValueError`` for a name not in ``valid_names``, listing them and the close matches."""
    if name not in valid_names:
        valid = sorted(valid_names)
        close = difflib.get_close_matches(str(name).lower(), valid, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown teacher {name!r}: valid names are {', '.join(valid)}{hint}")


def make_layout_teacher(name: str, family: LayoutFamily, seed: int = 0, rvae: str | Path | LayoutRVAE = "",
                        **kwargs: Any) -> Teacher:
    """Build the layout teacher ``name`` (``dr`` or ``clutr``) for ``family``'s mazes.

    :param rvae: ``clutr`` only: a model, or a checkpoint from :func:`~cadence.curricula.rvae.save_rvae`; by
        default the CPU-sized RVAE for the family's shape, trained and cached on first use (see :func:`layout_rvae`).
    :param kwargs: the teacher's own settings.
    """
    check_name(name, LAYOUT_TEACHERS)
    if name == "dr":
        return DomainRandomisationTeacher(family.shape, family.max_obstacles, seed=seed, **kwargs)
    return CLUTRTeacher(layout_rvae(family, rvae), seed=seed, reward_range=(0.0, 1.0), **kwargs)


def layout_rvae(family: LayoutFamily, rvae: str | Path | LayoutRVAE = "") -> LayoutRVAE:
    """The RVAE a CLUTR teacher of ``family`` decodes with: ``rvae`` itself, the checkpoint at that path, or (empty)
    the cached CPU-sized one; ``ValueError`` if it encodes layouts of another shape."""
    if isinstance(rvae, LayoutRVAE):
        model = rvae
    else:
        model = read_rvae(rvae) if rvae else cached_rvae(family.shape, family.max_obstacles)
    if tuple(model.codec.shape) != tuple(family.shape):
        raise ValueError(f"the RVAE encodes {model.codec.shape} layouts, {family.name}'s are {family.shape}")
    return model


def read_rvae(path: str | Path) -> LayoutRVAE:
    """:func:`~cadence.curricula.rvae.load_rvae`, where a file that is not an RVAE checkpoint (text, an empty file,
    another model) raises a ``ValueError`` naming it and the reason, not whatever torch's unpickler hit first."""
    try:
        return load_rvae(path)
    except (OSError, ValueError):  # a missing file, or one load_rvae already recognised as not an RVAE
        raise
    except Exception as err:  # torch.load on arbitrary bytes fails with IndexError, KeyError, EOFError, ...
        raise ValueError(f"{path} is not an RVAE checkpoint written by cadence.curricula.save_rvae: reading it "
                         f"failed with {_first_sentence(err)}") from err


def _first_sentence(err: Exception) -> str:
    """``TypeName: first sentence of the message`` (torch's can run to a page of advice that does not apply)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". ")[0][:100]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --- settings from a config -------------------------------------------------------------------------------------
#: constructor arguments a training run fills itself, and from what: never teacher settings
GIVEN_BY_RUN: dict[str, str] = {
    "low": "the env's task space", "high": "the env's task space", "seed": "train.seed",
    "reward_range": "train.teacher_reward_range", "rvae": "train.teacher_rvae", "shape": "the maze env",
    "max_obstacles": "the maze env",
}


def teacher_class(name: str) -> type[Teacher]:
    """The class of teacher ``name``, over a box or over layouts; ``ValueError`` (with close matches) if unknown."""
    check_name(name, [*TEACHERS, *LAYOUT_TEACHERS])
    return TEACHERS[name] if name in TEACHERS else _LAYOUT_CLASSES[name]


def teacher_settings(name: str) -> dict[str, Any]:
    """Teacher ``name``'s settings with their defaults: its constructor's arguments beyond those a run fills
    (:data:`GIVEN_BY_RUN`), e.g. ``fit_every``, ``random_share`` and ``criterion`` for ``alp-gmm``."""
    params = inspect.signature(teacher_class(name).__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "self" and p.name not in GIVEN_BY_RUN and p.default is not inspect.Parameter.empty}


def check_teacher_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with each value converted to the type teacher ``name``'s constructor declares (sequences as
    lists); :class:`~cadence.config.ConfigError` naming ``teacher_settings.<key>`` for a key that is not a setting
    (with close matches) or a value of the wrong type. The values' ranges are the constructor's to check."""
    valid = teacher_settings(name)
    hints = typing.get_type_hints(teacher_class(name).__init__)
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        where = f"teacher_settings.{key}"
        if key in GIVEN_BY_RUN:
            raise ConfigError(f"invalid config value {where}={value!r}: not a setting; {GIVEN_BY_RUN[key]} gives it")
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"invalid config value {where}={value!r}: not a setting of the {name} teacher{hint}; "
                              f"its settings: {', '.join(valid) or 'none'}")
        value = coerce(value, _config_type(hints[key]), where)
        checked[key] = list(value) if isinstance(value, tuple) else value
    return checked


def _config_type(hint: Any) -> Any:
    """A constructor's annotation as a config field's: ``Sequence[X]`` is read like ``tuple[X, ...]``."""
    if typing.get_origin(hint) is collections.abc.Sequence:
        return tuple[typing.get_args(hint)[0], ...]  # type: ignore[valid-type]
    return hint
