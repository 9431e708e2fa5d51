"""Domain-generalisation baselines (docs/domain_generalization.md): MMD², EQRM's quantile, DANN's gradient
reversal and alternating steps, SelfReg's pairing, MMD-AAE's terms — checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from molabench.algorithms import ALGORITHMS
from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward
from molabench.data.base import Batch, TaskSpec
from molabench.engine.algorithm import build_algorithm
from molabench.errors import ConfigError
from molabench.models.backbones import build_backbone
from molabench.penalties import PENALTIES
from molabench.penalties.base import PenaltyContext
from molabench.penalties.dann import ganin_ramp, grad_reverse
from molabench.penalties.mmd import domainbed_kernel, mmd2, mmd_aae_kernel, pairwise_mmd2
from molabench.penalties.selfreg import class_permutations, selfreg_term
from molabench.weighting import build as build_weighting
from molabench.weighting.base import StepContext
from molabench.weighting.eqrm import kde_quantile

DOMAINS = [TaskSpec(f"d{i}", 3) for i in range(3)]


def _direct_mmd2(x, y, k):
    def mean_k(a, b):
        return sum(k(a[i], b[j]) for i in range(len(a)) for j in range(len(b))) / (len(a) * len(b))

    return mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)


def test_mmd2_equals_the_direct_double_sum_for_both_kernels():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 0.5
    gammas = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)

    def k_db(a, b):
        return sum(math.exp(-g * max(float(((a - b) ** 2).sum()), 1e-30)) for g in gammas)

    def k_aae(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s)) for s in (1.0, 5.0, 10.0)) / 3

    assert float(mmd2(x, y, domainbed_kernel)) == pytest.approx(_direct_mmd2(x, y, k_db), rel=1e-9)
    assert float(mmd2(x, y, mmd_aae_kernel)) == pytest.approx(_direct_mmd2(x, y, k_aae), rel=1e-9)
    assert float(mmd2(x, x, domainbed_kernel)) == pytest.approx(0.0, abs=1e-9)


def test_pairwise_mmd_drops_absent_domains_and_keeps_single_samples():
    torch.manual_seed(0)
    z = torch.randn(5, 3, dtype=torch.float64)
    domain = torch.tensor([0, 0, 2, 2, 2])  # domain 1 absent
    total, pairs = pairwise_mmd2(z, domain, 3, domainbed_kernel)
    assert pairs == 1 and float(total) == pytest.approx(float(mmd2(z[:2], z[2:], domainbed_kernel)))
    total, pairs = pairwise_mmd2(z, torch.tensor([0, 1, 2, 2, 2]), 3, domainbed_kernel)
    assert pairs == 3


def _kde_quantile_direct(risks, alpha):
    """Bisection on F(r) = mean Φ((r − R_d)/h) in float64 until the interval is tiny."""
    r = [float(v) for v in risks]
    n = len(r)
    mean = sum(r) / n
    h = 1.06 * math.sqrt(sum((v - mean) ** 2 for v in r) / (n - 1)) * n ** (-0.2)

    def cdf(x):
        return sum(0.5 * (1 + math.erf((x - v) / (h * math.sqrt(2)))) for v in r) / n

    lo, hi = min(r) - 10 * h, max(r) + 10 * h
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < alpha else (lo, mid)
    return (lo + hi) / 2, cdf


@pytest.mark.parametrize("alpha", [0.5, 0.75, 0.95])
def test_eqrm_quantile_equals_a_direct_computation(alpha):
    risks = torch.tensor([0.3, 1.2, 0.8, 2.0], dtype=torch.float64)
    expected, cdf = _kde_quantile_direct(risks, alpha)
    q = float(kde_quantile(risks, alpha))
    # 32 bisection steps on an interval of width R_max − R_min: resolution (2.0 − 0.3) / 2^32
    assert q == pytest.approx(expected, abs=1e-8)
    assert cdf(q) == pytest.approx(alpha, abs=1e-7)


def test_eqrm_gradient_reaches_the_extremes_directly_and_the_others_only_through_h():
    risks = torch.tensor([0.3, 1.2, 0.8, 2.0], dtype=torch.float64, requires_grad=True)
    kde_quantile(risks, 0.75).backward()
    g = risks.grad
    # d/dR of h = 1.06·std·n^(-1/5) is the same expression for every risk; the extremes get 1 more in total
    assert float(g.sum()) == pytest.approx(1.0, abs=1e-9)  # Q shifts one-for-one when every risk does
    with torch.no_grad():
        x = risks.detach()
        dstd = (x - x.mean()) / (x.std() * (len(x) - 1))
        q = float(kde_quantile(x, 0.75))
    inner = g - dstd * (float(g[1]) / float(dstd[1]))  # remove the h part using an inner risk
    assert float(inner[1]) == pytest.approx(0.0, abs=1e-12) and float(inner[2]) == pytest.approx(0.0, abs=1e-9)
    assert float(inner[0]) > 0 and float(inner[3]) > 0 and float(inner[0] + inner[3]) == pytest.approx(1.0, abs=1e-9)
    assert q > 0


def _eqrm_ctx(losses, present, step, total):
    return StepContext(losses=losses, present=present, shared_params=[], task_params=[], step=step, total_steps=total)


def test_eqrm_is_erm_before_burn_in_then_the_quantile_and_resets_the_optimiser_once():
    w = build_weighting("eqrm", num_tasks=3, quantile=0.75, burnin=0.5, lr=1e-6)
    risks = torch.tensor([0.5, 1.0, 2.0])
    present = torch.tensor([True, True, True])
    assert w.burnin_steps(10) == 5
    loss, kind = w.objective(risks, present, 4, 10)
    assert kind == "erm" and float(loss) == pytest.approx(float(risks.mean()))
    loss, kind = w.objective(risks, present, 5, 10)
    assert kind == "quantile" and float(loss) == pytest.approx(float(kde_quantile(risks.double(), 0.75)), rel=1e-5)
    assert [w.optimizer_reset(s, 10) for s in range(10)] == [None] * 5 + [{"lr": 1e-6}] + [None] * 4
    # edges: one present domain, or all risks equal -> ERM mean, counted
    leaf = torch.tensor([0.7, 0.7, 0.0], requires_grad=True)
    w.backward(_eqrm_ctx(leaf, torch.tensor([True, True, False]), 6, 10))
    w.backward(_eqrm_ctx(leaf * 1.0, torch.tensor([True, False, False]), 7, 10))
    assert w.fallback_steps == 2 and w.describe()["eqrm"]["fallback_steps"] == 2
    assert build_weighting("eqrm", burnin=2500).burnin_steps(10) == 2500


def test_eqrm_bad_hyper_parameters_are_one_line():
    for kwargs in ({"quantile": 1.0}, {"quantile": 0.0}, {"burnin": -1}, {"lr": 0}):
        with pytest.raises(ConfigError, match="eqrm"):
            build_weighting("eqrm", **kwargs)


def _arch(name="uniform", setting="domain", tasks=DOMAINS, **kw):
    torch.manual_seed(0)
    return ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=lambda: build_backbone("resnet18", small_input=True), **kw)


def _batch(n=6, tasks=3):
    torch.manual_seed(1)
    task = torch.arange(n) % tasks
    return Batch(x=torch.randn(n, 3, 8, 8), y=torch.tensor([0, 1, 2, 0, 1, 2][:n]), task=task)


def test_gradient_reversal_flips_and_scales_the_gradient_only():
    z = torch.randn(4, 3, requires_grad=True)
    out = grad_reverse(z, 2.5)
    assert torch.equal(out, z)
    out.pow(2).sum().backward()
    assert torch.allclose(z.grad, -2.5 * 2 * z.detach())
    assert ganin_ramp(0.0) == 0.0 and ganin_ramp(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)


def test_dann_discriminator_descends_its_loss_while_the_features_ascend_it():
    arch = _arch()
    penalty = PENALTIES.build("dann", arch=arch, tasks=DOMAINS, lam=0.5)
    batch = _batch()
    z = torch.randn(6, arch.representation_dim, requires_grad=True)
    fwd = Forward([None] * 3, [None] * 3, z)
    penalty(PenaltyContext(batch, fwd, torch.zeros(3))).backward()
    grad_z, grad_d = z.grad.clone(), [p.grad.clone() for p in penalty.discriminator.parameters()]
    # reference: the plain discriminator CE, no reversal
    z2 = z.detach().clone().requires_grad_(True)
    for p in penalty.discriminator.parameters():
        p.grad = None
    F.cross_entropy(penalty.discriminator(z2), batch.task).backward()
    assert torch.allclose(grad_z, -0.5 * 3 * z2.grad, atol=1e-6)  # −λ·D times the discriminator's gradient
    assert all(torch.allclose(a, p.grad) for a, p in zip(grad_d, penalty.discriminator.parameters(), strict=True))
    assert dict(penalty.optimizer_options)["betas"] == (0.5, 0.9)


def _algorithm(method: dict, data_tasks=DOMAINS, setting="domain"):
    class _Data:
        tasks, num_tasks, in_channels, image_size = data_tasks, len(data_tasks), 3, (8, 8)

    _Data.setting = setting
    torch.manual_seed(0)
    algo = build_algorithm(method, {"name": "resnet18", "small_input": True}, _Data())
    algo.configure_optimizers({"name": "adam", "lr": 1e-3}, None, total_steps=10, steps_per_epoch=5)
    return algo


def test_dann_alternating_steps_update_discriminator_and_model_in_turn():
    method = {"architecture": {"name": "uniform"}, "weighting": {"name": "ew"}, "algorithm": {"name": "adversarial"},
              "penalties": {"dann": {"lam": 1.0}}}
    algo = _algorithm(method)
    disc = algo.penalties["dann"].discriminator
    snap = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))  # noqa: E731
    kinds = []
    for _ in range(4):
        d0, m0 = snap(disc), snap(algo.arch)
        logs = algo.update(_batch())
        kinds.append("D" if logs["adversary/d_step"] else "G")
        assert changed(d0, snap(disc)) == (kinds[-1] == "D")
        assert changed(m0, snap(algo.arch)) == (kinds[-1] == "G")
    assert kinds == ["G", "D", "G", "D"]  # u = 1, 2, 3, 4: a discriminator step when u mod 2 < 1 (DomainBed)
    assert algo.step_count == 4 and algo.describe()["adversarial"]["d_steps"] == 2


def test_selfreg_pairs_within_classes_and_equals_its_formula():
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    gen = torch.Generator().manual_seed(0)
    pi1, pi2 = class_permutations(y, gen)
    assert torch.equal(y[pi1], y) and torch.equal(y[pi2], y)
    assert sorted(pi1.tolist()) == list(range(6))
    torch.manual_seed(0)
    z, o, p = torch.randn(6, 4), torch.randn(6, 3), torch.randn(6, 4)
    lam = 0.3
    expected = lam * (((o - o[pi1]) ** 2).mean() + 0.3 * ((z - p[pi1]) ** 2).mean()) + (1 - lam) * (
        ((o - (lam * o[pi1] + (1 - lam) * o[pi2])) ** 2).mean() + 0.3 * ((z - (lam * p[pi1] + (1 - lam) * p[pi2])) ** 2).mean()
    )
    assert float(selfreg_term(z, o, p, pi1, pi2, lam)) == pytest.approx(float(expected), rel=1e-6)


def test_selfreg_penalty_scales_by_the_domains_and_the_capped_ce():
    arch = _arch()
    penalty = PENALTIES.build("selfreg", arch=arch, tasks=DOMAINS).eval()
    batch = _batch()
    fwd = arch(batch.x, batch.task)
    losses = torch.tensor([0.2, 0.4, 0.6])
    draws = (torch.tensor([3, 1, 2, 0, 4, 5]), torch.tensor([0, 4, 5, 3, 1, 2]), 0.4)
    value = penalty(PenaltyContext(batch, fwd, losses), draws=draws)
    o = torch.zeros(6, fwd.outputs[0].shape[1])
    for out, idx in zip(fwd.outputs, fwd.groups, strict=True):
        o[idx] = out
    z = fwd.representation
    expected = 3 * 0.4 * selfreg_term(z, o, penalty.cdpl(z), draws[0], draws[1], 0.4)  # c = min(mean CE, 1) = 0.4
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_mmd_aae_terms_and_discriminator_loss_follow_the_spec():
    method = {"architecture": {"name": "coded", "base": "uniform", "code_dim": 16}, "weighting": {"name": "ew"},
              "algorithm": {"name": "adversarial", "schedule": "each_step"}, "penalties": {"mmd_aae": {}}}
    algo = _algorithm(method)
    penalty = algo.penalties["mmd_aae"].eval()
    batch = _batch()
    fwd = algo.arch.eval()(batch.x, batch.task)
    h, f = fwd.representation, fwd.aux["features"]
    assert h.shape == (6, 16) and f.shape == (6, 512)
    ctx = PenaltyContext(batch, fwd, torch.zeros(3))
    terms = {k: v.detach() for k, v in penalty.terms(ctx).items()}
    h, f = h.detach(), f.detach()
    assert float(terms["ae"]) == pytest.approx(float(((penalty.decoder(h) - f) ** 2).mean()), rel=1e-6)
    assert float(terms["adv"]) == pytest.approx(float(((penalty.discriminator(h) - 1) ** 2).mean()), rel=1e-6)
    assert float(terms["mmd"]) == pytest.approx(float(pairwise_mmd2(h, batch.task, 3, mmd_aae_kernel)[0]), rel=1e-6)
    total = penalty(ctx)
    assert float(total) == pytest.approx(3 * (0.1 * float(terms["ae"]) + 2.0 * float(terms["mmd"]) + 0.1 * float(terms["adv"])), rel=1e-5)
    torch.manual_seed(5)
    d_loss = penalty.discriminator_loss(ctx)
    torch.manual_seed(5)
    prior = torch.distributions.Laplace(torch.zeros(()), torch.ones(())).sample(h.shape)
    expected = penalty.discriminator(h).pow(2).mean() + (penalty.discriminator(prior) - 1).pow(2).mean()
    assert float(d_loss) == pytest.approx(float(expected), rel=1e-6)
    # each_step: every update is a generator step then a discriminator step
    logs = algo.update(_batch())
    assert "adversary/d_loss" in logs and algo.d_steps == 1


def test_settings_a_method_cannot_serve_are_one_line_errors():
    tasks = [TaskSpec("a", 3), TaskSpec("b", 5)]
    with pytest.raises(ConfigError, match="one label space"):
        PENALTIES.build("selfreg", arch=_arch(setting="multi_input", tasks=tasks), tasks=tasks)
    with pytest.raises(ConfigError, match=r"algorithm\.name=adversarial"):
        _algorithm({"architecture": {"name": "coded"}, "weighting": {"name": "ew"}, "penalties": {"mmd_aae": {}}})
    with pytest.raises(ConfigError, match="code layer"):
        _algorithm({"architecture": {"name": "uniform"}, "weighting": {"name": "ew"}, "algorithm": {"name": "adversarial"},
                    "penalties": {"mmd_aae": {}}})
    with pytest.raises(ConfigError, match="adversary penalty"):
        _algorithm({"architecture": {"name": "uniform"}, "weighting": {"name": "ew"}, "algorithm": {"name": "adversarial"}, "penalties": {}})
    with pytest.raises(ConfigError, match="does not take"):
        _algorithm({"architecture": {"name": "uniform"}, "weighting": {"name": "ew"}, "algorithm": {"name": "adversarial", "steps": 2},
                    "penalties": {"dann": {}}})
    with pytest.raises(ConfigError, match="lambda_schedule"):
        PENALTIES.build("dann", arch=_arch(), tasks=DOMAINS, lambda_schedule="fast")
    assert "adversarial" in ALGORITHMS and "multitask" in ALGORITHMS


@pytest.mark.slow
def test_dg_methods_run_end_to_end_and_rows_say_which_head(tmp_path):
    from tests.cli import SMOKE, records, train

    from molabench.report.tables import main as tables_main

    for extra in (["method=mmd_aae"], ["method=dann", "method.architecture.name=hps"]):
        proc = train(*SMOKE, "data=shapes_domains", *extra, results=tmp_path)
        assert proc.returncode == 0, proc.stderr
    heads = {r["method"]: r["gradients"]["head"] for r in records(tmp_path)}
    assert heads == {"mmd_aae": "shared", "dann": "per_task"}
    assert tables_main(["--results", str(tmp_path), "--out", str(tmp_path / "tables")]) == 0
    text = "".join(p.read_text() for p in (tmp_path / "tables").glob("*.md"))
    assert "mmd_aae (shared head)" in text and "dann (per-domain heads)" in text
