"""ReplayBuffer: preallocated torch storage, written circularly (docs/ARCHITECTURE.md, "Replay and data")."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cadence.io import atomic_torch_save

Batch = dict[str, torch.Tensor]


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


class ReplayBuffer:
    """Circular transition storage on one device.

    Fields: ``obs, action, reward, next_obs, terminated, truncated, task_id, episode_start``.

    Args:
        capacity: maximum number of transitions; the oldest are overwritten first.
        obs_shape: shape of one observation.
        act_shape: shape of one action.
        device: where the storage lives and where samples are returned.
    """

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "task_id", "episode_start")

    def __init__(
        self,
        capacity: int,
        obs_shape: int | Sequence[int],
        act_shape: int | Sequence[int],
        device: str | torch.device = "cpu",
    ):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs_shape = _as_shape(obs_shape)
        self.act_shape = _as_shape(act_shape)
        self.device = torch.device(device)
        # One row block per transition: [obs | action | reward | next_obs | flags | task_id], 4-byte columns.
        # Sampling gathers whole rows once (few cache misses per transition, one indexing op per batch);
        # the fields are typed views into the block. Flags are bytes inside one float column, task_id the bits
        # of another, so storage is payload + 8 bytes per transition.
        obs_n, act_n = int(np.prod(self.obs_shape)), int(np.prod(self.act_shape))
        self._widths = [obs_n, act_n, 1, obs_n, 1, 1]  # obs, action, reward, next_obs, flags, task_id
        self.row_size = sum(self._widths)
        self.block = torch.zeros((self.capacity, self.row_size), dtype=torch.float32, device=self.device)
        self.storage: dict[str, torch.Tensor] = self._fields(self.block)
        self.pos = 0  # next write index
        self.size = 0
        self._stages: dict[int, tuple[torch.Tensor, dict[str, np.ndarray]]] = {}

    def __len__(self) -> int:
        return self.size

    def _fields(self, block: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of every field into ``block`` of shape ``[..., row_size]`` (storage, or a sampled batch)."""
        lead = block.shape[:-1]
        obs, action, reward, next_obs, flags, task_id = block.split(self._widths, dim=-1)  # one op, six views
        # the flag column's 4 bytes: terminated, truncated, episode_start, unused
        terminated, truncated, episode_start, _ = flags.view(torch.uint8).view(torch.bool).unbind(-1)
        if len(self.obs_shape) > 1:
            obs, next_obs = obs.view(*lead, *self.obs_shape), next_obs.view(*lead, *self.obs_shape)
        if len(self.act_shape) != 1:
            action = action.view(*lead, *self.act_shape)
        return {"obs": obs, "action": action, "reward": reward.squeeze(-1), "next_obs": next_obs,
                "terminated": terminated, "truncated": truncated, "task_id": task_id.view(torch.int32).squeeze(-1),
                "episode_start": episode_start}

    def add(
        self,
        obs: Any,
        action: Any,
        reward: Any,
        next_obs: Any,
        terminated: Any,
        truncated: Any = False,
        task_id: Any = 0,
        episode_start: Any = False,
    ) -> None:
        """Append one transition, or a batch whose leading dimension is the batch."""
        values = dict(
            obs=obs, action=action, reward=reward, next_obs=next_obs, terminated=terminated,
            truncated=truncated, task_id=task_id, episode_start=episode_start,
        )
        obs_shape = tuple(np.shape(obs))
        n = 1 if obs_shape == self.obs_shape else obs_shape[0]
        if obs_shape[len(obs_shape) - len(self.obs_shape):] != self.obs_shape:
            raise ValueError(f"obs must have shape {self.obs_shape} or [n, *{self.obs_shape}], got {obs_shape}")
        # a batch larger than the buffer keeps its last `capacity` rows, as adding them one by one would
        keep = min(n, self.capacity)
        # whole rows are assembled on the host and written with one copy (on a GPU: one transfer, not one per field)
        rows, fields = self._staging(keep)
        for key, value in values.items():
            v = np.asarray(value)
            fields[key][...] = v.reshape(n, *fields[key].shape[1:])[n - keep:] if v.size > 1 or n == 1 else v
        start = (self.pos + n - keep) % self.capacity
        first = min(keep, self.capacity - start)
        self.block[start:start + first].copy_(rows[:first])
        if first < keep:  # wrapped around the end
            self.block[: keep - first].copy_(rows[first:])
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _staging(self, n: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Host rows ``[n, row_size]`` and NumPy views of their fields; small ones are kept for reuse (a copy from
        pageable memory has read its source when it returns)."""
        if n in self._stages:
            return self._stages[n]
        rows = torch.zeros((n, self.row_size), dtype=torch.float32)
        stage = rows, {k: v.numpy() for k, v in self._fields(rows).items()}
        if n <= 64:
            self._stages[n] = stage
        return stage

    def sample(self, n: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``n`` transitions uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        idx = torch.randint(0, self.size, (n,), device=self.device, generator=generator)
        return self._fields(self.block.index_select(0, idx))  # index_select: far faster than block[idx] on CPU

    def sample_sequences(self, n: int, length: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``n`` windows of ``length`` consecutive transitions that never cross an episode end.

        A window is cut where an episode ends (terminated or truncated), where a new episode
        starts, where a row's obs is not the previous row's next_obs (rows of several worlds
        interleaved by a batched loop), or at the newest transition. Positions past the cut repeat
        the window's last valid transition and have ``mask == 0``, so no data from another episode leaks in.

        Returns:
            Every field with shape ``[n, length, ...]``, plus ``mask`` of shape ``[n, length]``.
        """
        if length < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        start = torch.randint(0, self.size, (n,), device=self.device, generator=generator)
        offsets = torch.arange(length, device=self.device)
        raw = (start[:, None] + offsets) % self.capacity
        # transitions from start up to the newest one, before wrapping into the oldest data
        available = (self.pos - start - 1) % self.capacity + 1 if self.size == self.capacity else self.size - start
        window = self.block.index_select(0, raw.reshape(-1)).view(n, length, self.row_size)
        rows = self._fields(window)
        ended = rows["terminated"] | rows["truncated"]
        discontinuous = (rows["obs"][:, 1:] != rows["next_obs"][:, :-1]).flatten(2).any(dim=-1)
        breaks = torch.zeros_like(ended)
        breaks[:, 1:] = ended[:, :-1] | rows["episode_start"][:, 1:] | discontinuous
        breaks |= offsets[None, :] >= available[:, None]
        mask = torch.cumsum(breaks.to(torch.int64), dim=1) == 0
        valid = mask.sum(dim=1)
        # positions past the cut repeat the last valid row: taken from the window already gathered
        last = torch.minimum(offsets[None, :], valid[:, None] - 1)
        batch = self._fields(window.gather(1, last[..., None].expand(-1, -1, self.row_size)))
        batch["mask"] = mask.to(torch.float32)
        return batch

    # --- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        filled = min(self.capacity, self.size)
        return {
            "capacity": self.capacity,
            "obs_shape": self.obs_shape,
            "act_shape": self.act_shape,
            "pos": self.pos,
            "size": self.size,
            "storage": {k: v[:filled].cpu().clone() for k, v in self.storage.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["capacity"], tuple(state["obs_shape"]), tuple(state["act_shape"])) != (
            self.capacity, self.obs_shape, self.act_shape,
        ):
            raise ValueError(
                f"buffer state has capacity/obs/act {state['capacity']}/{state['obs_shape']}/{state['act_shape']}, "
                f"this buffer has {self.capacity}/{self.obs_shape}/{self.act_shape}"
            )
        for k, v in state["storage"].items():
            self.storage[k][: len(v)] = v.to(self.device)
        self.pos, self.size = int(state["pos"]), int(state["size"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the buffer atomically."""
        atomic_torch_save(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> ReplayBuffer:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and numbers only: runs no code
        buf = cls(state["capacity"], state["obs_shape"], state["act_shape"], device=device)
        buf.load_state_dict(state)
        return buf
