"""MoLA architectures: init equals HPS, gradient isolation, paths agree, routers, checkpoints, configs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from molabench.architectures import ARCHITECTURES, load_all
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.models.backbones import ResNetFeatures
from molabench.penalties import PENALTIES
from molabench.penalties import load_all as load_penalties

load_all()
load_penalties()

T = 3
TASKS = [TaskSpec(f"t{i}", 2 + i) for i in range(T)]
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"


def tiny_resnet() -> nn.Module:
    return ResNetFeatures(ResNet(BasicBlock, [1, 1, 1, 1]), in_channels=3, small_input=True)


def build(name: str, seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    return ARCHITECTURES.build(name, tasks=TASKS, setting="multi_input", backbone=tiny_resnet, **kw)


def randomise_adapters(arch: nn.Module) -> None:
    with torch.no_grad():
        for p in arch.adapter_parameters():
            p.normal_(0, 0.05)


def batch(n_per_task: int = 2, size: int = 8, shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    task = torch.arange(T).repeat_interleave(n_per_task)
    if shuffle:
        task = task[torch.randperm(task.numel(), generator=g)]
    return torch.randn(task.numel(), 3, size, size, generator=g), task


@pytest.mark.parametrize("name,kw", [("mola_grad", {"stages": ["stem", "layer1", "layer2", "layer3", "layer4"]}),
                                     ("mola_router", {"adapt_downsample": True, "router": "light"})])
def test_init_equals_hps_with_same_weights(name: str, kw: dict) -> None:
    hps = build("hps", seed=0).train()
    mola = build(name, seed=1, rank=2, **kw).train()
    missing, unexpected = mola.load_state_dict(hps.state_dict(), strict=False)
    assert not unexpected and missing and all("lora_" in k or k.startswith("routers.") for k in missing)
    x, task = batch(shuffle=False)
    for got, want in zip(mola(x, task).outputs, hps(x, task).outputs, strict=True):
        assert torch.equal(got, want)
    # A shuffled batch is sorted by task for MoLA-Grad's grouped path: samples then sit at other batch
    # positions (conv kernels block the batch) and BN sums in another order, so equal up to rounding.
    x, task = batch(shuffle=True)
    for got, want in zip(mola(x, task).outputs, hps(x, task).outputs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shuffle,n_per_task,grad_path", [(False, 2, "auto"), (True, 2, "auto"), (True, 2, "dense")])
def test_grad_isolation(shuffle: bool, n_per_task: int, grad_path: str) -> None:
    # Eval mode: in train mode BatchNorm's batch statistics couple the samples of a batch, a property
    # of BN that MoLA does not change.
    arch = build("mola_grad", rank=2, stages=["stem", "layer1", "layer4"], grad_path=grad_path).eval()
    randomise_adapters(arch)
    x, task = batch(n_per_task, shuffle=shuffle)
    for t in range(T):
        arch.zero_grad(set_to_none=True)
        arch(x, task).outputs[t].square().sum().backward()
        for p in arch.adapter_parameters():
            for e in range(T):
                g = p.grad[e]
                assert (torch.count_nonzero(g) > 0) == (e == t), f"adapter {e} gradient from task {t}'s loss"


def test_grad_isolation_unequal_counts() -> None:
    arch = build("mola_grad", rank=2).eval()
    randomise_adapters(arch)
    task = torch.tensor([0, 0, 0, 1, 2, 2, 0])
    x = torch.randn(task.numel(), 3, 8, 8)
    arch(x, task).outputs[1].sum().backward()
    for p in arch.adapter_parameters():
        assert torch.count_nonzero(p.grad[0]) == 0 and torch.count_nonzero(p.grad[2]) == 0
        assert torch.count_nonzero(p.grad[1]) > 0


@pytest.mark.parametrize("factorization", ["paper", "code"])
def test_grad_paths_agree_with_per_sample_passes(factorization: str) -> None:
    """Grouped (sorted or not), dense one-hot (unequal counts) == each sample alone with its own adapter."""
    arch = build("mola_grad", rank=2, factorization=factorization, adapt_downsample=True).double().eval()
    randomise_adapters(arch)
    for x, task in [batch(2, shuffle=False), batch(2, shuffle=True), (torch.randn(5, 3, 8, 8), torch.tensor([2, 0, 0, 1, 2]))]:
        x = x.double()
        z = arch(x, task).representation
        alone = torch.cat([arch(x[n : n + 1], task[n : n + 1]).representation for n in range(x.shape[0])])
        torch.testing.assert_close(z, alone, rtol=1e-9, atol=1e-9)
    dense = build("mola_grad", rank=2, factorization=factorization, adapt_downsample=True, grad_path="dense").double().eval()
    dense.load_state_dict(arch.state_dict())
    x, task = batch(2)
    torch.testing.assert_close(dense(x.double(), task).representation, arch(x.double(), task).representation)


def test_router_forward_aux_and_never_sees_task() -> None:
    arch = build("mola_router", rank=2, router="light").eval()
    randomise_adapters(arch)
    x, task = batch()
    out = arch(x, task)
    assert out.aux["router_logits"].shape == (x.shape[0], T)
    other = arch(x, torch.roll(task, 1))
    torch.testing.assert_close(out.representation, other.representation)


def router_params(arch: nn.Module) -> int:
    return arch.param_counts()["router"]


@pytest.mark.parametrize("router", ["authors", "light"])
def test_shared_vs_per_stage_router_counts(router: str) -> None:
    stages = ["layer1", "layer2", "layer3"]
    shared = build("mola_router", rank=2, stages=stages, router=router)
    per_stage = build("mola_router", rank=2, stages=stages, router=router, router_sharing="per_stage")
    one = sum(p.numel() for p in shared.routers[0].parameters())
    assert len(shared.routers) == 1 and router_params(shared) == one
    assert len(per_stage.routers) == 3 and router_params(per_stage) == 3 * one
    assert shared.param_counts()["adapter"] == per_stage.param_counts()["adapter"]
    if router == "authors":  # ResNet-20: 0.27M parameters with a 10-way head
        assert 265_000 < one < 275_000
    x, task = batch()
    assert per_stage.eval()(x, task).aux["router_logits"].shape == (x.shape[0], 3, T)


def test_adapter_count_formula() -> None:
    arch = build("mola_grad", rank=2, stages=["layer1"], experts=T)
    # layer1 of the tiny ResNet: two 3x3 convs 64 -> 64; paper form: E * r * (64*9 + 64) each.
    assert arch.param_counts() == {"adapter": 2 * T * 2 * (64 * 9 + 64), "router": 0, "adapted_layers": 2, "experts": T}


def test_checkpoint_holds_router_once_and_reloads() -> None:
    arch = build("mola_router", rank=2, router="light", stages=["layer1", "layer3"], adapt_downsample=True)
    randomise_adapters(arch)
    twd = PENALTIES.build("twd", arch=arch, tasks=TASKS, weight=0.1)
    state = arch.state_dict()
    router_keys = [k for k in state if "router" in k]
    assert router_keys and all(k.startswith("routers.0.") for k in router_keys)
    assert not any(k.startswith("routers.1") for k in state)
    buffer = io.BytesIO()
    torch.save({"arch": state, "twd": twd.state_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = build("mola_router", seed=5, rank=2, router="light", stages=["layer1", "layer3"], adapt_downsample=True)
    fresh.load_state_dict(loaded["arch"])
    x, task = batch()
    assert torch.equal(fresh.eval()(x, task).representation, arch.eval()(x, task).representation)


def test_stage_ranks_and_errors() -> None:
    arch = build("mola_grad", stages=["layer1", "layer4"], stage_ranks=[1, 3])
    ranks = {m.rank for name, m in arch.encoder.named_modules() if hasattr(m, "lora_A") and name.startswith("layer4")}
    assert ranks == {3}
    with pytest.raises(ConfigError, match="stage_ranks"):
        build("mola_grad", stages=["layer1"], stage_ranks=[1, 2])
    with pytest.raises(ConfigError, match="experts"):
        build("mola_grad", experts=T + 1)
    with pytest.raises(ConfigError, match="stage"):
        build("mola_router", stages=["layer9"])
    with pytest.raises(ConfigError, match=r"architecture .mola_router. does not take rnak; it accepts: .*rank"):
        build("mola_router", rnak=3)
    with pytest.raises(ConfigError, match="router"):
        PENALTIES.build("twd", arch=build("mola_grad"), tasks=TASKS, weight=0.1)


@pytest.mark.parametrize("name", ["mola_grad", "mola_router"])
def test_method_config_builds_with_overrides(name: str) -> None:
    cfg = OmegaConf.create({"method": OmegaConf.load(CONFIGS / f"{name}.yaml")})
    cfg.method.rank = 1
    cfg.method.stages = ["layer1", "layer2"]
    if name == "mola_router":
        cfg.method.router, cfg.method.omega_dim, cfg.method.experts = "light", 8, 2
    method = OmegaConf.to_container(cfg.method, resolve=True)
    arch_cfg = dict(method["architecture"])
    arch = ARCHITECTURES.build(arch_cfg.pop("name"), tasks=TASKS, setting="multi_input", backbone=tiny_resnet, **arch_cfg)
    assert {m.rank for m in arch.encoder.modules() if hasattr(m, "lora_A")} == {1}
    assert set(arch.adapted_layers) == {"layer1", "layer2"}
    for pen_name, pen_cfg in method["penalties"].items():
        pen = PENALTIES.build(pen_name, arch=arch, tasks=TASKS, **pen_cfg)
        assert pen.weight == 0.1 and pen.maps[0][0].out_features == 8 and arch.num_experts == 2


def test_vit_injection_init_and_grouped_path() -> None:
    from molabench.models.backbones import build_backbone

    def vit() -> nn.Module:
        return build_backbone("vit_tiny", image_size=16, patch_size=8)

    torch.manual_seed(0)
    hps = ARCHITECTURES.build("hps", tasks=TASKS, setting="multi_input", backbone=vit).eval()
    torch.manual_seed(1)
    mola = ARCHITECTURES.build("mola_grad", tasks=TASKS, setting="multi_input", backbone=vit, rank=2, stages=["blocks.0", "blocks.11"])
    mola.load_state_dict(hps.state_dict(), strict=False)
    mola.eval()
    assert mola.param_counts()["adapted_layers"] == 8
    x, task = batch(2, size=16)
    assert torch.equal(mola(x, task).representation, hps(x, task).representation)
    randomise_adapters(mola)
    z = mola(x, task).representation
    alone = torch.cat([mola(x[n : n + 1], task[n : n + 1]).representation for n in range(x.shape[0])])
    torch.testing.assert_close(z, alone, rtol=1e-4, atol=1e-5)
