import io
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*Box observation space.*")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


def roundtrip(state):
    """``state`` through ``torch.save`` and a ``weights_only`` load, as a checkpoint carries it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)
