"""Stage-wise architecture baselines: Cross-Stitch, LTB (Learning to Branch), MTAN (docs/architectures.md).

Definitions, not only shapes: the stitched inputs are the T x T combinations of the columns'
outputs, LTB's schedule and draws follow their formulas, MTAN's attention is its formula, the
efficient routings give the authors' per-sample outputs, the parameter counts are the spec's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from molabench.architectures import ARCHITECTURES, load_all
from molabench.architectures.cross_stitch import initial_stitch
from molabench.data.base import TaskSpec
from molabench.engine.algorithm import build_algorithm, build_architecture
from molabench.engine.optim import build_optimizer
from molabench.errors import ConfigError
from molabench.models.backbones import build_backbone

load_all()
TASKS = [TaskSpec("a", 3), TaskSpec("b", 5)]
TASKS3 = [TaskSpec("a", 3), TaskSpec("b", 5), TaskSpec("c", 2)]
DENSE = [TaskSpec("seg", 4, kind="segmentation"), TaskSpec("depth", 0, kind="depth")]
NAMES = ["cross_stitch", "ltb", "mtan"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"
P18 = 11_176_512  # ResNet-18 without fc
P50 = 23_508_032  # ResNet-50 without fc


def small(name: str = "resnet18") -> nn.Module:
    return build_backbone(name, small_input=True)


def make(name, setting="multi_input", tasks=TASKS, backbone=small, head=None, **hparams):
    torch.manual_seed(0)
    return ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=backbone, head=head, **hparams)


def batch(n: int = 6, tasks: int = 2) -> tuple[Tensor, Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 3, 16, 16), torch.arange(n) % tasks


def count(params) -> int:
    return sum(p.numel() for p in params)


def randomise_bn(module: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


def per_sample(fwd, n: int, t: int) -> Tensor:
    """Task ``t``'s outputs placed at their sample rows (NaN elsewhere)."""
    out = fwd.outputs[t]
    full = torch.full((n, *out.shape[1:]), float("nan"))
    full[fwd.groups[t]] = out
    return full


def capture(module: nn.Module, store: list, what: str = "input"):
    def hook(_m, args, output):
        store.append((args[0] if what == "input" else output).detach().clone())

    return module.register_forward_hook(hook)


# ----------------------------------------------------------------------------- backbone additions
@pytest.mark.parametrize(("name", "block", "expansion"), [("resnet18", BasicBlock, 1), ("resnet50_dilated", Bottleneck, 4)])
def test_stage_body_and_last_block_compose_to_the_stage(name, block, expansion):
    torch.manual_seed(0)
    net = build_backbone(name, small_input=True).eval()
    assert net.block_type is block and net.block_expansion == expansion
    h = net.forward_stem(torch.randn(2, 3, 16, 16))
    for stage in net.stage_names:
        blocks = net.stage_blocks(stage)
        assert len(blocks) >= 2 and all(isinstance(b, block) for b in blocks)
        u = net.forward_stage_body(stage, h)
        assert torch.equal(u, blocks[:-1](h))
        p = net.forward_stage_last(stage, u)
        assert torch.allclose(p, net.forward_stage(stage, h))
        h = p
    with pytest.raises(ConfigError, match="unknown"):
        net.stage_blocks("layer5")


def test_vit_has_no_stage_blocks():
    net = build_backbone("vit_tiny", image_size=16, patch_size=8)
    x = torch.randn(1, 3, 16, 16)
    for call in (lambda: net.stage_blocks("layer1"), lambda: net.forward_stage_body("layer1", x),
                 lambda: net.forward_stage_last("layer1", x)):
        with pytest.raises(ConfigError, match="backbone vit_tiny has no spatial feature maps"):
            call()


