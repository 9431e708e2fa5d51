import torch

from molabench.data.loader import BatchLoader


def test_per_task_batches_hold_every_task_equally(tiny_shapes):
    loader = BatchLoader(tiny_shapes, "train", 8, train=True, batching="per_task", seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 96 // 8
    for batch in batches:
        assert torch.bincount(batch.task, minlength=4).tolist() == [2, 2, 2, 2]


def test_mixed_batches_cover_the_split_once_per_epoch(tiny_shapes):
    loader = BatchLoader(tiny_shapes, "train", 8, train=True, batching="mixed", seed=0)
    seen = torch.cat([b.task for b in loader])
    assert torch.bincount(seen, minlength=4).tolist() == [24, 24, 24, 24]


def test_evaluation_order_is_the_split_order_and_complete(tiny_shapes):
    loader = BatchLoader(tiny_shapes, "test", 5, train=False)
    tasks = torch.cat([b.task for b in loader])
    assert torch.equal(tasks, tiny_shapes.splits["test"].tasks)


def test_normalised_and_deterministic(tiny_shapes):
    a = next(iter(BatchLoader(tiny_shapes, "train", 8, train=True, seed=3)))
    b = next(iter(BatchLoader(tiny_shapes, "train", 8, train=True, seed=3)))
    c = next(iter(BatchLoader(tiny_shapes, "train", 8, train=True, seed=4)))
    assert a.x.dtype == torch.float32 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    # (x - 0.5) / 0.25 maps [0, 1] onto [-2, 2]
    assert a.x.min() >= -2.0 and a.x.max() <= 2.0
