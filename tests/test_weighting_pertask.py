"""The one-backward per-task gradients (sample_groups) against the exact ones."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from tests.test_weighting_backward import toy

from molabench.errors import ConfigError
from molabench.weighting.pertask import gramian, task_gradients


def per_task(model, x, task, y, mode):
    fw = model(x, task)
    losses = torch.stack([F.cross_entropy(o, y[g, t]) for t, (o, g) in enumerate(zip(fw.outputs, fw.groups, strict=True))])
    return task_gradients(losses, list(model.shared_parameters()), list(model.task_specific_parameters()), fw.groups, mode)


def test_sample_groups_equal_exact_without_batch_coupling() -> None:
    model, x, task, y = toy("multi_input")
    model.eval()  # BatchNorm on running statistics: samples do not interact
    exact, fast = per_task(model, x, task, y, "exact"), per_task(model, x, task, y, "sample_groups")
    assert fast.mode == "sample_groups" and exact.mode == "exact"
    assert torch.allclose(exact.G, fast.G, atol=1e-6)
    for a, b in zip(exact.others, fast.others, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)
    # Gramian path on interleaved (non-contiguous) groups
    fw = model(x, task)
    losses = torch.stack([F.cross_entropy(o, y[g, t]) for t, (o, g) in enumerate(zip(fw.outputs, fw.groups, strict=True))])
    shared = list(model.shared_parameters())
    gram = task_gradients(losses, shared, [], fw.groups, "auto", gramian=True)
    assert gram.G is None and torch.allclose(gram.M, exact.G.double() @ exact.G.double().T, rtol=1e-5, atol=1e-9)
    coef = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    d = torch.cat([g.reshape(-1) for g in gram.combine(coef)])
    assert torch.allclose(d, coef.float() @ exact.G, atol=1e-6)


def test_sample_groups_sum_to_the_ew_gradient_with_train_batchnorm() -> None:
    model, x, task, y = toy("multi_input")
    exact, fast = per_task(model, x, task, y, "exact"), per_task(model, x, task, y, "sample_groups")
    assert torch.allclose(exact.G.sum(0), fast.G.sum(0), atol=1e-6)
    # parameters after the last BatchNorm-free path (the final Linear/LayerNorm) are exact per task
    n_tail = sum(p.numel() for p in model.encoder.net[7:].parameters())
    assert torch.allclose(exact.G[:, -n_tail:], fast.G[:, -n_tail:], atol=1e-6)


def test_auto_falls_back_to_exact_when_groups_overlap() -> None:
    model, x, task, y = toy("single_input")
    assert per_task(model, x, task, y, "auto").mode == "exact"
    with pytest.raises(ConfigError, match="overlap"):
        per_task(model, x, task, y, "sample_groups")


def test_gramian_matches_matmul_in_float64() -> None:
    # The typical rounding of a float32 dot product over one chunk: sqrt(chunk) * u * |g_i| |g_j|.
    # Measured: 0.09 of it here and 0.1 on CI's BLAS (where an older 1e-6-of-diagonal bound failed).
    G = torch.randn(4, 300_001, generator=torch.Generator().manual_seed(0))
    exact = G.double() @ G.double().T
    norms = exact.diagonal().sqrt()
    bound = (1 << 16) ** 0.5 * 2.0**-24 * torch.outer(norms, norms)
    M = gramian(G)
    assert ((M - exact).abs() <= bound).all()
    assert torch.equal(M, M.T)


# ------------------------------------------------ per-task BatchNorm: exact in one backward

T3 = 3
LAYOUTS = {
    "mixed": [4, 4, 4],  # shuffled, sorted by the step
    "per_task": [4, 4, 4],  # already sorted (trainer.batching=per_task)
    "unequal": [2, 7, 3],
    "absent": [6, 0, 6],
}
ARCHS = {
    "hps": {},
    "mola_grad": {"rank": 2},
    "mola_router": {"rank": 2, "router": "light"},
    "mola_router[authors]": {"rank": 2, "router": "authors"},  # the ResNet-20 router (its own BatchNorms)
}


def _algorithm(name: str, bn_stats: str = "per_task", setting: str = "multi_input", small: bool = False):
    """``name`` on torchvision's ResNet-18 (``small``: one BasicBlock per stage) with a PCGrad weighting."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from molabench.architectures import ARCHITECTURES
    from molabench.architectures import load_all as load_architectures
    from molabench.data.base import TaskSpec
    from molabench.engine.algorithm import MultiTaskAlgorithm
    from molabench.models.backbones import ResNetFeatures, build_backbone
    from molabench.weighting import build

    load_architectures()
    torch.manual_seed(0)
    tasks = [TaskSpec(f"t{i}", 3 + i) for i in range(T3)]
    backbone = (lambda: ResNetFeatures(ResNet(BasicBlock, [1, 1, 1, 1]), 3, False)) if small else (lambda: build_backbone("resnet18"))
    arch = ARCHITECTURES.build(name.split("[")[0], tasks=tasks, setting=setting, backbone=backbone, **ARCHS[name])
    if name != "hps":
        with torch.no_grad():
            for p in arch.adapter_parameters():
                p.normal_(0, 0.05)
    return MultiTaskAlgorithm(arch, build("pcgrad"), {}, bn_stats)