# ----------------------------------------------------------------------------- Cross-Stitch
def test_cross_stitch_initialisations():
    assert torch.allclose(initial_stitch(2, "paper"), torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    three = initial_stitch(3, "paper")
    assert torch.allclose(three.diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(three[~torch.eye(3, dtype=torch.bool)], torch.full((6,), 0.05))
    assert torch.allclose(three.sum(1), torch.ones(3))
    assert torch.equal(initial_stitch(1, "paper"), torch.ones(1, 1))
    assert torch.equal(initial_stitch(3, "ones"), torch.ones(3, 3))
    arch = make("cross_stitch", tasks=TASKS3)
    assert arch.stitch.shape == (4, 3, 3) and all(torch.equal(s, three) for s in arch.stitch)
    assert torch.equal(make("cross_stitch", init="ones").stitch, torch.ones(4, 2, 2))


def test_cross_stitch_mixes_columns_with_its_matrices():
    """Column t's layer2/3/4 input is sum_j alpha_k[t, j] * (column j's previous stage output)."""
    arch = make("cross_stitch", tasks=TASKS3).eval()
    with torch.no_grad():
        arch.stitch.copy_(torch.randn(4, 3, 3))
    outs = {s: [] for s in ("layer1", "layer2", "layer3")}
    ins = {s: [] for s in ("layer2", "layer3", "layer4")}
    hooks = [capture(getattr(c, s), outs[s], "output") for c in arch.columns for s in outs]
    hooks += [capture(getattr(c, s), ins[s]) for c in arch.columns for s in ins]
    x, task = batch(6, 3)
    arch(x, task)
    for h in hooks:
        h.remove()
    for k, (before, after) in enumerate([("layer1", "layer2"), ("layer2", "layer3")]):
        for t in range(3):
            want = sum(arch.stitch[k, t, j].detach() * outs[before][j] for j in range(3))
            assert torch.allclose(ins[after][t], want, atol=1e-5)
    # layer4 of column t runs on task t's samples only: its input is the mix of those rows
    for t in range(3):
        idx = torch.nonzero(task == t).flatten()
        want = sum(arch.stitch[2, t, j].detach() * outs["layer3"][j][idx] for j in range(3))
        assert ins["layer4"][t].shape[0] == idx.numel() and torch.allclose(ins["layer4"][t], want, atol=1e-5)


def test_cross_stitch_parameters_and_sharing():
    arch = make("cross_stitch", tasks=TASKS3, backbone=lambda: build_backbone("resnet18"))
    assert count(arch.parameters()) - count(arch.heads.parameters()) == 3 * P18 + 4 * 3**2
    assert arch.param_counts() == {"columns": 3, "stitch": 36}
    shared = {id(p) for p in arch.shared_parameters()}
    assert id(arch.stitch) in shared and shared == {id(p) for n, p in arch.named_parameters() if not n.startswith("heads.")}
    assert {id(p) for p in arch.task_specific_parameters()} == {id(p) for p in arch.heads.parameters()}
    assert arch.has_shared_representation is False


# ----------------------------------------------------------------------------- LTB
def test_ltb_schedule():
    arch = make("ltb")
    assert (arch.epoch, arch.epochs, arch.warming_up) == (0, 1, True)  # before any call: epoch 0 of 1
    arch.on_epoch_start(0, 200)
    assert arch.temperature == pytest.approx(10.0) and arch.warming_up
    arch.on_epoch_start(1, 200)
    assert arch.warming_up and arch.temperature == pytest.approx(10 / math.sqrt(2))
    arch.on_epoch_start(2, 200)
    assert not arch.warming_up
    arch.on_epoch_start(199, 200)
    assert arch.temperature == pytest.approx(0.7071, abs=1e-4)
    arch.on_epoch_start(0, 10)
    assert arch.warming_up and arch.temperature == pytest.approx(0.5)
    arch.on_epoch_start(1, 10)
    assert not arch.warming_up
    arch.on_epoch_start(9, 10)
    assert arch.temperature == pytest.approx(0.5 / math.sqrt(10))
    with pytest.raises(ConfigError, match="epochs >= 1"):
        arch.on_epoch_start(0, 0)


def test_ltb_warm_up_sums_all_parents():
    arch = make("ltb", tasks=TASKS3).eval()
    assert torch.equal(arch.branching(), torch.ones(6, 3, 3))
    stems, ins = [], []
    hooks = [capture(c.maxpool, stems, "output") for c in arch.columns] + [capture(c.layer1, ins) for c in arch.columns]
    x, task = batch(6, 3)
    fwd = arch(x, task)
    for h in hooks:
        h.remove()
    assert torch.equal(fwd.aux["branching"], torch.ones(6, 3, 3))
    for t in range(3):
        assert torch.allclose(ins[t], stems[0] + stems[1] + stems[2], atol=1e-6)


def test_ltb_training_draws_are_hard_one_hot_and_reach_every_logit():
    arch = make("ltb", tasks=TASKS3).train()
    arch.on_epoch_start(5, 10)
    for _ in range(5):
        a = arch.branching().detach()  # straight-through y_hard - y_soft + y_soft: one-hot up to rounding
        assert torch.equal((a > 0.5).sum(-1), torch.ones(6, 3, dtype=torch.long))
        assert torch.allclose(a, (a > 0.5).float(), atol=1e-6)
    stems, ins = [], []
    hooks = [capture(c.maxpool, stems, "output") for c in arch.columns] + [capture(c.layer1, ins) for c in arch.columns]
    x, task = batch(6, 3)
    fwd = arch(x, task)
    for h in hooks:
        h.remove()
    a = fwd.aux["branching"].detach()
    for t in range(3):  # column t's layer1 reads its one sampled parent's stem
        assert torch.allclose(ins[t], stems[int(a[1, t].argmax())], atol=1e-6)
    sum(o.square().mean() for o in fwd.outputs if o is not None).backward()
    grad = arch.branching_logits.grad
    # straight-through: along each task's sampled chain, the logits of *every* parent get a gradient
    # (so every parent's output was computed); slices 0 and 5 are unused
    assert grad is not None
    for t in range(3):
        column = t
        for level in range(4, 0, -1):
            assert bool((grad[level, column] != 0).all()), (t, level, column)
            column = int(a[level, column].argmax())
    assert torch.equal(grad[0], torch.zeros(3, 3)) and torch.equal(grad[5], torch.zeros(3, 3))


def test_ltb_argmax_evaluation_is_deterministic_and_runs_only_ancestor_chains():
    arch = make("ltb", tasks=TASKS3).eval()
    arch.on_epoch_start(5, 10)
    theta = torch.full((6, 3, 3), -1.0)
    theta[:, :, 0] = 1.0  # every level picks column 0 as parent
    with torch.no_grad():
        arch.branching_logits.copy_(theta)
    calls: dict[tuple[int, str], int] = {}

    def counter(key):
        def hook(_m, _a, _o):
            calls[key] = calls.get(key, 0) + 1
        return hook

    hooks = [getattr(c, s).register_forward_hook(counter((j, s)))
             for j, c in enumerate(arch.columns) for s in ("conv1", "layer1", "layer2", "layer3", "layer4")]
    x, task = batch(6, 3)
    one, two = arch(x, task), arch(x, task)
    for h in hooks:
        h.remove()
    assert torch.equal(one.aux["branching"], F.one_hot(theta.argmax(-1), 3).float())
    assert all(torch.equal(p, q) for p, q in zip(one.outputs, two.outputs, strict=True))
    # column 0 through layer3 for every sample, then layer4 of each task's own column; nothing else
    assert set(calls) == {(0, "conv1"), (0, "layer1"), (0, "layer2"), (0, "layer3"), (0, "layer4"), (1, "layer4"), (2, "layer4")}


def test_ltb_sampling_evaluation_draws_each_call():
    arch = make("ltb", tasks=TASKS3, eval_mode="sampling").eval()
    arch.on_epoch_start(5, 10)
    x, task = batch(6, 3)
    torch.manual_seed(0)
    draws = [arch(x, task) for _ in range(6)]
    assert any(not torch.equal(d.aux["branching"], draws[0].aux["branching"]) for d in draws)
    assert any(not torch.allclose(d.outputs[0], draws[0].outputs[0]) for d in draws)


def test_ltb_parameters_and_sharing():
    arch = make("ltb", tasks=TASKS3, backbone=lambda: build_backbone("resnet18"))
    assert count(arch.parameters()) - count(arch.heads.parameters()) == 3 * P18 + 6 * 3**2
    assert arch.param_counts() == {"columns": 3, "branching": 54}
    assert torch.equal(arch.branching_logits, torch.ones(6, 3, 3))
    assert id(arch.branching_logits) in {id(p) for p in arch.shared_parameters()}
    assert {id(p) for p in arch.task_specific_parameters()} == {id(p) for p in arch.heads.parameters()}


# ----------------------------------------------------------------------------- MTAN
def _bn(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def _conv1x1(x: Tensor, conv: nn.Conv2d) -> Tensor:
    return torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


def test_mtan_attention_is_its_formula():
    """Stage 0: â_0^t = sigmoid(BN(W2 ReLU(BN(W1 u_0 + b1)) + b2)) * p_0; stage 1 reads [u_1 ; down(f_0(â_0^t))]."""
    arch = make("mtan", setting="single_input").eval()
    randomise_bn(arch)
    f_in, f_out, att1_in, heads_in = [], [], [], []
    hooks = [capture(arch.shared_f[0], f_in), capture(arch.shared_f[0], f_out, "output")]
    hooks += [capture(arch.attention[t][1], att1_in) for t in range(2)]
    hooks += [capture(h, heads_in) for h in arch.heads]
    x, task = batch(4)
    with torch.no_grad():
        arch(x, task)
        enc = arch.encoder
        u0 = enc.forward_stage_body("layer1", enc.forward_stem(x))
        p0 = enc.forward_stage_last("layer1", u0)
        u1 = enc.forward_stage_body("layer2", p0)
        for t in range(2):
            conv1, bn1, _, conv2, bn2, _ = arch.attention[t][0]
            mask = torch.sigmoid(_bn(_conv1x1(torch.relu(_bn(_conv1x1(u0, conv1), bn1)), conv2), bn2))
            assert torch.allclose(f_in[t], mask * p0, atol=1e-5)
            pooled = F.max_pool2d(f_out[t], 2)  # 16x16 -> 8x8, layer2's size
            assert torch.allclose(att1_in[t], torch.cat([u1, pooled], 1), atol=1e-6)
    for h in hooks:
        h.remove()
    assert heads_in[0].shape == (4, 512)  # classification heads read the pooled â_3


def test_mtan_parameter_counts_resnet18():
    arch = make("mtan", tasks=TASKS3, backbone=lambda: build_backbone("resnet18"))
    F18, A18 = 4_822_272, 1_046_144
    assert arch.param_counts() == {"attention": 3 * A18, "shared_f": F18}
    assert count(arch.parameters()) - count(arch.heads.parameters()) == P18 + F18 + 3 * A18
    assert all(count(arch.attention[t].parameters()) == A18 for t in range(3))
    shared = {id(p) for p in arch.shared_parameters()}
    assert shared == {id(p) for p in [*arch.encoder.parameters(), *arch.shared_f.parameters()]}
    specific = {id(p) for p in arch.task_specific_parameters()}
    assert specific == {id(p) for p in [*arch.attention.parameters(), *arch.heads.parameters()]}


def test_mtan_parameter_counts_resnet50_and_forward():
    arch = make("mtan", backbone=lambda: build_backbone("resnet50"))
    F50, A50 = 7_931_392, 4_175_936
    assert arch.param_counts() == {"attention": 2 * A50, "shared_f": F50}
    assert count(arch.parameters()) - count(arch.heads.parameters()) == P50 + F50 + 2 * A50
    assert all(isinstance(f, Bottleneck) for f in arch.shared_f)
    with torch.no_grad():
        fwd = arch.eval()(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert [o.shape for o in fwd.outputs] == [(1, 3), (1, 5)]


@pytest.mark.parametrize("backbone", ["resnet18_dilated", "resnet50_dilated"])
def test_mtan_on_dilated_backbones_never_pools_after_stage_0(backbone):
    arch = make("mtan", setting="single_input", tasks=DENSE, backbone=lambda: small(backbone), head={"name": "psp", "channels": 8})
    ins = []
    hooks = [capture(arch.attention[0][i], ins) for i in (1, 2, 3)]
    x, task = batch(2)
    with torch.no_grad():
        fwd = arch.eval()(x, task)
    for h in hooks:
        h.remove()
    assert [tuple(i.shape[-2:]) for i in ins] == [(8, 8), (8, 8), (8, 8)]
    assert fwd.outputs[0].shape == (2, 4, 16, 16) and fwd.outputs[1].shape == (2, 1, 16, 16)


def test_mtan_odd_map_sizes():
    """ResNet-18 at 28 pixels: 7x7 after the stem, 4x4 at layer2 (ceil-mode pooling matches it)."""
    arch = make("mtan", backbone=lambda: build_backbone("resnet18")).eval()
    with torch.no_grad():
        fwd = arch(torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 0, 1]))
    assert [o.shape for o in fwd.outputs] == [(2, 3), (2, 5)]


# ----------------------------------------------------------------------------- all three
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("setting", ["multi_input", "domain"])
def test_outputs_per_task_and_training_step(name, setting):
    arch = make(name, setting=setting).train()
    if name == "ltb":
        arch.on_epoch_start(1, 10)
    x, task = batch()
    fwd = arch(x, task)
    assert fwd.representation is None and arch.has_shared_representation is False
    for t, (out, idx) in enumerate(zip(fwd.outputs, fwd.groups, strict=True)):
        assert torch.equal(idx, torch.nonzero(task == t).flatten())
        assert out.shape == (3, TASKS[t].num_classes)
    sum(F.cross_entropy(o, torch.zeros(3, dtype=torch.long)) for o in fwd.outputs).backward()
    assert all(p.grad is not None for p in arch.heads.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_single_input_dense_tasks(name):
    arch = make(name, setting="single_input", tasks=DENSE, backbone=lambda: small("resnet18_dilated"), head={"name": "psp", "channels": 8})
    if name == "ltb":
        arch.on_epoch_start(1, 10)
    x, task = batch(4)
    fwd = arch.train()(x, task)
    assert fwd.outputs[0].shape == (4, 4, 16, 16) and fwd.outputs[1].shape == (4, 1, 16, 16)
    assert all(torch.equal(g, torch.arange(4)) for g in fwd.groups)
    (fwd.outputs[0].mean() + fwd.outputs[1].mean()).backward()
    with torch.no_grad():
        ev = arch.eval()(x, task)
    assert all(torch.isfinite(o).all() for o in ev.outputs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("setting", ["multi_input", "single_input"])
def test_authors_routing_gives_the_same_per_sample_outputs_in_eval(name, setting):
    arch = make(name, setting=setting, tasks=TASKS3).eval()
    randomise_bn(arch)
    if name == "ltb":
        arch.on_epoch_start(3, 10)
        with torch.no_grad():
            arch.branching_logits.copy_(torch.randn(6, 3, 3))
    x, task = torch.randn(7, 3, 16, 16), torch.tensor([2, 0, 0, 1, 2, 2, 0])
    with torch.no_grad():
        ours = arch(x, task)
        arch.authors_routing = True
        theirs = arch(x, task)
    for t in range(3):
        assert torch.allclose(per_sample(ours, 7, t), per_sample(theirs, 7, t), atol=1e-5, equal_nan=True)


def test_ltb_sampling_evaluation_routes_like_the_authors_for_the_same_draw():
    arch = make("ltb", tasks=TASKS3, eval_mode="sampling").eval()
    arch.on_epoch_start(3, 10)
    x, task = torch.randn(5, 3, 16, 16), torch.tensor([2, 0, 1, 2, 0])
    with torch.no_grad():
        torch.manual_seed(5)
        ours = arch(x, task)
        arch.authors_routing = True
        torch.manual_seed(5)
        theirs = arch(x, task)
    assert torch.equal(ours.aux["branching"], theirs.aux["branching"])
    for t in range(3):
        assert torch.allclose(ours.outputs[t], theirs.outputs[t], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_lone_training_sample_on_a_1x1_map_sits_out(name):
    arch = make(name, backbone=lambda: build_backbone("resnet18")).train()  # 16 px -> 1x1 layer4 map
    x, task = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 1])
    fwd = arch(x, task)
    assert fwd.outputs[0] is None and fwd.groups[0] is None and fwd.outputs[1].shape == (3, 5)
    arch.authors_routing = True  # the whole batch through every branch: nothing to sit out
    assert arch(x, task).outputs[0].shape == (1, 3)
    small_arch = make(name).train()  # 2x2 layer4 map: one sample is enough
    assert small_arch(x, task).outputs[0].shape == (1, 3)


@pytest.mark.parametrize(
    ("name", "bn_stats", "weighting"),
    [(name, "per_task", "ew") for name in NAMES] + [("ltb", "batch", "pcgrad"), ("mtan", "batch", "pcgrad")],
)
def test_algorithm_steps(tiny_shapes, name, bn_stats, weighting):
    """Through build_algorithm with the method config: per-task BatchNorm on the task branches, a gradient method."""
    method = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    method["weighting"] = {"name": weighting}
    torch.manual_seed(0)
    algorithm = build_algorithm(method, {"name": "resnet18", "small_input": True}, tiny_shapes, bn_stats=bn_stats)
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-3})
    from molabench.data.loader import BatchLoader

    for epoch, b in enumerate(BatchLoader(tiny_shapes, "train", 8, train=True)):
        if epoch == 2:
            break
        algorithm.epoch = epoch
        algorithm.arch.on_epoch_start(epoch, 2)  # LTB: epoch 0 warm-up, epoch 1 sampled branching
        logs = algorithm.update(b)
        assert math.isfinite(logs["loss"])
    if bn_stats == "per_task":
        assert algorithm.task_norm_layers > 0


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("name", NAMES)
def test_method_configs_build(tiny_shapes, name):
    method = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert method["name"] == name and method["architecture"]["name"] == name
    assert method["architecture"]["authors_routing"] is False and method["weighting"] == {"name": "ew"}
    arch = build_architecture(method, {"name": "resnet18", "small_input": True}, tiny_shapes)
    assert type(arch).__module__.endswith(name)


@pytest.mark.parametrize(
    ("name", "hparams", "fragment"),
    [
        ("cross_stitch", {"init": "random"}, "init must be one of paper, ones"),
        ("ltb", {"eval_mode": "mean"}, "eval_mode must be one of argmax, sampling"),
        ("mtan", {"authors_routing": "yes"}, "authors_routing must be true or false"),
        ("ltb", {"tau": 1.0}, "does not take tau"),
    ],
)
def test_bad_options_fail_in_one_line(name, hparams, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        make(name, **hparams)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_backbones_without_stages_are_refused(name):
    with pytest.raises(ConfigError, match=f"method={name} is a stage-wise architecture.*backbone vit_tiny has no stages") as err:
        make(name, backbone=lambda: build_backbone("vit_tiny", image_size=16, patch_size=8))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_per_task_batch_norm_keeps_tasks_apart_in_training(tiny_shapes, name):
    """trainer.bn_stats=per_task: a task's training outputs do not depend on the other tasks' samples,
    also through the branches that run on one task's rows (layer4 columns, MTAN's shared f blocks)."""
    method = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    torch.manual_seed(0)
    algorithm = build_algorithm(method, {"name": "resnet18", "small_input": True}, tiny_shapes, bn_stats="per_task")
    arch = algorithm.arch.train()
    arch.on_epoch_start(1, 2)
    torch.manual_seed(2)
    x, task = torch.randn(8, 3, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    other = x.clone()
    other[task != 0] = torch.randn(6, 3, 16, 16)
    outs = []
    for inputs in (x, other):
        torch.manual_seed(3)  # the same LTB draw
        with algorithm.task_norm.scope(task):
            outs.append(arch(inputs, task).outputs[0])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_the_selected_weights_are_evaluated_under_their_own_schedule(tmp_path):
    """LTB evaluated during its warm-up epoch sums all parents; when that epoch is selected, the final
    evaluation restores the schedule of that epoch (``on_epoch_start``), so the reported metrics are
    the ones selection saw, not the post-warm-up arg-max network on warm-up weights."""
    import json

    from tests.cli import SMOKE, train

    run = train(*SMOKE, "method=ltb", "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "trainer.optimizer.lr=1e-12",
                "seed=0", "run_id=ltb", results=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    record = json.loads(next(tmp_path.rglob("ltb/record.json")).read_text())
    selected = record["selection"]["epoch"]
    assert selected == 1  # lr ~0: the warm-up epoch's evaluation is not beaten (ties keep the first)
    seen = next(h for h in record["history"] if h["epoch"] == selected)
    assert record["metrics"]["val"]["avg"]["acc"] == pytest.approx(seen["val/avg/acc"], abs=1e-9)
