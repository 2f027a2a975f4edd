"""The first draws of many freshly seeded NumPy generators at once, bit for bit NumPy's.

A batched reset gives every world the state ``env.reset(seed=s)`` gives, so every world needs the first draws of
its own ``gymnasium.utils.seeding.np_random(s)`` generator: NumPy's ``SeedSequence(s)`` feeding a ``PCG64``. NumPy
builds such a generator one at a time (~6 us, most of a reset's host time), and a GPU batch resets hundreds of worlds
per step. :func:`first_doubles` runs the same integer algorithms on arrays of seeds instead: ``SeedSequence``'s hash
mixing (pool of 4 words), ``PCG64``'s seeding and 128-bit LCG step with its XSL-RR output, and ``Generator.random``'s
53-bit doubles. Only what those draws need is here; ``tests/test_batched.py`` holds it to NumPy's own generators.
"""

from __future__ import annotations

import numpy as np

_M32 = np.uint64(0xFFFFFFFF)
_XSHIFT = np.uint64(16)
# SeedSequence's hash constants
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
_POOL = 4
# PCG64's 128-bit multiplier, high and low halves
_MULT_HI, _MULT_LO = np.uint64(2549297995355413924), np.uint64(4865540595714422341)


def _hash_constants(start: int, mult: int, count: int) -> list[np.uint64]:
    """The multipliers a hash uses in turn: they depend on the call order only, never on the data."""
    out, h = [], start
    for _ in range(count):
        out.append(np.uint64(h))
        h = (h * mult) & 0xFFFFFFFF
    return out


def _hashmix(value: np.ndarray, const: np.uint64, mult: int) -> np.ndarray:
    """SeedSequence's ``hashmix`` of 32-bit words held in uint64: xor ``const``, multiply by its successor."""
    value = value ^ const
    value = (value * np.uint64((int(const) * mult) & 0xFFFFFFFF)) & _M32
    return value ^ (value >> _XSHIFT)


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SeedSequence's ``mix`` of two 32-bit words held in uint64."""
    result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _M32  # uint64 wraps; the low 32 bits are uint32's
    return result ^ (result >> _XSHIFT)


def _seed_sequence_state(seeds: np.ndarray) -> list[np.ndarray]:
    """``SeedSequence(seed).generate_state(8, uint32)`` for every seed below 2**64: 8 arrays of 32-bit words."""
    words = [seeds & _M32, seeds >> np.uint64(32)]  # the seed's uint32 words; a seed < 2**32 has one, padded by 0
    consts = iter(_hash_constants(_INIT_A, _MULT_A, _POOL + _POOL * (_POOL - 1)))
    pool = [_hashmix(words[i] if i < len(words) else np.zeros_like(seeds), next(consts), _MULT_A)
            for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashmix(pool[src], next(consts), _MULT_A))
    out = []
    for i, const in enumerate(_hash_constants(_INIT_B, _MULT_B, 8)):
        out.append(_hashmix(pool[i % _POOL], const, _MULT_B))
    return out


def _mul_hi_lo(a: np.ndarray, b: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The full 128-bit product of 64-bit ``a`` and ``b``, as its high and low 64 bits."""
    a0, a1, b0, b1 = a & _M32, a >> np.uint64(32), b & _M32, b >> np.uint64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    high = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return high, (mid << np.uint64(32)) | (p00 & _M32)


def _lcg_step(hi: np.ndarray, lo: np.ndarray, inc_hi: np.ndarray,
              inc_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``state * MULT + inc`` modulo 2**128."""
    carry_hi, new_lo = _mul_hi_lo(lo, _MULT_LO)
    new_hi = carry_hi + lo * _MULT_HI + hi * _MULT_LO
    out_lo = new_lo + inc_lo
    return new_hi + inc_hi + (out_lo < new_lo).astype(np.uint64), out_lo


def first_doubles(seeds: np.ndarray | list[int], count: int) -> np.ndarray:
    """``[m, count]``: the first ``count`` doubles of ``gymnasium.utils.seeding.np_random(seed)[0].random()`` for every
    seed (what ``Generator.uniform(low, high, size)`` scales as ``low + (high - low) * u``), bit for bit."""
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.dtype.kind not in "iu" or (seeds < 0).any():
        raise ValueError("seeds must be a 1-d array of non-negative integers below 2**64")
    with np.errstate(over="ignore"):
        w = _seed_sequence_state(seeds.astype(np.uint64))
        # generate_state(4, uint64): little-endian pairs; PCG64 seeds its state with the first two, its stream with
        # the last two (each pair high word first)
        s_hi, s_lo, q_hi, q_lo = (w[2 * k] | (w[2 * k + 1] << np.uint64(32)) for k in range(4))
        inc_hi = (q_hi << np.uint64(1)) | (q_lo >> np.uint64(63))
        inc_lo = (q_lo << np.uint64(1)) | np.uint64(1)
        hi, lo = inc_hi, inc_lo  # state 0, one step: the increment
        lo = lo + s_lo
        hi = hi + s_hi + (lo < s_lo).astype(np.uint64)
        hi, lo = _lcg_step(hi, lo, inc_hi, inc_lo)
        out = np.empty((len(seeds), count))
        for k in range(count):
            hi, lo = _lcg_step(hi, lo, inc_hi, inc_lo)
            x, rot = hi ^ lo, hi >> np.uint64(58)
            word = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
            out[:, k] = (word >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return out
