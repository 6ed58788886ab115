"""Spectral ops: normalized_laplacian, eigh, spectral_filter against their references, gradients
(gradcheck, repeated eigenvalues), opcheck, torch.compile, empty and bad input, on every device (the
``device`` fixture: the CPU, and CUDA where present). Inputs are made on the CPU and moved; on CUDA the
results also meet the CPU op's, to the tighter tolerances of two runs of the same formulas."""
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import deephash_ext as dh
from deephash_ext import reference as R
from op_inputs import BASES, F64, random_adjacency, spectral_inputs, to, twin_graph

CROSS_DEVICE = dict(atol=1e-9, rtol=1e-7)  # float64 results of the CUDA op against the CPU op's


# ------------------------------------------------------------------------------------------------
# normalized_laplacian


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("Bt,n,isolated", [(4, 9, [(0, 2), (3, 0), (3, 8)]), (5, 33, [(0, 2), (4, 32)])])
def test_normalized_laplacian_matches_reference(dtype, Bt, n, isolated, device):
    A = random_adjacency(Bt, n, dtype, isolated=isolated)
    L = dh.normalized_laplacian(A.to(device)).cpu()
    torch.testing.assert_close(L, R.normalized_laplacian(A))
    # Degree-0 nodes: identity row and column.
    e = torch.eye(n, dtype=dtype)
    for b, i in isolated:
        torch.testing.assert_close(L[b, i], e[i])
        torch.testing.assert_close(L[b, :, i], e[i])
    assert torch.equal(L, L.mT)
    # The gradient, isolated nodes included.
    G = torch.randn_like(A)
    Ad = A.to(device).requires_grad_()
    (g,) = torch.autograd.grad((dh.normalized_laplacian(Ad) * G.to(device)).sum(), Ad)
    Ar = A.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad((R.normalized_laplacian(Ar) * G).sum(), Ar)
    torch.testing.assert_close(g.cpu(), g_ref)


def test_normalized_laplacian_gradient(device):
    A = torch.rand(2, 6, 6, dtype=F64) + 0.1  # positive: gradcheck's perturbations stay valid
    A = (A + A.mT).to(device).requires_grad_()
    assert gradcheck(dh.normalized_laplacian, (A,))
    gy = torch.randn(2, 6, 6, dtype=F64, device=device)
    (g1,) = torch.autograd.grad(dh.normalized_laplacian(A), A, gy)
    (g2,) = torch.autograd.grad(R.normalized_laplacian(A), A, gy)
    torch.testing.assert_close(g1, g2)


def test_normalized_laplacian_isolated_node_gradient_is_zero(device):
    """Row 1 of A (the isolated node's degree) gets 0; column 1 still moves the other degrees."""
    A = random_adjacency(1, 5, isolated=[(0, 1)]).to(device).requires_grad_()
    (g,) = torch.autograd.grad(dh.normalized_laplacian(A).square().sum(), A)
    assert torch.isfinite(g).all()
    assert (g[0, 1] == 0).all()
    (g_ref,) = torch.autograd.grad(R.normalized_laplacian(A).square().sum(), A)
    torch.testing.assert_close(g, g_ref)


# ------------------------------------------------------------------------------------------------
# eigh


def check_eigh(L, w, V, tol_w, tol_V):
    """Ascending values within tol_w of the reference's, orthonormal vectors, V diag(w) Vᵀ = L."""
    Bt, n = L.shape[0], L.shape[1]
    assert w.shape == (Bt, n) and V.shape == (Bt, n, n)
    assert (w[:, 1:] >= w[:, :-1]).all()
    torch.testing.assert_close(w, R.eigh(L)[0], atol=tol_w, rtol=0)
    torch.testing.assert_close(V.mT @ V, torch.eye(n, dtype=L.dtype).expand(Bt, n, n), atol=tol_V, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (F64, 1e-11)])
@pytest.mark.parametrize("n", [1, 2, 5, 33, 64, 70, 160, 161])  # 161: past the small-matrix solver, LAPACK
def test_eigh_matches_reference(dtype, tol, n, device):
    g = torch.Generator().manual_seed(n)
    L = torch.randn(13, n, n, generator=g, dtype=F64)
    L = (L + L.mT).to(dtype)
    w, V = (t.cpu() for t in dh.eigh(L.to(device)))
    check_eigh(L, w, V, tol * n, tol * n)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=tol * n * 4, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-4), (F64, 1e-10)])