@functools.cache
def _cached_algorithm(name: str):
    return _algorithm(name)  # train-mode forwards only: the state they change (running statistics) is never read


def _batch(layout: str):
    from molabench.data.base import Batch

    g = torch.Generator().manual_seed(5)
    task = torch.repeat_interleave(torch.arange(T3), torch.tensor(LAYOUTS[layout]))
    if layout == "mixed":
        task = task[torch.randperm(task.numel(), generator=g)]
    x = torch.randn(task.numel(), 3, 16, 16, generator=g)
    y = torch.stack([torch.randint(0, 3, (task.numel(),), generator=g) for _ in range(T3)], 1).gather(1, task[:, None])[:, 0]
    return Batch(x, y, task)


def _forward(algorithm, batch):
    """The forward of ``MultiTaskAlgorithm.update``: sorted by task, per-task statistics, task losses."""
    from molabench.engine.algorithm import _take
    from molabench.models.task_norm import sort_by_task

    algorithm.train()
    order = sort_by_task(batch.task)
    batch = batch if order is None else _take(batch, order)
    with algorithm.task_norm.scope(batch.task if algorithm.task_norm_layers else None):
        fwd = algorithm.arch(batch.x, batch.task)
    losses, present = algorithm.task_losses(fwd, batch)
    idx = torch.nonzero(present).flatten()
    return fwd, losses[idx], [fwd.groups[int(t)] for t in idx], idx, batch


def _flat(grads, params):
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(ARCHS))
def test_per_task_bn_makes_one_backward_gradients_exact(name: str, layout: str) -> None:
    algorithm = _cached_algorithm(name)
    assert algorithm.task_norm_layers > 0
    arch = algorithm.arch
    shared, others = list(arch.shared_parameters()), list(arch.task_specific_parameters())
    batch = _batch(layout)
    _, losses, groups, _, _ = _forward(algorithm, batch)
    reference = torch.stack([
        _flat(torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True), shared) for t in range(len(groups))
    ])
    scale = float(reference.abs().max())
    tg = task_gradients(losses, shared, others, groups, "auto", retain_graph=True)
    assert tg.exact
    assert tg.mode == "sample_groups"  # one backward, and exact (MoLA-Router: its adapters through shape-op chains)
    torch.testing.assert_close(tg.G, reference, rtol=1e-4, atol=1e-4 * scale)
    fast = task_gradients(losses, shared, others, groups, "auto", gramian=True)
    coef = torch.linspace(-1, 2, len(groups), dtype=torch.float64)
    M = reference.double() @ reference.double().T
    if fast.G is None:  # Gramian path (HPS)
        torch.testing.assert_close(fast.M, M, rtol=1e-4, atol=1e-4 * float(M.abs().max()))
        torch.testing.assert_close(_flat(fast.combine(coef), shared), coef.float() @ reference, rtol=1e-4, atol=1e-4 * scale)
    else:
        torch.testing.assert_close(fast.G, reference, rtol=1e-4, atol=1e-4 * scale)


GATED = {"input_shape": (3, 16, 16)}  # gates on raw pixels take the data's input shape
BASELINES = {"cross_stitch": {}, "mmoe": GATED, "cgc": GATED, "ple": GATED, "dselect_k": GATED, "ltb": {}, "mtan": {}}


