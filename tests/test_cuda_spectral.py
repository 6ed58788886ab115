"""CUDA spectral kernels against the CPU ops. Skipped without a GPU and a CUDA build."""
import pytest
import torch
from torch.autograd import gradcheck

import deephash_ext as dh
from test_spectral import BASES, inputs, random_adjacency, twin_graph

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and dh.cuda_compiled()), reason="needs a GPU and a build with CUDA kernels"
)
F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_normalized_laplacian_cuda(dtype):
    A = random_adjacency(5, 33, dtype, isolated=[(0, 2), (4, 32)])
    torch.testing.assert_close(dh.normalized_laplacian(A.cuda()).cpu(), dh.normalized_laplacian(A))
    Ac, Ag = A.clone().requires_grad_(), A.cuda().requires_grad_()
    G = torch.randn_like(A)
    (dh.normalized_laplacian(Ac) * G).sum().backward()
    (dh.normalized_laplacian(Ag) * G.cuda()).sum().backward()
    torch.testing.assert_close(Ag.grad.cpu(), Ac.grad)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-4), (F64, 1e-10)])
@pytest.mark.parametrize("n", [1, 2, 5, 32, 33, 64, 128, 200])
def test_eigh_cuda(dtype, tol, n):
    L = dh.normalized_laplacian(random_adjacency(6, n, dtype, seed=n)).cuda()
    w, V = dh.eigh(L)
    w_cpu, _ = dh.eigh(L.cpu())
    torch.testing.assert_close(w.cpu(), w_cpu, atol=tol, rtol=0)
    assert bool((w[:, 1:] >= w[:, :-1]).all())
    eye = torch.eye(n, dtype=dtype, device="cuda").expand(6, n, n)
    torch.testing.assert_close(V.mT @ V, eye, atol=tol * 10, rtol=0)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=tol * 10, rtol=0)


def test_eigh_cuda_repeated_eigenvalues():
    L = dh.normalized_laplacian(twin_graph()).cuda()
    w, V = dh.eigh(L)
    torch.testing.assert_close(w.cpu(), dh.eigh(L.cpu())[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(V @ torch.diag_embed(w) @ V.mT, L, atol=1e-10, rtol=0)


@pytest.mark.parametrize("basis,K", BASES)
@pytest.mark.parametrize("per_graph", [False, True])
def test_spectral_filter_cuda_forward_backward(basis, K, per_graph):
    x, L, theta = inputs(Bt=4, n=12, d=5, K=K, per_graph=per_graph)
    outs = []
    for device in ("cpu", "cuda"):
        xs, Ls, ts = (t.to(device).requires_grad_() for t in (x, L, theta))
        y = dh.spectral_filter(xs, Ls, ts, basis)
        (y * torch.arange(y.numel(), device=device, dtype=y.dtype).reshape(y.shape).sin()).sum().backward()
        outs.append([t.detach().cpu() for t in (y, xs.grad, Ls.grad, ts.grad)])
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("basis,K", BASES)
def test_spectral_filter_cuda_gradcheck(basis, K):
    x, L, theta = (t.cuda().requires_grad_() for t in inputs(Bt=2, n=6, d=3, K=K))
    assert gradcheck(lambda a, b, c: dh.spectral_filter(a, b, c, basis), (x, L, theta), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("basis,K", [("chebyshev", 5), ("spline", 6)])
def test_spectral_filter_cuda_repeated_eigenvalues_finite(basis, K):
    L = dh.normalized_laplacian(twin_graph()).cuda().requires_grad_()
    x = torch.randn(1, 7, 3, dtype=F64, device="cuda")
    theta = torch.randn(K, dtype=F64, device="cuda")
    dh.spectral_filter(x, L, theta, basis).square().sum().backward()
    assert torch.isfinite(L.grad).all()
    Lc = L.detach().cpu().requires_grad_()
    dh.spectral_filter(x.cpu(), Lc, theta.cpu(), basis).square().sum().backward()
    torch.testing.assert_close(L.grad.cpu(), Lc.grad, atol=1e-9, rtol=1e-7)


def test_spectral_cuda_mixed_devices_refused():
    x, L, theta = inputs()
    with pytest.raises(RuntimeError, match="same device"):
        dh.spectral_filter(x.cuda(), L.cuda(), theta, "chebyshev")


def test_opcheck_cuda_spectral():
    x, L, theta = (t.cuda() for t in inputs(Bt=2, n=6, d=3, K=5))
    A = random_adjacency(2, 6).cuda()
    torch.library.opcheck(torch.ops.deephash_ext.normalized_laplacian.default, (A,))
    torch.library.opcheck(torch.ops.deephash_ext.eigh.default, (L,), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.deephash_ext._spectral_filter_forward.default, (x, L, theta, "chebyshev"),
                          test_utils=("test_schema", "test_faketensor"))
