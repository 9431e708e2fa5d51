from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from molabench.data import build_data
from molabench.data.base import MultiTaskData

torch.set_num_threads(1)

# Property tests draw the same examples on every run, so CI is reproducible; explore new ones with
# HYPOTHESIS_PROFILE=explore (random draws, more examples).
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=400, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def tiny_shapes() -> MultiTaskData:
    """The built-in data at its smallest: 4 tasks x 24 train images of 16x16."""
    return build_data({"name": "shapes", "image_size": 16, "n_train": 24, "n_val": 8, "n_test": 8})


@pytest.fixture(scope="session")
def tiny_domains() -> MultiTaskData:
    return build_data({"name": "shapes", "variant": "domains", "image_size": 16, "n_train": 24, "n_val": 8, "n_test": 8})
