from __future__ import annotations

import pytest
import torch

from molabench.data import build_data
from molabench.data.base import MultiTaskData

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_shapes() -> MultiTaskData:
    """The built-in data at its smallest: 4 tasks x 24 train images of 16x16."""
    return build_data({"name": "shapes", "image_size": 16, "n_train": 24, "n_val": 8, "n_test": 8})


@pytest.fixture(scope="session")
def tiny_domains() -> MultiTaskData:
    return build_data({"name": "shapes", "variant": "domains", "image_size": 16, "n_train": 24, "n_val": 8, "n_test": 8})
