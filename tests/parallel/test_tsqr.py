import numpy as np
from mpi4py import MPI

from pinn_lsr.parallel.tsqr import StreamingQR, tsqr, tsqr_r


def test_tsqr_single_rank_gives_orthonormal_q():
    A = np.random.default_rng(0).standard_normal((50, 7))
    Q, R = tsqr(A, MPI.COMM_SELF)
    np.testing.assert_allclose(Q @ R, A, atol=1e-12)
    np.testing.assert_allclose(Q.T @ Q, np.eye(7), atol=1e-12)
    assert np.all(np.diag(R) >= 0)


def test_streaming_r_equals_tsqr_r():
    A = np.random.default_rng(1).standard_normal((95, 6))
    stream = StreamingQR(6)
    for start in range(0, 95, 20):
        stream.add(A[start : start + 20])
    np.testing.assert_allclose(
        tsqr_r(stream.R, MPI.COMM_SELF), tsqr(A, MPI.COMM_SELF)[1], atol=1e-12
    )
    assert stream.n_rows == 95
