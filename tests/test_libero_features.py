"""LIBERO's flat state features: every quaternion gets one sign (no LIBERO package needed; the real-env check is in
tests/test_libero.py)."""

import itertools

import numpy as np
import pytest

from cadence.envs.libero import (
    EEF_QUAT,
    OBJECT_QUAT,
    OBJECT_SIZE,
    PROPRIO_SIZE,
    RELATIVE_QUAT,
    canonical_quaternions,
    hemisphere_sign,
    quat_conjugate,
    quat_multiply,
)

S = np.sqrt(0.5)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_states(rng: np.random.Generator, n: int, slots: int, padded: int = 1) -> np.ndarray:
    """States with random values and random unit quaternions; the last ``padded`` slots are zero padding."""
    states = rng.normal(size=(n, PROPRIO_SIZE + OBJECT_SIZE * slots)).astype(np.float32)
    states[:, EEF_QUAT] = unit(rng, n)
    for k in range(slots):
        base = PROPRIO_SIZE + k * OBJECT_SIZE
        if k >= slots - padded:
            states[:, base:base + OBJECT_SIZE] = 0
            continue
        states[:, base + OBJECT_QUAT.start:base + OBJECT_QUAT.stop] = unit(rng, n)
        states[:, base + RELATIVE_QUAT.start:base + RELATIVE_QUAT.stop] = unit(rng, n)
    return states


def quaternion_blocks(slots: int) -> list[slice]:
    blocks = [EEF_QUAT]
    for k in range(slots):
        base = PROPRIO_SIZE + k * OBJECT_SIZE
        blocks += [slice(base + OBJECT_QUAT.start, base + OBJECT_QUAT.stop),
                   slice(base + RELATIVE_QUAT.start, base + RELATIVE_QUAT.stop)]
    return blocks


def test_a_quaternion_and_its_negation_give_the_same_features():
    rng = np.random.default_rng(0)
    slots = 3
    states = random_states(rng, 64, slots)
    blocks = quaternion_blocks(slots)
    expected = canonical_quaternions(states)
    for flips in itertools.product([False, True], repeat=len(blocks)):  # every subset of blocks negated
        flipped = states.copy()
        for block, flip in zip(blocks, flips):
            if flip:
                flipped[:, block] *= -1
        np.testing.assert_array_equal(canonical_quaternions(flipped), expected)


def test_only_signs_change_and_it_is_idempotent():
    rng = np.random.default_rng(1)
    states = random_states(rng, 32, 4)
    canon = canonical_quaternions(states)
    assert canon.dtype == states.dtype and canon.shape == states.shape
    np.testing.assert_array_equal(np.abs(canon), np.abs(states))
    moved = np.flatnonzero((canon != states).any(axis=0))
    allowed = set().union(*(range(b.start, b.stop) for b in quaternion_blocks(4)))
    assert set(moved.tolist()) <= allowed  # positions, joints, gripper: untouched
    np.testing.assert_array_equal(canonical_quaternions(canon), canon)
    np.testing.assert_array_equal(canonical_quaternions(states[0]), canon[0])  # one state, no batch axis
    assert not canon[:, -OBJECT_SIZE:].any()  # zero padding stays zero


def one_object_state(eef, obj, rel) -> np.ndarray:
    state = np.zeros(PROPRIO_SIZE + OBJECT_SIZE, np.float32)
    state[EEF_QUAT] = eef
    state[PROPRIO_SIZE + OBJECT_QUAT.start:PROPRIO_SIZE + OBJECT_QUAT.stop] = obj
    state[PROPRIO_SIZE + RELATIVE_QUAT.start:PROPRIO_SIZE + RELATIVE_QUAT.stop] = rel
    return state


def test_libero_poses_by_hand():
    """The gripper pointing down (a half turn about x) and a bowl at yaw 90 degrees, LIBERO-Spatial's start: the
    bowl in the gripper's frame is conj(eef) * obj = (-s, s, 0, 0), s = sqrt(1/2). robosuite signs that relative
    quaternion with w >= 0, so a tilt that takes w from +0.01 to -0.01 flips x and y; here both stay put."""
    eef, obj = np.array([-1.0, 0, 0, 0]), np.array([0, 0, -S, -S])  # both with the "wrong" sign
    for w in (0.01, -0.01):
        rel = np.array([-S, S, 0, w]) if w > 0 else np.array([S, -S, 0, -w])  # robosuite's w >= 0 output
        state = canonical_quaternions(one_object_state(eef, obj, rel))
        np.testing.assert_allclose(state[EEF_QUAT], [1, 0, 0, 0])
        np.testing.assert_allclose(state[PROPRIO_SIZE + 3:PROPRIO_SIZE + 7], [0, 0, S, S], rtol=1e-6)
        np.testing.assert_allclose(state[PROPRIO_SIZE + 10:PROPRIO_SIZE + 14], [-S, S, 0, w], rtol=1e-6)


def test_quaternion_helpers():
    i, j, k = np.eye(4)[:3]
    np.testing.assert_array_equal(quat_multiply(i, j), k)  # x, y, z, w order: i j = k
    np.testing.assert_array_equal(quat_multiply(j, i), -k)
    q = unit(np.random.default_rng(2), 5)
    np.testing.assert_allclose(quat_multiply(q, quat_conjugate(q)), np.tile([0, 0, 0, 1.0], (5, 1)), atol=1e-12)
    # ties (q . r = 0) go by the first nonzero component, so q and -q still get opposite signs
    ref = np.array([0, 0, 1.0, 0])
    assert hemisphere_sign(np.array([0, -S, 0, S]), ref) == -1 and hemisphere_sign(np.array([0, S, 0, -S]), ref) == 1
    assert hemisphere_sign(np.zeros(4), ref) == 1


def test_a_state_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"39 \+ 14 \* slots values, got 40"):
        canonical_quaternions(np.zeros(PROPRIO_SIZE + 1))
