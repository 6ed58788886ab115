"""A float emulation of the CUDA Jacobi eigensolver (csrc/cuda/eigh_cuda.cu), step for step: the
round-robin pairs, the rotation test, the fused 2 x 2 block update with exact diagonal blocks, the
scaling and the stop on a sweep without rotation. For checking the algorithm's accuracy and sweep
counts without a GPU (slow: pure Python loops; n <= ~70).

    python benchmarks/jacobi_emulation.py 65
"""
import sys

import numpy as np


def circle(i, s, m):
    return 0 if i == 0 else 1 + (i - 1 + s) % (m - 1)


def jacobi(S, dtype):
    T = dtype; n = S.shape[0]; m = n + (n & 1); half = m // 2
    A = np.zeros((m, m), T); A[:n, :n] = S.astype(T)
    Vt = np.eye(m, dtype=T)
    amax = np.abs(A).max(); scale = amax if amax > 0 else T(1)
    A = (A / scale).astype(T)
    eps = np.finfo(T).eps
    floor_abs = T(eps * eps * np.sqrt((A[:n,:n].astype(T)**2).sum(dtype=T)))
    rel = T(eps / 128)
    sweeps = 0
    for sweep in range(40):
        rotated = False
        for step in range(m - 1):
            P = [circle(k, step, m) for k in range(half)]
            Q = [circle(m - 1 - k, step, m) for k in range(half)]
            cs = np.ones(half, T); sn = np.zeros(half, T); tn = np.zeros(half, T)
            for k in range(half):
                p, q = P[k], Q[k]
                apq, app, aqq = A[p, q], A[p, p], A[q, q]
                if abs(apq) > floor_abs and abs(apq) > rel * min(abs(app), abs(aqq)):
                    theta = T((aqq - app) / (T(2) * apq))
                    t = T((1 if theta >= 0 else -1) / (abs(theta) + np.hypot(T(1), theta)))
                    c = T(1 / np.sqrt(t * t + T(1))); s = T(t * c)
                    cs[k], sn[k], tn[k] = c, s, t; rotated = True
            An = A.copy()
            for I in range(half):
                p1, q1, c1, s1 = P[I], Q[I], cs[I], sn[I]
                for J in range(half):
                    s2 = sn[J]
                    if s1 == 0 and s2 == 0: continue
                    if I == J:
                        t = tn[I]; apq = A[p1, q1]
                        An[p1, p1] = A[p1, p1] - t * apq; An[q1, q1] = A[q1, q1] + t * apq
                        An[p1, q1] = 0; An[q1, p1] = 0; continue
                    p2, q2, c2 = P[J], Q[J], cs[J]
                    a, b, c, d = A[p1, p2], A[p1, q2], A[q1, p2], A[q1, q2]
                    r00 = c1*a - s1*c; r01 = c1*b - s1*d; r10 = s1*a + c1*c; r11 = s1*b + c1*d
                    An[p1, p2] = c2*r00 - s2*r01; An[p1, q2] = s2*r00 + c2*r01
                    An[q1, p2] = c2*r10 - s2*r11; An[q1, q2] = s2*r10 + c2*r11
            A = An.astype(T)
            for J in range(half):
                c, s = cs[J], sn[J]
                if s == 0: continue
                x = Vt[P[J], :n].copy(); y = Vt[Q[J], :n].copy()
                Vt[P[J], :n] = c*x - s*y; Vt[Q[J], :n] = s*x + c*y
        sweeps += 1
        if not rotated: break
    d = np.diag(A)[:n]
    order = np.lexsort((np.arange(n), d))
    w = d[order] * scale
    V = Vt[order, :n].T
    return w, V, sweeps


def lap(A):
    dg = A.sum(1); s = np.where(dg > 0, 1/np.sqrt(np.where(dg>0,dg,1)), 0)
    return np.eye(len(A)) - A * s[:, None] * s[None, :]


def main():
    rng = np.random.default_rng(0)
    cases = []
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    M = rng.standard_normal((n, n)); cases.append(("random", M + M.T))
    A = rng.random((n, n)); A = np.maximum(A, A.T) * (rng.random((n, n)) > .5); A = np.maximum(A, A.T); np.fill_diagonal(A, 0)
    cases.append(("laplacian", lap(A)))
    C = np.ones((n, n)) - np.eye(n); cases.append(("complete", lap(C)))
    St = np.zeros((n, n)); St[0, 1:] = St[1:, 0] = 1; cases.append(("star", lap(St)))
    cases.append(("ones", np.ones((n, n))))
    cases.append(("2x2 1e20", np.array([[0, 1e20], [1e20, 0]])))
    cases.append(("2x2 1e-24", np.array([[0, 1e-24], [1e-24, 0]])))
    cases.append(("random*1e30", (M + M.T) * 1e30))
    cases.append(("random*1e-30", (M + M.T) * 1e-30))
    Z = np.zeros((n, n)); cases.append(("zero", Z))
    two = np.zeros((n, n)); h = n // 2; two[:h, :h] = C[:h, :h]; two[h:, h:] = C[h:, h:]; cases.append(("two components", lap(two)))
    for dtype in (np.float32, np.float64):
        for name, S in cases:
            w, V, sw = jacobi(S, dtype)
            wr = np.linalg.eigvalsh(S.astype(np.float64))
            top = max(np.abs(wr).max(), 1e-300)
            nn = S.shape[0]
            werr = np.abs(w - wr).max() / top
            rec = np.abs(V @ np.diag(w) @ V.T - S).max() / top
            orth = np.abs(V.T @ V - np.eye(nn)).max()
            print(f"{dtype.__name__:8s} {name:15s} sweeps={sw:2d} werr={werr:.1e} rec={rec:.1e} orth={orth:.1e} finite={np.isfinite(w).all()}")


if __name__ == "__main__":
    main()
