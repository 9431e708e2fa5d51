import pytest
import torch

from molabench.data import build_data
from molabench.data.shapes import ATTRIBUTES, DOMAINS, render
from molabench.errors import ConfigError


def test_tasks_variant_layout(tiny_shapes):
    assert tiny_shapes.setting == "multi_input"
    assert [t.name for t in tiny_shapes.tasks] == list(ATTRIBUTES)
    assert tiny_shapes.split_sizes() == {"train": [24] * 4, "val": [8] * 4, "test": [8] * 4}
    train = tiny_shapes.splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 16, 16)
    for t, spec in enumerate(tiny_shapes.tasks):
        labels = train.targets[train.tasks == t]
        assert int(labels.min()) >= 0 and int(labels.max()) < spec.num_classes


def test_domains_variant_shares_the_label_set(tiny_domains):
    assert tiny_domains.setting == "domain"
    assert [t.name for t in tiny_domains.tasks] == list(DOMAINS)
    assert {t.num_classes for t in tiny_domains.tasks} == {6}


def test_deterministic_from_the_data_seed():
    a = build_data({"name": "shapes", "image_size": 16, "n_train": 5, "n_val": 2, "n_test": 2})
    b = build_data({"name": "shapes", "image_size": 16, "n_train": 5, "n_val": 2, "n_test": 2})
    c = build_data({"name": "shapes", "image_size": 16, "n_train": 5, "n_val": 2, "n_test": 2, "data_seed": 1})
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert not torch.equal(a.splits["train"].images, c.splits["train"].images)


def test_labels_are_visible_in_the_pixels():
    # Objects of the "large" size cover more pixels than "small" ones; quadrant moves the mass.
    gen = torch.Generator().manual_seed(0)
    images, labels = render(400, 32, gen)
    pixels = images.float()
    border = torch.cat([pixels[:, :, 0, :], pixels[:, :, -1, :]], dim=2).median(dim=2).values  # (N, 3)
    mask = (pixels - border[:, :, None, None]).abs().sum(dim=1) > 60  # object pixels
    area = mask.flatten(1).sum(1).float()
    assert area[labels["size"] == 2].mean() > 2 * area[labels["size"] == 0].mean()
    cols = torch.arange(32).float()
    mass_x = (mask.float().sum(1) * cols).sum(1) / mask.float().sum((1, 2)).clamp(min=1)
    right = labels["quadrant"] % 2 == 1
    assert mass_x[right].mean() > 16 > mass_x[~right].mean()


def test_task_subset_and_errors():
    data = build_data({"name": "shapes", "tasks": ["colour", "size"], "image_size": 16, "n_train": 4, "n_val": 2, "n_test": 2})
    assert [t.name for t in data.tasks] == ["colour", "size"]
    with pytest.raises(ConfigError, match="unknown shapes tasks"):
        build_data({"name": "shapes", "tasks": ["texture"]})
    with pytest.raises(ConfigError, match="variant"):
        build_data({"name": "shapes", "variant": "nope"})