@pytest.mark.parametrize("layout", ["unequal", "absent"])
@pytest.mark.parametrize("name", list(BASELINES))
def test_per_task_bn_makes_the_architecture_baselines_gradients_exact(name: str, layout: str) -> None:
    """The seven architecture baselines, with per-task statistics: the one-backward G[t] (whatever
    path ``auto`` takes) equals autograd's gradient of L_t on the shared parameters."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from molabench.architectures import ARCHITECTURES
    from molabench.architectures import load_all as load_architectures
    from molabench.data.base import TaskSpec
    from molabench.engine.algorithm import MultiTaskAlgorithm
    from molabench.models.backbones import ResNetFeatures
    from molabench.weighting import build

    load_architectures()
    torch.manual_seed(0)
    tasks = [TaskSpec(f"t{i}", 3 + i) for i in range(T3)]
    blocks = [2, 2, 2, 2] if name == "mtan" else [1, 1, 1, 1]  # MTAN splits each stage before its last block
    backbone = lambda: ResNetFeatures(ResNet(BasicBlock, blocks), 3, True)  # noqa: E731
    arch = ARCHITECTURES.build(name, tasks=tasks, setting="multi_input", backbone=backbone, **BASELINES[name])
    algorithm = MultiTaskAlgorithm(arch, build("pcgrad"), {}, "per_task")
    assert algorithm.task_norm_layers > 0
    shared, others = list(arch.shared_parameters()), list(arch.task_specific_parameters())
    _, losses, groups, _, _ = _forward(algorithm, _batch(layout))
    reference = torch.stack([
        _flat(torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True), shared) for t in range(len(groups))
    ])
    tg = task_gradients(losses, shared, others, groups, "auto", retain_graph=True)
    # one backward split by sample, except where columns mix across tasks (Cross-Stitch's units, LTB's
    # parent choice): there ``auto`` takes T backwards
    assert tg.mode == ("exact" if name in ("cross_stitch", "ltb") else "sample_groups")
    torch.testing.assert_close(tg.G, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


@pytest.mark.parametrize("name", list(ARCHS))
def test_per_task_bn_step_equals_libmtl_per_task_forwards(name: str) -> None:
    """One mixed forward with per-task statistics = each task's sub-batch forwarded alone with plain
    BatchNorm (LibMTL): same losses, same per-task gradients, same running statistics."""
    import copy

    # float64: BatchNorm over a task's 2 samples on 1 x 1 maps amplifies rounding by ~1 / sqrt(eps)
    algorithm = _algorithm(name, small=True).double()
    plain = _algorithm(name, bn_stats="batch", small=True).double()
    plain.load_state_dict(copy.deepcopy(algorithm.state_dict()))
    shared = list(algorithm.arch.shared_parameters())
    shared_plain = list(plain.arch.shared_parameters())
    batch = _batch("unequal")
    _, losses, groups, idx, batch = _forward(algorithm, type(batch)(batch.x.double(), batch.y, batch.task))
    fast = task_gradients(losses, shared, [], groups, "auto")
    plain.train()
    for row, t in enumerate(idx.tolist()):
        keep = batch.task == t
        fwd = plain.arch(batch.x[keep], batch.task[keep])
        loss = plain.task_losses(fwd, type(batch)(batch.x[keep], batch.y[keep], batch.task[keep]))[0][t]
        torch.testing.assert_close(loss, losses[row], rtol=1e-9, atol=1e-9)
        ref = _flat(torch.autograd.grad(loss, shared_plain, allow_unused=True), shared_plain)
        torch.testing.assert_close(fast.G[row], ref, rtol=1e-7, atol=1e-7 * float(ref.abs().max()))
    for (key, a), (_, b) in zip(algorithm.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=key)


def test_batch_statistics_are_exact_by_default_and_approximate_only_by_name() -> None:
    algorithm = _algorithm("hps", bn_stats="batch")
    assert algorithm.task_norm_layers == 0
    _, losses, groups, _, _ = _forward(algorithm, _batch("mixed"))
    shared = list(algorithm.arch.shared_parameters())
    tg = task_gradients(losses, shared, [], groups, "auto", gramian=True, retain_graph=True)
    assert tg.mode == "exact" and tg.exact  # the default never approximates: T backwards here
    approx = task_gradients(losses, shared, [], groups, "sample_groups", gramian=True)  # the approximation, by name
    assert approx.mode == "sample_groups" and not approx.exact and approx.path == "sample_groups_approx" and approx.G is not None


def test_single_input_setting_keeps_batch_statistics() -> None:
    algorithm = _algorithm("hps", setting="single_input")
    assert algorithm.task_norm_layers == 0
    info = algorithm.describe()
    assert info["bn_stats"] == "per_task" and info["bn_stats_effective"] == "batch" and "single-input" in info["bn_stats_note"]


def test_update_with_per_task_bn_records_its_path() -> None:
    from molabench.engine.optim import build_optimizer

    algorithm = _algorithm("hps")
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "sgd", "lr": 1e-3})
    logs = algorithm.update(_batch("mixed"))
    assert all(isinstance(v, float) for v in logs.values())
    info = algorithm.describe()
    assert info["bn_stats_effective"] == "per_task" and info["grad_mode"] == "auto"
    assert info["grad_paths"] == {"sample_groups": 1} and info["sample_groups_check"] == "passed"


def test_gramian_path_direction_matches_exact_for_every_gramian_method() -> None:
    """The Gramian path (M and c^T G from one backward, G never formed) gives each method's exact direction."""
    from molabench.weighting import WEIGHTINGS, StepContext, build, load_all
    from molabench.weighting.gradient import GramianWeighting

    load_all()
    algorithm = _algorithm("hps", small=True)
    arch = algorithm.arch
    shared = list(arch.shared_parameters())
    tested = []
    for name in WEIGHTINGS.names():
        directions = []
        for mode in ("auto", "exact"):
            w = build(name, num_tasks=T3)
            if not isinstance(w, GramianWeighting) or w.level != "parameters":
                break
            w.grad_mode = mode
            fwd, _, _, _, batch = _forward(algorithm, _batch("unequal"))
            full, present = algorithm.task_losses(fwd, batch)
            arch.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            w.backward(StepContext(full, present, shared, list(arch.task_specific_parameters()), fwd.representation, groups=fwd.groups))
            directions.append(torch.cat([p.grad.reshape(-1) for p in shared]))
            assert w.path_counts == {"sample_groups" if mode == "auto" else "exact": 1}
        if len(directions) == 2:
            tested.append(name)
            cos = F.cosine_similarity(directions[0].double(), directions[1].double(), dim=0)
            assert cos > 0.9999, (name, float(cos))
    assert {"mgda", "pcgrad", "cagrad", "gradvac", "imtl", "nash_mtl", "aligned_mtl"} <= set(tested)