@pytest.mark.parametrize("n", [1, 2, 5, 32, 33, 64, 128, 200])
def test_eigh_laplacians(dtype, tol, n, device):
    L = dh.normalized_laplacian(random_adjacency(6, n, dtype, seed=n))
    w, V = (t.cpu() for t in dh.eigh(L.to(device)))
    check_eigh(L, w, V, tol, tol * 10)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=tol * 10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_eigh_repeated_eigenvalues_and_zero_blocks(dtype, device):
    L = torch.zeros(3, 7, 7, dtype=dtype)
    L[0] = dh.normalized_laplacian(twin_graph(dtype))[0]
    L[1, :3, :3] = torch.eye(3, dtype=dtype)  # already diagonal, zero rows after
    w, V = (t.cpu() for t in dh.eigh(L.to(device)))
    tol = dict(atol=1e-10, rtol=0) if dtype == F64 else {}
    torch.testing.assert_close(w, R.eigh(L)[0], **tol)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, **tol)
    torch.testing.assert_close(V.mT @ V, torch.eye(7, dtype=dtype).expand(3, 7, 7))


@pytest.mark.parametrize("n", [150, 170])  # the CPU's own solver, and LAPACK
def test_eigh_many_repeated_eigenvalues(n, device):
    # Two identical components: every eigenvalue twice, each pair's eigenvectors only defined up
    # to a rotation inside their plane; the solver must still return an orthonormal basis.
    A = random_adjacency(1, n // 2, seed=n)[0]
    L = dh.normalized_laplacian(torch.block_diag(A, A)[None])
    w, V = (t.cpu() for t in dh.eigh(L.to(device)))
    torch.testing.assert_close(w[0, 0::2], w[0, 1::2], atol=1e-10, rtol=0)
    torch.testing.assert_close(V.mT @ V, torch.eye(n, dtype=F64)[None], atol=1e-10, rtol=0)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------------------------
# spectral_filter forward


@pytest.mark.parametrize("basis,K", BASES)
@pytest.mark.parametrize("per_graph", [False, True])
def test_spectral_filter_matches_reference(basis, K, per_graph, device):
    x, L, theta = spectral_inputs(Bt=5, n=11, d=6, K=K, per_graph=per_graph)
    y = dh.spectral_filter(*to(device, x, L, theta), basis).cpu()
    torch.testing.assert_close(y, R.spectral_filter(x, L, theta, basis))


@pytest.mark.parametrize("basis,K", BASES)
def test_spectral_filter_float32(basis, K, device):
    x, L, theta = spectral_inputs(Bt=4, n=16, d=8, K=K, dtype=torch.float32)
    y = dh.spectral_filter(*to(device, x, L, theta), basis).cpu()
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), R.spectral_filter(x.double(), L.double(), theta.double(), basis),
                               atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("basis,K", BASES)
def test_spectral_filter_float32_gradient(basis, K, device):
    """float32 gradients (near-tie width 1e-3) against the float64 kernel."""
    x, L, theta = spectral_inputs(Bt=3, n=12, d=5, K=K, seed=6)
    L = 0.9 * L + 0.05 * torch.eye(12, dtype=F64)
    gy = torch.randn_like(x)
    grads = []
    for dtype in (torch.float32, F64):
        args = [t.to(device, dtype).requires_grad_() for t in (x, L, theta)]
        grads.append(torch.autograd.grad(dh.spectral_filter(*args, basis), args, gy.to(device, dtype)))
    for a, b in zip(*grads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("K", [4, 5, 9])
def test_spline_basis_matches_scipy(K, device):
    """Filtering the identity with θ = e_k gives Q diag(φ_k(λ)) Qᵀ, so the kernel's basis values can
    be read off and compared with scipy's design matrix, at the knots, the ends and between."""
    from scipy.interpolate import BSpline

    n = 12
    lam = np.r_[0.0, 2.0, np.linspace(0, 2, K - 2)[1:-1], np.random.default_rng(K).uniform(0, 2, n)][:n]
    lam = np.sort(np.r_[lam, np.linspace(0.05, 1.95, n)][:n])
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(1)))
    L = (Q @ torch.diag(torch.tensor(lam)) @ Q.T)[None]
    L = (L + L.mT) / 2
    t = np.r_[[0.0] * 3, np.linspace(0, 2, K - 2), [2.0] * 3]
    design = BSpline.design_matrix(lam, t, 3).toarray()  # [n, K]
    x = torch.eye(n, dtype=F64)[None]
    for k in range(K):
        theta = torch.zeros(K, dtype=F64)
        theta[k] = 1
        y = dh.spectral_filter(*to(device, x, L, theta), "spline")[0].cpu()
        phi = torch.diagonal(Q.T @ y @ Q).numpy()
        np.testing.assert_allclose(phi, design[:, k], atol=1e-10)


def test_spline_clamps_eigenvalues(device):
    """A Laplacian with eigenvalues slightly outside [0, 2] filters like the clamped one."""
    n = 5
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(2)))
    lam = torch.tensor([-1e-3, 0.5, 1.0, 1.5, 2.001], dtype=F64)
    L = (Q @ torch.diag(lam) @ Q.T)[None]
    L = (L + L.mT) / 2
    Lc = (Q @ torch.diag(lam.clamp(0, 2)) @ Q.T)[None]
    Lc = (Lc + Lc.mT) / 2
    x, theta = torch.randn(1, n, 3, dtype=F64), torch.randn(6, dtype=F64)
    torch.testing.assert_close(dh.spectral_filter(*to(device, x, L, theta), "spline"),
                               dh.spectral_filter(*to(device, x, Lc, theta), "spline"))


# ------------------------------------------------------------------------------------------------
# spectral_filter backward


@pytest.mark.parametrize("basis,K", BASES)
@pytest.mark.parametrize("per_graph", [False, True])
def test_spectral_filter_gradcheck(basis, K, per_graph, device):
    x, L, theta = spectral_inputs(Bt=2, n=6, d=3, K=K, per_graph=per_graph)
    # Spline: eigenvalues inside (0, 2), away from the clamp, where g is smooth in L.
    L = 0.9 * L + 0.05 * torch.eye(6, dtype=F64)
    args = tuple(t.to(device).requires_grad_() for t in (x, L, theta))
    assert gradcheck(lambda x, L, t: dh.spectral_filter(x, L, t, basis), args, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("basis,K", BASES)
@pytest.mark.parametrize("per_graph", [False, True])
def test_spectral_filter_gradient_matches_reference(basis, K, per_graph, device):
    x, L, theta = spectral_inputs(Bt=3, n=9, d=4, K=K, per_graph=per_graph, seed=3)
    # Away from λ = 0 and 2, where the reference's clamp has derivative 0 (the kernel's is one-sided).
    L = 0.9 * L + 0.05 * torch.eye(9, dtype=F64)
    gy = torch.randn_like(x)

    def outputs(f, dev):
        args = [t.to(dev).requires_grad_() for t in (x, L, theta)]
        y = f(*args, basis)
        return [t.cpu() for t in (y, *torch.autograd.grad(y, args, gy.to(dev)))]

    got = outputs(dh.spectral_filter, device)
    for a, b in zip(got, outputs(R.spectral_filter, "cpu")):
        torch.testing.assert_close(a, b)
    if device != "cpu":
        for a, b in zip(got, outputs(dh.spectral_filter, "cpu")):
            torch.testing.assert_close(a, b, **CROSS_DEVICE)


@pytest.mark.parametrize("basis,K,shift", [("chebyshev", 6, False), ("chebyshev", 6, True), ("spline", 7, True)])
def test_L_gradient_on_repeated_eigenvalues(basis, K, shift, device):
    """Every eigenvalue of the twin graph is repeated. g(L) is smooth in L there (a polynomial for
    chebyshev; spline away from its clamp, hence the shift into (0, 2)), so finite differences are
    well defined; differentiating through the eigenvectors gives NaN/inf, Daleckii–Krein does not."""
    L = dh.normalized_laplacian(twin_graph())
    if shift:
        L = 0.9 * L + 0.05 * torch.eye(7, dtype=F64)
    w = torch.linalg.eigvalsh(L)
    assert (w[0, 1:] - w[0, :-1]).abs().min() < 1e-12  # really repeated
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 7, 3, generator=g, dtype=F64)
    theta = torch.randn(K, generator=g, dtype=F64)
    x, L, theta = to(device, x, L, theta)
    Lr = L.clone().requires_grad_()
    y = dh.spectral_filter(x, Lr, theta, basis)
    gy = torch.randn(y.shape, generator=g, dtype=F64).to(device)
    (gL,) = torch.autograd.grad(y, Lr, gy)
    assert torch.isfinite(gL).all()
    # Central differences along random symmetric directions.
    h = 1e-5
    for _ in range(3):
        E = torch.randn(1, 7, 7, generator=g, dtype=F64).to(device)
        E = (E + E.mT) / 2
        fd = ((dh.spectral_filter(x, L + h * E, theta, basis) - dh.spectral_filter(x, L - h * E, theta, basis)) * gy).sum() / (2 * h)
        torch.testing.assert_close((gL * E).sum(), fd, atol=1e-7, rtol=1e-6)
    assert gradcheck(lambda L: dh.spectral_filter(x, L, theta, basis), (Lr,))


@pytest.mark.parametrize("basis,K", [("chebyshev", 5), ("spline", 6)])
def test_L_gradient_finite_on_repeated_eigenvalues_at_the_clamp(basis, K, device):
    """The twin graph unshifted: repeated eigenvalues, and λ = 0 exactly, where the spline clamps."""
    L = dh.normalized_laplacian(twin_graph())
    x = torch.randn(1, 7, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    theta = torch.randn(K, dtype=F64, generator=torch.Generator().manual_seed(8))

    def L_grad(dev):
        Lr = L.to(dev).requires_grad_()
        dh.spectral_filter(x.to(dev), Lr, theta.to(dev), basis).square().sum().backward()
        return Lr.grad.cpu()

    gL = L_grad(device)
    assert torch.isfinite(gL).all()
    if device != "cpu":
        torch.testing.assert_close(gL, L_grad("cpu"), **CROSS_DEVICE)


def test_fourier_repeated_eigenvalues(device):
    """Fourier is finite on ties, and exact where its gap condition holds: the twin graph's
    eigenvalues come in pairs, so K = 2 with θ_0 = θ_1 (the doubled 0) is a function of L."""
    L = dh.normalized_laplacian(twin_graph()).to(device)
    x = torch.randn(1, 7, 3, dtype=F64, generator=torch.Generator().manual_seed(5)).to(device)
    Lr = L.clone().requires_grad_()
    theta = torch.tensor([0.7, -1.3, 0.4], dtype=F64, device=device)  # violates the condition
    (gL,) = torch.autograd.grad(dh.spectral_filter(x, Lr, theta, "fourier").sum(), Lr)
    assert torch.isfinite(gL).all()
    theta = torch.tensor([0.7, 0.7], dtype=F64, device=device)
    assert gradcheck(lambda L: dh.spectral_filter(x, L, theta, "fourier"), (Lr,))


def test_backward_only_requested_gradients(device):
    x, L, theta = to(device, *spectral_inputs(Bt=2, n=6, d=3, K=5))
    Lr = L.clone().requires_grad_()
    (gL,) = torch.autograd.grad(dh.spectral_filter(x, Lr, theta, "chebyshev").sum(), Lr)
    xr = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(dh.spectral_filter(xr, L, theta, "chebyshev").sum(), xr)
    args = [t.clone().requires_grad_() for t in (x, L, theta)]
    full = torch.autograd.grad(dh.spectral_filter(*args, "chebyshev").sum(), args)
    torch.testing.assert_close(gx, full[0])
    torch.testing.assert_close(gL, full[1])


# ------------------------------------------------------------------------------------------------
# Empty inputs, opcheck, torch.compile, bad input


@pytest.mark.parametrize("basis,K", BASES)
@pytest.mark.parametrize("Bt,d", [(0, 4), (2, 0)])
def test_empty(basis, K, Bt, d, device):
    n = 5
    x = torch.randn(Bt, n, d, dtype=F64, device=device, requires_grad=True)
    L = dh.normalized_laplacian(random_adjacency(Bt, n).to(device)).requires_grad_()
    theta = torch.randn(K, dtype=F64, device=device, requires_grad=True)
    y = dh.spectral_filter(x, L, theta, basis)
    assert y.shape == (Bt, n, d)
    gx, gL, gt = torch.autograd.grad(y.sum(), (x, L, theta))
    assert gx.shape == x.shape and gL.shape == L.shape and gt.shape == theta.shape
    assert (gt == 0).all()
    w, V = dh.eigh(L.detach())
    assert w.shape == (Bt, n) and V.shape == (Bt, n, n)


def test_opcheck(device):
    from functools import partial

    from torch.library import opcheck

    if device == "emu":  # torch's autograd-registration check knows only CPU, CUDA and XPU tensors
        opcheck = partial(opcheck, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    A = random_adjacency(2, 5).to(device).requires_grad_()
    opcheck(torch.ops.deephash_ext.normalized_laplacian.default, (A,))
    opcheck(torch.ops.deephash_ext._normalized_laplacian_backward.default,
            (torch.randn(2, 5, 5, dtype=F64, device=device), A.detach()))
    opcheck(torch.ops.deephash_ext.eigh.default, (dh.normalized_laplacian(A.detach()),))
    for basis, K in BASES:
        x, L, theta = (t.to(device).requires_grad_() for t in spectral_inputs(Bt=2, n=6, d=3, K=K))
        opcheck(torch.ops.deephash_ext.spectral_filter.default, (x, L, theta, basis))
        opcheck(torch.ops.deephash_ext._spectral_filter_forward.default, (x, L, theta, basis))
        _, evals, evecs, zx = torch.ops.deephash_ext._spectral_filter_forward(x.detach(), L.detach(), theta.detach(), basis)
        for mask in ([True, True, True], [False, True, False]):
            opcheck(torch.ops.deephash_ext._spectral_filter_backward.default,
                    (torch.randn_like(x), x.detach(), zx, theta.detach(), evals, evecs, basis, mask))


def test_torch_compile_fullgraph():
    def f(x, A, t_cheb, t_four):
        L = dh.normalized_laplacian(A)
        return dh.spectral_filter(x, L, t_cheb, "chebyshev") + dh.spectral_filter(x, L, t_four, "fourier")

    A = torch.rand(2, 6, 6, dtype=F64) + 0.1
    A = A + A.mT
    x = torch.randn(2, 6, 3, dtype=F64)
    tc, tf = torch.randn(4, dtype=F64), torch.randn(2, 3, dtype=F64)
    eager = [t.clone().requires_grad_() for t in (x, A, tc, tf)]
    comp = [t.clone().requires_grad_() for t in (x, A, tc, tf)]
    y_e = f(*eager)
    y_c = torch.compile(f, fullgraph=True)(*comp)
    torch.testing.assert_close(y_c, y_e)
    for a, b in zip(torch.autograd.grad(y_c.sum(), comp), torch.autograd.grad(y_e.sum(), eager)):
        torch.testing.assert_close(a, b)


def test_bad_input(device):
    x, L, theta = to(device, *spectral_inputs(Bt=2, n=6, d=3, K=5))
    sf = dh.spectral_filter
    f64 = dict(dtype=F64, device=device)
    with pytest.raises(RuntimeError, match="square"):
        sf(x, L[:, :, :5], theta, "chebyshev")
    with pytest.raises(RuntimeError, match="symmetric"):
        sf(x, L + 0.1 * torch.triu(torch.ones(6, 6, **f64), 1), theta, "chebyshev")
    with pytest.raises(RuntimeError, match="batch size"):
        sf(x[:1], L, theta, "chebyshev")
    with pytest.raises(RuntimeError, match="nodes per graph"):
        sf(x[:, :5], L, theta, "chebyshev")
    with pytest.raises(RuntimeError, match="one row per graph"):
        sf(x, L, theta.expand(3, 5), "chebyshev")
    with pytest.raises(RuntimeError, match="K >= 4"):
        sf(x, L, theta[:3], "spline")
    with pytest.raises(RuntimeError, match="1 <= K <= n"):
        sf(x, L, torch.randn(7, **f64), "fourier")
    with pytest.raises(RuntimeError, match="basis must be"):
        sf(x, L, theta, "wavelet")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        sf(x.long(), L.long(), theta.long(), "chebyshev")
    with pytest.raises(RuntimeError, match="same dtype"):
        sf(x.float(), L, theta, "chebyshev")
    with pytest.raises(RuntimeError, match="symmetric"):
        dh.eigh(torch.randn(2, 4, 4, **f64))
    with pytest.raises(RuntimeError, match="finite"):
        dh.eigh(torch.full((1, 3, 3), float("nan"), **f64))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        dh.eigh(torch.ones(2, 4, 4, dtype=torch.int32, device=device))
    with pytest.raises(RuntimeError, match="square"):
        dh.eigh(torch.ones(2, 4, 3, **f64))
    with pytest.raises(RuntimeError, match="non-negative"):
        dh.normalized_laplacian(-torch.ones(1, 3, 3, **f64))
    with pytest.raises(RuntimeError, match="symmetric"):
        dh.normalized_laplacian(torch.triu(torch.ones(1, 3, 3, **f64)))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        dh.normalized_laplacian(torch.ones(1, 3, 3, dtype=torch.int64, device=device))


def test_mixed_devices_are_refused(device):
    # The CPU's other device is meta, whose fake kernels run the same checks.
    x, L, theta = to(device, *spectral_inputs())
    with pytest.raises(RuntimeError, match="same device"):
        dh.spectral_filter(x, L, theta.to("meta" if device == "cpu" else "cpu"), "chebyshev")
