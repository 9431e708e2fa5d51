"""Properties of the gradient-combination methods on random task-gradient matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molabench.weighting import build
from molabench.weighting.aligned_mtl import balance_transform
from molabench.weighting.cagrad import cagrad_dual

GRADIENT_METHODS = ["mgda", "pcgrad", "cagrad", "graddrop", "gradvac", "imtl", "nash_mtl", "aligned_mtl"]


@st.composite
def gradient_matrices(draw: st.DrawFn, min_tasks: int = 2, max_tasks: int = 5) -> torch.Tensor:
    T = draw(st.integers(min_tasks, max_tasks))
    P = draw(st.integers(T, 3 * T + 2))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(T, 1, generator=g, dtype=torch.float64))  # unequal magnitudes
    return torch.randn(T, P, generator=g, dtype=torch.float64) * scales


@settings(max_examples=60, deadline=None)
@given(gradient_matrices())
def test_mgda_is_min_norm_point_of_the_convex_hull(G: torch.Tensor) -> None:
    mgda = build("mgda")
    d = mgda.aggregate(G)
    alpha = mgda.last_weights.double()
    assert alpha.min() >= 0 and abs(float(alpha.sum()) - 1) < 1e-9
    assert torch.allclose(d, alpha @ G)
    # KKT of min |G^T a|^2 on the simplex: g_i.d >= |d|^2, with equality where a_i > 0.
    gd, dd = G @ d, d @ d
    tol = 1e-7 * float((G * G).sum(1).max())
    assert (gd >= dd - tol).all()
    assert ((gd - dd).abs()[alpha > 1e-6] <= tol).all()


@settings(max_examples=40, deadline=None)
@given(gradient_matrices(2, 2))
def test_pcgrad_two_tasks_closed_form(G: torch.Tensor) -> None:
    g1, g2 = G
    dot = g1 @ g2
    expected = g1 + g2
    if dot < 0:
        expected = g1 - dot / (g2 @ g2) * g2 + g2 - dot / (g1 @ g1) * g1
    assert torch.allclose(build("pcgrad").aggregate(G), expected, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(gradient_matrices(3, 6))
def test_pcgrad_equals_algorithm_1_in_parameter_space(G: torch.Tensor) -> None:
    """Algorithm 1 of the paper, literally: project each g_i onto the normal plane of every
    conflicting g_j (j != i, random order), in P-space. Same permutations from the same seed."""
    torch.manual_seed(0)
    d = build("pcgrad").aggregate(G)
    torch.manual_seed(0)
    expected = torch.zeros_like(G[0])
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in torch.randperm(G.shape[0]).tolist():
            if j != i and g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        expected += g
    assert torch.allclose(d, expected, atol=1e-9 * float(G.norm()))


@settings(max_examples=60, deadline=None)
@given(gradient_matrices())
def test_imtl_g_equal_projections_on_unit_gradients(G: torch.Tensor) -> None:
    imtl = build("imtl", loss_scaling=False)
    d = imtl.aggregate(G)
    proj = (G / G.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(proj, proj.mean().expand_as(proj), rtol=1e-6, atol=1e-8 * float(G.norm()))
    assert abs(float(imtl.last_weights.sum()) - 1) < 1e-9


@settings(max_examples=60, deadline=None)
@given(gradient_matrices(), st.sampled_from(["min", "median", "rmse"]))
def test_aligned_mtl_aligned_matrix_has_condition_number_one(G: torch.Tensor, mode: str) -> None:
    B = balance_transform(G @ G.T, mode)
    s = torch.linalg.svdvals(B @ G)
    s = s[s > s.max() * 1e-9]
    assert float(s.max() / s.min()) == pytest.approx(1.0, abs=1e-6)
    d = build("aligned_mtl", scale_mode=mode).aggregate(G)
    assert torch.allclose(d, (B @ G).sum(0), atol=1e-9 * float(G.norm()))


@settings(max_examples=60, deadline=None)
@given(gradient_matrices())
def test_nash_mtl_weights_solve_the_bargaining_equation(G: torch.Tensor) -> None:
    nash = build("nash_mtl", max_norm=0.0)
    d = nash.aggregate(G)
    alpha = nash.last_weights.double()
    M = G @ G.T
    if torch.linalg.matrix_rank(G) == G.shape[0]:  # solution exists for independent gradients
        assert (alpha > 0).all()
        assert torch.allclose(M @ alpha, 1 / alpha, rtol=1e-4)
        assert torch.allclose(d, alpha @ G)


def test_nash_mtl_clips_to_max_norm() -> None:
    G = torch.randn(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1e-3
    assert float(build("nash_mtl", max_norm=1.0).aggregate(G).norm()) <= 1.0 + 1e-6


@settings(max_examples=40, deadline=None)
@given(gradient_matrices(), st.floats(0.1, 0.9))
def test_cagrad_solves_its_dual(G: torch.Tensor, c: float) -> None:
    from scipy.optimize import minimize

    M = (G @ G.T).numpy()
    T = M.shape[0]
    b = np.full(T, 1 / T)
    radius = c * np.sqrt(b @ M @ b)

    def dual(w: np.ndarray) -> float:
        return float(w @ M @ b + radius * np.sqrt(max(w @ M @ w, 0.0)))

    w, _ = cagrad_dual(M, c)
    ref = minimize(dual, b, bounds=[(0, 1)] * T, constraints={"type": "eq", "fun": lambda x: 1 - x.sum()}, method="SLSQP")
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    assert dual(w) <= dual(ref.x) + 1e-6 * abs(dual(ref.x)) + 1e-9
    # Primal: d = g0 + c|g0| g_w/|g_w| lies on the ball's boundary (before the 1/(1+c^2) rescale).
    d = build("cagrad", c=c, rescale=0).aggregate(G)
    g0 = G.mean(0)
    assert float((d - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-4)
    assert torch.allclose(build("cagrad", c=c).aggregate(G), d / (1 + c**2))


# IMTL-G's equal projections can share a negative sign (see weighting/imtl.py and the test below).
NON_CONFLICTING = [name for name in GRADIENT_METHODS if name != "imtl"]


@settings(max_examples=40, deadline=None)
@given(gradient_matrices(), st.sampled_from(NON_CONFLICTING))
def test_direction_never_conflicts_with_every_task(G: torch.Tensor, name: str) -> None:
    torch.manual_seed(0)
    d = build(name, num_tasks=G.shape[0], **({"max_norm": 0.0} if name == "nash_mtl" else {})).aggregate(G)
    assert not bool((G @ d < -1e-12 * float(G.norm() ** 2)).all())


def test_imtl_g_projections_are_equal_and_may_all_be_negative() -> None:
    # 1^T M^+ n < 0 here, so the common projection 1/(1^T M^+ n) is negative: IMTL-G's own formula.
    G = torch.tensor([[-0.5969, 0.4214, -1.4287], [-0.4285, 0.3693, -0.3063], [-2.9318, 10.6190, -1.2374]], dtype=torch.float64)
    d = build("imtl", loss_scaling=False).aggregate(G)
    projections = G @ d / G.norm(dim=1)
    assert torch.allclose(projections, projections[0].expand(3), rtol=1e-9)
    M = G @ G.T
    expected = 1 / float(torch.ones(3, dtype=torch.float64) @ torch.linalg.pinv(M) @ G.norm(dim=1))
    assert float(projections[0]) == pytest.approx(expected, rel=1e-9) and expected < 0


def test_gradvac_keeps_state_between_calls() -> None:
    gv = build("gradvac", beta=0.5, num_tasks=2)
    G = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # cosine 0.6
    gv.aggregate(G)
    first = gv.target_similarity.clone()
    assert first[0, 1] == pytest.approx(0.3) and first[1, 0] == pytest.approx(0.3)
    gv.aggregate(G)
    assert gv.target_similarity[0, 1] == pytest.approx(0.45)


def test_gradvac_raises_similarity_to_target() -> None:
    gv = build("gradvac", beta=0.01, num_tasks=2)
    gv.target_similarity.fill_(0.5)
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # orthogonal: below the 0.5 target
    gv.weights_from_gramian(G @ G.T, torch.arange(2), None)
    torch.manual_seed(0)
    gv.target_similarity.fill_(0.5)
    w = gv.weights_from_gramian(G @ G.T, torch.arange(2), None)
    # each adjusted gradient now has cosine 0.5 with the other task: g_i + k g_j with k = 1/sqrt(3)
    assert torch.allclose(w, torch.full((2,), 1 + 1 / np.sqrt(3), dtype=torch.float64))


def test_graddrop_keeps_one_sign_per_unit() -> None:
    torch.manual_seed(0)
    G = torch.tensor([[1.0, -2.0, 3.0], [-1.0, -1.0, 1.0]])
    for _ in range(20):
        d = build("graddrop", level="parameters").aggregate(G)
        assert d[1] == -3.0 and d[2] == 4.0  # units with pure signs pass untouched
        assert d[0] in (1.0, -1.0)  # a mixed unit keeps one sign only


# ------------------------------------------------------------- the exact simplex solvers

def _kkt_min_norm(M: np.ndarray, a: np.ndarray) -> None:
    """KKT of min a^T M a on the simplex: (M a)_j >= a^T M a, with equality where a_j > 0."""
    Ma, value = M @ a, a @ M @ a
    tol = 1e-9 * float(np.abs(M).max())
    assert a.min() >= 0 and abs(a.sum() - 1) < 1e-12
    assert (Ma >= value - tol).all()
    assert (np.abs(Ma - value)[a > 1e-9] <= tol).all()


@pytest.mark.parametrize(
    "G",
    [
        np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),  # a duplicated gradient
        np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]),  # a zero gradient: the min-norm point is 0
        np.array([[1.0, 1.0], [-1.0, -1.0]]),  # opposed
        np.array([[2.0, 0.0, 0.0]]),  # one task
    ],
    ids=["duplicate", "zero", "opposed", "one-task"],
)
def test_min_norm_weights_degenerate_hulls(G: np.ndarray) -> None:
    from molabench.weighting.simplex import min_norm_weights

    M = G @ G.T
    a = min_norm_weights(M)
    _kkt_min_norm(M, a)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_min_norm_weights_more_tasks_than_dimensions(T: int, P: int, seed: int) -> None:
    """Wolfe's algorithm on affinely dependent points (T > P + 1 is common for tiny heads)."""
    from molabench.weighting.simplex import min_norm_weights

    rng = np.random.default_rng(seed)
    G = rng.standard_normal((T, P)) * np.exp(rng.standard_normal((T, 1))) + rng.standard_normal(P)
    M = G @ G.T
    _kkt_min_norm(M, min_norm_weights(M))


@settings(max_examples=60, deadline=None)
@given(gradient_matrices(2, 9), st.floats(0.05, 5.0))
def test_simplex_qp_is_the_projected_gradient_fixed_point(G: torch.Tensor, k: float) -> None:
    """w* = argmin (A u).w + k w^T A w on the simplex iff w* = proj(w* - step * grad) for a step > 0."""
    from molabench.weighting.simplex import project_simplex, simplex_qp

    A = (G @ G.T).numpy()
    A = A / np.abs(A).max()
    u = np.full(A.shape[0], 1.0 / A.shape[0])
    w = simplex_qp(A, u, k)
    grad = A @ u + 2 * k * A @ w
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
    assert np.abs(project_simplex(w - 0.1 * grad) - w).max() < 1e-9