def _sorted(batch):
    from molabench.engine.algorithm import _take
    from molabench.models.task_norm import sort_by_task

    order = sort_by_task(batch.task)
    return batch if order is None else _take(batch, order)


def test_self_check_passes_and_a_failure_falls_back_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from molabench.weighting import pertask

    assert pertask.self_check() == "passed"
    monkeypatch.setattr(pertask, "_SELF_CHECK", None)
    monkeypatch.setattr(pertask, "_run_self_check", lambda: "failed: simulated")
    with pytest.warns(RuntimeWarning, match="simulated"):
        assert pertask.self_check() == "failed: simulated"
    algorithm = _algorithm("hps")
    _, losses, groups, _, _ = _forward(algorithm, _batch("mixed"))
    shared = list(algorithm.arch.shared_parameters())
    assert task_gradients(losses, shared, [], groups, "auto").mode == "exact"
    with pytest.raises(ConfigError, match="self-check"):
        task_gradients(losses, shared, [], groups, "sample_groups")


def test_auto_bn_stats_is_per_task_where_the_method_may_know_the_task() -> None:
    from molabench.architectures import ARCHITECTURES
    from molabench.architectures import load_all as load_architectures
    from molabench.data.base import TaskSpec
    from molabench.engine.algorithm import MultiTaskAlgorithm
    from molabench.models.backbones import build_backbone
    from molabench.weighting import build

    load_architectures()
    tasks = [TaskSpec(f"t{i}", 3) for i in range(T3)]
    effective = {}
    for name, setting in (("hps", "multi_input"), ("uniform", "multi_input"), ("hps", "single_input")):
        arch = ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=lambda: build_backbone("resnet18"))
        described = MultiTaskAlgorithm(arch, build("ew"), {}, "auto").describe()
        effective[(name, setting)] = (described["bn_stats"], described["bn_stats_effective"])
    assert effective == {
        ("hps", "multi_input"): ("auto", "per_task"),
        ("uniform", "multi_input"): ("auto", "batch"),  # blind to the task: it must not learn it from the statistics
        ("hps", "single_input"): ("auto", "batch"),  # every sample serves every task
    }
