import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*Box observation space.*")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield
