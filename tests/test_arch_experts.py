"""Mixture-of-experts baselines (MMoE, CGC, PLE, DSelect-k): definitions checked against formulas
computed here, routing (own task only vs the authors' every-branch form), gradient isolation,
parameter counts, the three settings, the DSelect-k regulariser, configs and one-line errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from molabench.architectures import ARCHITECTURES, load_all
from molabench.architectures.dselect_k import smooth_step
from molabench.data.base import Batch, TaskSpec
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.engine.optim import build_optimizer
from molabench.errors import ConfigError
from molabench.models.backbones import ResNetFeatures, build_backbone
from molabench.models.encoder import Encoder
from molabench.penalties import PENALTIES
from molabench.penalties import load_all as load_penalties
from molabench.penalties.base import PenaltyContext
from molabench.weighting import build as build_weighting

load_all()
load_penalties()

ARCHS = ["mmoe", "cgc", "ple", "dselect_k"]
SHAPE = (3, 16, 16)
TASKS = [TaskSpec("a", 3), TaskSpec("b", 5), TaskSpec("c", 2)]
DOMAINS = [TaskSpec("d0", 4), TaskSpec("d1", 4), TaskSpec("d2", 4)]
DENSE = [TaskSpec("seg", 3, kind="segmentation"), TaskSpec("depth", 0, kind="depth"), TaskSpec("cls", 4)]
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"


def tiny_resnet() -> nn.Module:
    return ResNetFeatures(ResNet(BasicBlock, [1, 1, 1, 1]), in_channels=3, small_input=True)


class NoMaps(Encoder):
    """A backbone with pooled features only (the ViT contract: ``has_feature_maps = False``)."""

    def __init__(self) -> None:
        super().__init__(6, "vit_like")
        self.net = nn.Linear(math.prod(SHAPE), 6)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def build(name: str, tasks=TASKS, setting: str = "multi_input", shape=SHAPE, backbone=tiny_resnet, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=backbone, input_shape=shape, **kw)


def batch(task: list[int], shape=SHAPE, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(task), *shape, generator=g), torch.tensor(task)


MIXED = [2, 0, 1, 0, 2, 1, 1, 0]


def count(params) -> int:
    return sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- definitions

def test_mmoe_output_is_the_gate_weighted_sum_of_the_experts() -> None:
    arch = build("mmoe", num_experts=4).eval()
    x, task = batch(MIXED)
    fwd = arch(x, task)
    with torch.no_grad():
        feats = torch.stack([expert(x) for expert in arch.experts], 1)  # (B, E, D), pooled
        for t, idx in enumerate(fwd.groups):
            gate = arch.gates[t]
            g = torch.softmax(x[idx].flatten(1) @ gate.weight.T + gate.bias, dim=1)  # (n_t, E)
            z = (g.unsqueeze(-1) * feats[idx]).sum(1)
            torch.testing.assert_close(fwd.outputs[t], arch.heads[t](z), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(fwd.aux["gate_weights"][idx], g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ARCHS)
def test_gates_lie_on_the_simplex(name: str) -> None:
    kw = {"num_experts": 4} if name in ("mmoe", "dselect_k") else {}
    arch = build(name, **kw).train()
    x, task = batch(MIXED)
    aux = arch(x, task).aux
    keys = [k for k in aux if k.startswith(("gate_weights", "expert_weights"))]
    assert keys
    for key in keys:
        w = aux[key]
        assert bool((w >= 0).all()), key
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), rtol=0, atol=1e-6)


def s_ref(u: float, gamma: float) -> float:
    if u <= -gamma / 2:
        return 0.0
    if u >= gamma / 2:
        return 1.0
    return -2 * u**3 / gamma**3 + 3 * u / (2 * gamma) + 0.5


def test_smooth_step_values_and_the_configured_gamma() -> None:
    for gamma in (1.0, 2.0, 0.5):
        u = torch.tensor([-gamma, -gamma / 2, -gamma / 4, 0.0, gamma / 4, gamma / 2, gamma], dtype=torch.float64)
        got = smooth_step(u, gamma).tolist()
        assert got[0] == 0.0 and got[1] == 0.0 and got[3] == 0.5 and got[5] == 1.0 and got[6] == 1.0
        assert got == pytest.approx([s_ref(float(v), gamma) for v in u], abs=1e-12)
        assert got[2] + got[4] == pytest.approx(1.0)  # s(-u) = 1 - s(u)
    # u = 0.5: gamma = 2 gives -2/64 + 3/8 + 1/2 = 0.84375, gamma = 1 saturates
    u = torch.tensor([0.5], dtype=torch.float64)
    assert float(smooth_step(u, 2.0)) == pytest.approx(0.84375) and float(smooth_step(u, 1.0)) == 1.0


def test_dselect_k_weights_follow_the_formula_with_gamma_not_one() -> None:
    E, k, gamma = 5, 2, 2.0  # m = 3 bits, codes 5..7 unreachable
    arch = build("dselect_k", num_experts=E, num_nonzeros=k, gamma=gamma).eval()
    with torch.no_grad():
        for gate in arch.gates:
            gate.z.weight.normal_(0, 0.05)  # z spread over interior and saturated values
    x, task = batch(MIXED)
    fwd = arch(x, task)
    m = math.ceil(math.log2(E))
    saturated = interior = 0
    for t, idx in enumerate(fwd.groups):
        gate = arch.gates[t]
        for i in idx.tolist():
            flat = x[i].flatten().double()
            z = (gate.z.weight.double() @ flat + gate.z.bias.double()).view(k, m).tolist()
            alpha = torch.softmax(gate.alpha.weight.double() @ flat + gate.alpha.bias.double(), 0).tolist()
            want = []
            for e in range(E):
                bits = format(e, f"0{m}b")  # most significant bit first
                total = 0.0
                for j in range(k):
                    r = 1.0
                    for bit, u in zip(bits, z[j], strict=True):
                        s = s_ref(u, gamma)
                        r *= s if bit == "1" else 1 - s
                    total += alpha[j] * r
                want.append(total)
            got = fwd.aux["expert_weights"][i].double().tolist()
            assert got == pytest.approx(want, abs=1e-6)
            flat_z = [u for row in z for u in row]
            saturated += sum(abs(u) >= gamma / 2 for u in flat_z)
            interior += sum(abs(u) < gamma / 2 for u in flat_z)
    assert saturated and interior  # both branches of s exercised
    # the output is the weighted sum of the experts
    with torch.no_grad():
        feats = torch.stack([expert(x) for expert in arch.experts], 1)
        for t, idx in enumerate(fwd.groups):
            z = (fwd.aux["expert_weights"][idx].unsqueeze(-1) * feats[idx]).sum(1)
            torch.testing.assert_close(fwd.outputs[t], arch.heads[t](z), rtol=1e-5, atol=1e-6)


def saturate(arch: nn.Module, codes: list[list[int]]) -> None:
    """Set every task's selector j to pick expert ``codes[t][j]`` (logits ±5γ, whatever the input)."""
    m = arch.gates[0].m
    with torch.no_grad():
        for t, gate in enumerate(arch.gates):
            gate.z.weight.zero_()
            bias = [5 * arch.gamma * (1 if b == "1" else -1) for e in codes[t] for b in format(e, f"0{m}b")]
            gate.z.bias.copy_(torch.tensor(bias))


def test_saturated_dselect_k_picks_at_most_k_experts_and_skips_the_rest() -> None:
    arch = build("dselect_k", num_experts=4, num_nonzeros=2).eval()
    saturate(arch, [[0, 1], [1, 1], [0, 0]])  # experts 2 and 3 unused by every task
    calls = [0] * 4
    for e, expert in enumerate(arch.experts):
        expert.register_forward_hook(lambda *_, e=e: calls.__setitem__(e, calls[e] + 1))
    x, task = batch(MIXED)
    fwd = arch(x, task)
    w = fwd.aux["expert_weights"]
    assert bool(((w != 0).sum(-1) <= 2).all()) and bool((w[:, 2:] == 0).all())
    torch.testing.assert_close(w[task == 1], torch.tensor([[0.0, 1.0, 0.0, 0.0]]).expand(3, 4))  # both selectors on expert 1
    assert calls == [1, 1, 0, 0]  # exact zeros: experts 2, 3 not run
    authors = copy.deepcopy(arch)
    authors.authors_routing = authors.route_all = True
    full = authors(x, task)
    assert calls == [2, 2, 1, 1]
    for got, want in zip(fwd.outputs, full.outputs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------- routing

@pytest.mark.parametrize("setting", ["multi_input", "domain"])
@pytest.mark.parametrize("name", ARCHS)
def test_authors_routing_gives_the_same_outputs_in_eval_mode(name: str, setting: str) -> None:
    tasks = TASKS if setting == "multi_input" else DOMAINS
    routed = build(name, tasks=tasks, setting=setting).eval()
    authors = build(name, tasks=tasks, setting=setting, authors_routing=True, seed=5).eval()
    authors.load_state_dict(routed.state_dict())
    x, task = batch(MIXED)
    got, want = routed(x, task), authors(x, task)
    for t in range(3):
        assert torch.equal(got.groups[t], want.groups[t])
        torch.testing.assert_close(got.outputs[t], want.outputs[t], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "mode"), [("cgc", "train"), ("cgc", "eval"), ("ple", "eval")])
def test_task_experts_get_no_gradient_from_other_tasks(name: str, mode: str) -> None:
    # PLE in train mode: the shared experts' whole-batch BatchNorm statistics at level i + 1 mix every
    # task's path, so other tasks' experts do get gradient (as HPS couples tasks through BatchNorm);
    # trainer.bn_stats=per_task or eval mode removes that coupling. CGC's shared experts read the image.
    arch = build(name).train(mode == "train")
    x, task = batch(MIXED)
    fwd = arch(x, task)
    fwd.outputs[0].square().sum().backward()
    for s in (1, 2):
        for module in (arch.task_experts[s], arch.gates[s], arch.heads[s]):  # None, or exact zeros (PLE's batch tensor)
            assert all(p.grad is None or not bool(p.grad.any()) for p in module.parameters())
        if name == "cgc":
            assert all(p.grad is None for p in arch.task_experts[s].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in arch.task_experts[0].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in arch.shared.parameters())


@pytest.mark.parametrize("name", ["cgc", "ple"])
def test_routed_task_experts_see_only_their_own_samples(name: str) -> None:
    arch = build(name).eval()
    rows = [0, 0, 0]
    for t in range(3):
        first = arch.task_experts[t][0]
        module = first.conv1
        module.register_forward_hook(lambda _m, inp, _o, t=t: rows.__setitem__(t, rows[t] + inp[0].shape[0]))
    x, task = batch(MIXED)
    arch(x, task)
    assert rows == [int((task == t).sum()) for t in range(3)]


@pytest.mark.parametrize("name", ["cgc", "ple"])
def test_a_single_training_sample_sits_out_when_the_final_map_is_one_pixel(name: str) -> None:
    arch = build(name, shape=(3, 8, 8)).train()  # small_input tiny ResNet: 8x8 -> 1x1 at layer4
    x, task = batch([1, 0, 1, 2, 2], shape=(3, 8, 8))
    fwd = arch(x, task)
    assert fwd.outputs[0] is None and fwd.groups[0] is None
    assert fwd.outputs[1].shape == (2, 5) and fwd.outputs[2].shape == (2, 2)
    assert arch.eval()(x, task).outputs[0].shape == (1, 3)


# ------------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("name", ARCHS)
def test_parameter_counts_equal_the_formulas(name: str) -> None:
    def backbone() -> nn.Module:
        return build_backbone("resnet18", small_input=True)

    T, n_in = 3, math.prod(SHAPE)  # N_in = 768
    P = count(backbone().parameters())
    arch = build(name, backbone=backbone)
    body = count(arch.parameters()) - count(arch.heads.parameters())
    if name == "mmoe":  # E = T
        E = T
        experts, gates = E * P, T * E * (n_in + 1)
    elif name == "dselect_k":  # E = T = 3, k = 2, m = 2
        E, k = T, 2
        experts, gates = E * P, T * (n_in + 1) * k * (math.ceil(math.log2(E)) + 1)
    elif name == "cgc":  # 1 shared + 1 per task
        experts, gates = (T + 1) * P, 2 * T * (n_in + 1)
    else:  # PLE: level inputs of a small-input ResNet-18 at 16x16: image, stem, layer1, layer2, layer3
        n = [3 * 16 * 16, 64 * 16 * 16, 64 * 16 * 16, 128 * 8 * 8, 256 * 4 * 4]
        experts, gates = (T + 1) * P, 2 * T * sum(v + 1 for v in n)
    assert body == experts + gates
    counts = arch.param_counts()
    assert counts["expert_params"] == experts and counts["gates"] == gates
    assert counts["experts"] == (T if name in ("mmoe", "dselect_k") else T + 1)
    shared, specific = list(arch.shared_parameters()), list(arch.task_specific_parameters())
    assert count(shared) == (E * P if name in ("mmoe", "dselect_k") else P)
    assert count(shared) + count(specific) == count(arch.parameters())
    assert not {id(p) for p in shared} & {id(p) for p in specific}


# -------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("setting", ["multi_input", "domain", "single_input"])
@pytest.mark.parametrize("name", ARCHS)
def test_every_setting_trains(name: str, setting: str) -> None:
    tasks = {"multi_input": TASKS, "domain": DOMAINS, "single_input": DENSE}[setting]
    arch = build(name, tasks=tasks, setting=setting, head={"name": "psp", "channels": 8}).train()
    x, task = batch([0] * 4 if setting == "single_input" else MIXED)
    fwd = arch(x, task)
    assert fwd.representation is None and arch.has_shared_representation is False
    loss = torch.zeros(())
    for t, (spec, out, idx) in enumerate(zip(tasks, fwd.outputs, fwd.groups, strict=True)):
        n = x.shape[0] if setting == "single_input" else int((task == t).sum())
        assert idx.numel() == n
        if spec.kind == "segmentation":
            assert out.shape == (n, 3, 16, 16)
        elif spec.kind == "depth":
            assert out.shape == (n, 1, 16, 16)
        else:
            assert out.shape == (n, spec.num_classes)
        loss = loss + out.float().square().mean()
    loss.backward()
    assert all(p.grad is not None for p in arch.heads.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in arch.shared_parameters())
    if setting == "single_input":  # every task's gate on every image
        weights = fwd.aux.get("gate_weights", fwd.aux.get("expert_weights"))
        if weights is not None:
            assert weights.shape[:2] == (4, 3)


@pytest.mark.parametrize("name", ARCHS)
def test_one_gradient_step_with_pcgrad_and_per_task_batchnorm(name: str, tiny_shapes) -> None:
    """The shared experts see the whole (task-sorted) batch in batch order: per-task BatchNorm works and
    gradient methods take the exact one-backward per-task gradients."""
    torch.manual_seed(0)
    arch = ARCHITECTURES.build(name, tasks=tiny_shapes.tasks, setting=tiny_shapes.setting, backbone=tiny_resnet, input_shape=SHAPE)
    penalties = {"dselect_k": PENALTIES.build("dselect_k", arch=arch, tasks=tiny_shapes.tasks)} if name == "dselect_k" else {}
    algorithm = MultiTaskAlgorithm(arch, build_weighting("pcgrad", num_tasks=tiny_shapes.num_tasks), penalties, bn_stats="per_task")
    assert algorithm.task_norm_layers > 0
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-3})
    before = [p.detach().clone() for p in arch.shared_parameters()]
    logs = algorithm.update(next(iter(BatchLoader(tiny_shapes, "train", 8, train=True))))
    assert math.isfinite(logs["loss"])
    # one backward split by sample, exact: CGC/PLE's task experts run their own train-mode BatchNorm on
    # one task's rows, which couples no tasks (weighting.pertask recognises it)
    assert dict(algorithm.weighting.path_counts) == {"sample_groups": 1}
    assert any(not torch.equal(a, b) for a, b in zip(arch.shared_parameters(), before, strict=True))
    if name == "dselect_k":
        assert "penalty/dselect_k" in logs


# -------------------------------------------------------------------------- the regulariser

def regulariser_by_hand(arch: nn.Module, x: Tensor, pairs: list[tuple[int, Tensor]], lam: float, power_of_two: bool) -> float:
    total = 0.0
    for t, idx in pairs:
        gate = arch.gates[t]
        z = (x[idx].flatten(1) @ gate.z.weight.T + gate.z.bias).view(len(idx), gate.k, gate.m)
        s = smooth_step(z, arch.gamma)
        for i in range(len(idx)):
            for j in range(gate.k):
                r = []
                for e in range(arch.num_experts):
                    bits = format(e, f"0{gate.m}b")
                    r.append(math.prod(float(s[i, j, q]) if b == "1" else 1 - float(s[i, j, q]) for q, b in enumerate(bits)))
                total += lam * -sum(v * math.log(v + 1e-6) for v in r)
                if not power_of_two and sum(r) > 0:  # a dead selector (all mass on unreachable codes) adds nothing
                    total += 1 / sum(r)
    return total


@pytest.mark.parametrize("num_experts", [3, 4])
@pytest.mark.parametrize("setting", ["multi_input", "single_input"])
def test_dselect_k_penalty_covers_every_task_gate(num_experts: int, setting: str) -> None:
    tasks = TASKS if setting == "multi_input" else DENSE
    arch = build("dselect_k", tasks=tasks, setting=setting, num_experts=num_experts, head={"name": "psp", "channels": 8}).train()
    with torch.no_grad():
        for gate in arch.gates:
            gate.z.weight.normal_(0, 0.02)
    penalty = PENALTIES.build("dselect_k", arch=arch, tasks=tasks, entropy_weight=0.1)
    x, task = batch(MIXED if setting == "multi_input" else [0] * 4)
    fwd = arch(x, task)
    value = penalty(PenaltyContext(Batch(x, task, task), fwd, torch.zeros(3)))
    pairs = [(t, idx) for t, idx in enumerate(fwd.groups)]
    with torch.no_grad():
        want = regulariser_by_hand(arch, x, pairs, 0.1, num_experts == 4)
        last_only = regulariser_by_hand(arch, x, pairs[-1:], 0.1, num_experts == 4)
    assert float(value.detach()) == pytest.approx(want, rel=1e-5)
    assert abs(want - last_only) > 1e-3 * abs(want)  # not LibMTL's last-task-only term
    n = x.shape[0] * (3 if setting == "single_input" else 1)
    assert fwd.aux["selector_outputs"].shape == (n, 2, num_experts)
    value.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for gate in arch.gates for p in gate.z.parameters())


def test_dselect_k_penalty_stays_finite_with_a_dead_selector() -> None:
    arch = build("dselect_k", num_experts=3).train()  # m = 2 bits: code 3 = "11" names no expert
    saturate(arch, [[3, 0], [1, 2], [2, 2]])  # task 0's first selector entirely on the unreachable code
    x, task = batch(MIXED)
    fwd = arch(x, task)
    r = fwd.aux["selector_outputs"]
    assert int((r.sum(-1) == 0).sum()) == int((task == 0).sum())
    penalty = PENALTIES.build("dselect_k", arch=arch, tasks=TASKS)
    value = penalty(PenaltyContext(Batch(x, task, task), fwd, torch.zeros(3)))
    # live selectors saturated on one reachable expert: 1/1 each, zero entropy
    assert float(value.detach()) == pytest.approx(2 * x.shape[0] - int((task == 0).sum()), abs=1e-4)
    value.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for gate in arch.gates for p in gate.z.parameters())
    live = torch.softmax(arch.gates[0].alpha(x[task == 0]), -1)[:, 1]  # only the second selector's share remains
    torch.testing.assert_close(fwd.aux["expert_weights"][task == 0].sum(-1), live, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------- configs

@pytest.mark.parametrize("name", ARCHS)
def test_method_configs_build_with_every_key(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"), resolve=True)
    assert cfg["name"] == name and cfg["weighting"] == {"name": "ew"}
    hparams = {k: v for k, v in cfg["architecture"].items() if k != "name"}
    assert hparams["authors_routing"] is False
    arch = build(cfg["architecture"]["name"], **hparams)
    if name in ("mmoe", "dselect_k"):
        assert hparams["num_experts"] is None and arch.num_experts == len(TASKS)
    else:
        assert arch.num_shared == 1 and arch.num_task_experts == [1, 1, 1]
    if name == "dselect_k":
        assert arch.k == 2 and arch.gamma == 1.0
        pen = cfg["penalties"]["dselect_k"]
        assert pen.pop("enabled") is True
        assert PENALTIES.build("dselect_k", arch=arch, tasks=TASKS, **pen).entropy_weight == 1e-6
    else:
        assert cfg["penalties"] == {}


# ---------------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    ("name", "kw", "fragments"),
    [
        ("dselect_k", {"num_experts": 2, "num_nonzeros": 3}, ("num_nonzeros", "k=3", "E=2")),
        ("dselect_k", {"gamma": 0}, ("gamma",)),
        ("mmoe", {"num_experts": 0}, ("num_experts", ">= 1")),
        ("mmoe", {"num_experts": 2.5}, ("num_experts", "integer")),
        ("dselect_k", {"num_experts": True}, ("num_experts", "integer")),
        ("cgc", {"task_experts": 0}, ("task_experts", ">= 1")),
        ("cgc", {"task_experts": [1, -1, 1]}, ("task_experts[1]",)),
        ("cgc", {"task_experts": [1, 1]}, ("task_experts", "3 tasks")),
        ("ple", {"shared_experts": 0}, ("shared_experts", "single_task")),
        ("ple", {"shared_experts": -2}, ("shared_experts",)),
        ("mmoe", {"authors_routing": "yes"}, ("authors_routing",)),
        ("mmoe", {"input_shape": None}, ("input_shape",)),
        ("mmoe", {"num_nonzeros": 2}, ("does not take", "num_nonzeros")),
    ],
)
def test_bad_options_fail_in_one_line(name: str, kw: dict, fragments: tuple[str, ...]) -> None:
    shape = kw.pop("input_shape", SHAPE)
    with pytest.raises(ConfigError) as info:
        build(name, shape=shape, **kw)
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize("name", ARCHS)
def test_dense_tasks_need_feature_maps(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(name, tasks=DENSE, setting="single_input", backbone=NoMaps)
    assert "\n" not in str(info.value) and ("spatial feature map" in str(info.value) or "ResNet" in str(info.value))


def test_ple_needs_a_staged_resnet_and_others_take_a_vit() -> None:
    def vit() -> nn.Module:
        return build_backbone("vit_tiny", image_size=16)

    with pytest.raises(ConfigError) as info:
        build("ple", backbone=vit)
    assert "\n" not in str(info.value) and "vit_tiny" in str(info.value) and "ResNet" in str(info.value)
    arch = build("mmoe", backbone=NoMaps, num_experts=2).eval()  # classification on pooled features: fine
    x, task = batch(MIXED)
    assert arch(x, task).outputs[1].shape == (3, 5)


@pytest.mark.parametrize("name", ARCHS)
def test_input_of_another_size_fails_in_one_line(name: str) -> None:
    arch = build(name).eval()
    x, task = batch(MIXED, shape=(3, 8, 8))
    with pytest.raises(ConfigError) as info:
        arch(x, task)
    message = str(info.value)
    assert "\n" not in message and "3x16x16" in message and "3x8x8" in message and "data.image_size" in message


def test_the_penalty_refuses_other_architectures() -> None:
    with pytest.raises(ConfigError) as info:
        PENALTIES.build("dselect_k", arch=build("mmoe", num_experts=2), tasks=TASKS)
    assert "\n" not in str(info.value) and "method=dselect_k" in str(info.value)
