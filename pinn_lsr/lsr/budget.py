"""Budget-aware rank: predict an LSR run's memory and seconds from measured unit costs.

A pilot measures, on this machine and model, the seconds of one Jacobian product per
(tangent × sample) in forward and reverse mode (for a Krylov subspace also those of the
one-tangent products it is built from), the float64 matrix-product, QR and matrix-vector
speeds, and the resident memory already in use; :class:`CostModel` turns them into the
memory (summed over ranks, bytes) and wall time (seconds) of a refinement of rank r with a
given engine, and :meth:`CostModel.largest_rank` finds the largest r inside a budget. The
predictions ignore Python overheads; the report of :func:`pinn_lsr.lsr.refine.refine` prints
them beside the measured figures.
"""

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from mpi4py import MPI

from pinn_lsr.lsr.jacobian import ModelJacobian
from pinn_lsr.lsr.residual import DataResidual
from pinn_lsr.lsr.subspace import SINGLE_PRODUCT_ROWS, random_matrix
from pinn_lsr.parallel.device import synchronize
from pinn_lsr.parallel.memory import local_peak_memory_mb

F32, F64 = 4, 8


@dataclass
class CostModel:
    """Unit costs and sizes of one refinement (sizes per rank: the largest share)."""

    engine: str  # lean | plain (randomized subspace)
    subspace: str  # randomized | krylov
    reduction: str  # qr | gram
    n_ranks: int
    n_params: int  # m
    n_outputs: int  # rows per sample
    n_samples: int  # samples of the reduced problem on the busiest rank
    n_sketch_samples: int  # samples of the range finder on the busiest rank
    n_probe_samples: int  # held-out samples scored at every rank (busiest rank)
    oversampling: int
    block_columns: int
    chunk_samples: int  # samples per forward-mode product chunk (its rows × r temporaries)
    jvp_seconds: float  # per tangent and sample
    vjp_seconds: float  # per cotangent and sample
    gemm_flops: float  # float64 matrix products, flop/s
    qr_flops: float  # float64 Householder QR, flop/s
    base_bytes: float  # resident memory before the refinement, summed over ranks
    krylov_seconds: float = 0.0  # krylov: one G and one Gᵀ product of a single vector, per sample
    krylov_jvp_seconds: float = (
        0.0  # krylov: the G product alone (held-out samples, early stopping)
    )
    gemv_flops: float = 0.0  # krylov: reorthogonalisation (products with the m × j basis), flop/s

    def memory_bytes(self, rank: int) -> float:
        """Peak resident memory of the whole run (all ranks), bytes."""
        k = min(rank + self.oversampling, self.n_params)
        m, n_sketch = self.n_params, self.n_sketch_samples * self.n_outputs
        n_chunk = self.chunk_samples * self.n_outputs
        if (
            self.subspace == "krylov"
        ):  # the basis (the model's dtype, float32 here), m-vectors, held-out G Q
            sketch = (
                F32 * m * rank
                + 8 * F64 * m
                + 2 * F32 * n_sketch
                + F32 * self.n_probe_samples * self.n_outputs * rank
            )
        elif self.engine == "lean":
            # Y and Bt (float32), a block of Ω and its product (twice each), a float64 row block,
            # k x k
            sketch = (
                F32 * (n_sketch * k + m * k)
                + 2 * F32 * m * self.block_columns
                + F64 * 8192 * k
                + 3 * F64 * k * k
            )
        else:
            # Ω, Y, three float64 n x k copies in TSQR; then Ω, Y, Bt, and in float64 Bt (QR's
            # input), Q_B, V, V / S
            sketch = max(
                F32 * (m * k + n_sketch * k) + 3 * F64 * n_sketch * k,
                F32 * (2 * m * k + n_sketch * k) + 4 * F64 * m * k,
            )
        # V, a chunk of G V (float32, twice while it is assembled) and [G V | f] in float64, the
        # accumulator
        buffer = 2 * (max(2 * (rank + 1), 4096) + rank + 1) if self.reduction == "qr" else 0
        reduced = (
            F32 * m * rank
            + (2 * F32 + F64) * n_chunk * (rank + 1)
            + F64 * buffer * (rank + 1)
            + F64 * (rank + 1) ** 2
        )
        probes = F32 * self.n_probe_samples * self.n_outputs * rank
        return self.base_bytes + self.n_ranks * (max(sketch, reduced) + probes)

    def seconds(self, rank: int) -> float:
        """Wall time of the refinement (the busiest rank), seconds."""
        k = min(rank + self.oversampling, self.n_params)
        m, n, n_sketch = (
            self.n_params,
            self.n_samples * self.n_outputs,
            self.n_sketch_samples * self.n_outputs,
        )
        products = (
            self.jvp_seconds * (self.n_samples + self.n_probe_samples) * rank
        )  # G V and the probes
        if (
            self.subspace == "krylov"
        ):  # one product each way per vector; at most two Gram–Schmidt passes
            products += rank * (
                self.krylov_seconds * self.n_sketch_samples
                + self.krylov_jvp_seconds * self.n_probe_samples
            )
            algebra = 4 * m * rank * rank / self.gemv_flops
        elif (
            self.engine == "lean"
        ):  # sketch and projection; BCGS2 on Y; Gram of a share of Bt's rows; V = Bt C
            products += (self.jvp_seconds + self.vjp_seconds) * self.n_sketch_samples * k
            algebra = (
                4 * n_sketch * k * k
                + 4 * n_sketch * k * 256
                + 2 * m * k * k / self.n_ranks
                + 2 * m * k * rank
            ) / self.gemm_flops
        else:  # sketch and projection; TSQR of Y and the explicit Q; QR of Bt; V = Q_B W
            products += (self.jvp_seconds + self.vjp_seconds) * self.n_sketch_samples * k
            algebra = (
                4 * n_sketch * k * k + 4 * m * k * k
            ) / self.qr_flops + 2 * m * k * rank / self.gemm_flops
        reduce = (
            2 * n * rank * rank / (self.qr_flops if self.reduction == "qr" else self.gemm_flops)
        )
        return products + algebra + reduce

    def largest_rank(self, *, memory_bytes: float | None, seconds: float | None, cap: int) -> int:
        """The largest r ≤ cap whose predicted memory and time fit the budget (0 if none)."""

        def fits(r):
            return (memory_bytes is None or self.memory_bytes(r) <= memory_bytes) and (
                seconds is None or self.seconds(r) <= seconds
            )

        low, high = 0, cap
        while low < high:  # both figures grow with r
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return low

    def as_dict(self) -> dict:
        return asdict(self)


MAX_CHUNK_ROWS = (
    32768  # samples × outputs per product chunk tried by fastest_chunks (memory of the temporaries)
)


def product_seconds(
    jacobian: ModelJacobian,
    mode: str,
    samples: int,
    tangents: int,
    *,
    warm_up: bool = True,
    repeats: int = 1,
) -> float:
    """Seconds per tangent and sample of one ``mode`` (jvp | vjp) product of ``tangents`` columns
    on the first ``samples`` inputs, in one chunk (after a warm-up call); the fastest of
    ``repeats`` timings. Local."""
    probe = ModelJacobian(
        jacobian.model,
        jacobian.inputs[:samples],
        index=jacobian.index,
        forward=jacobian.forward,
        chunk_samples=samples,
        chunk_tangents=jacobian.chunk_tangents,
        vjp_chunk_samples=samples,
    )
    if mode == "jvp":
        product, operand = (
            probe.jvp,
            random_matrix(
                jacobian.n_params, tangents, distribution="gaussian", seed=0, dtype=jacobian.dtype
            ),
        )
    else:
        product, operand = probe.vjp, torch.ones(probe.n_rows, tangents, dtype=jacobian.dtype)
    if warm_up:
        product(operand)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(operand)
        synchronize(jacobian.device)
        timings.append(time.perf_counter() - start)
    return min(timings) / (samples * tangents)


def fastest_chunks(
    jacobian: ModelJacobian,
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    first: int = 2,
    factor: int = 4,
    max_seconds: float = 60.0,
) -> dict:
    """Samples per chunk of the forward- and of the reverse-mode products, each the fastest
    measured per tangent and sample among ``first, first·factor, ...`` with the Jacobian's
    ``chunk_tangents`` (the best chunk depends on the whole batch, tangents × samples).

    Measured on this machine and model because the best sizes differ: a DeepONet recomputes its
    trunk for every chunk (larger is faster), an FNO's forward mode prefers small chunks, and
    every reverse-mode chunk pays an m × tangents parameter gradient. Sizes stop at
    ``MAX_CHUNK_ROWS`` rows, the smallest rank's sample count, or when the next one would take
    the search past ``max_seconds`` per direction (two timings each, predicted at the last
    measured speed). Each size is timed twice and the faster kept, so that a moment of other load
    on the machine does not decide. The slowest rank decides, so every rank gets the same sizes.
    Collective.
    """
    n_local = comm.allreduce(len(jacobian.inputs), op=MPI.MIN)
    limit = max(1, min(n_local, MAX_CHUNK_ROWS // jacobian.n_outputs))
    sizes = [min(first, limit)]
    while sizes[-1] < limit:
        sizes.append(min(sizes[-1] * factor, limit))
    tangents = jacobian.chunk_tangents
    best = {}
    for mode in ("jvp", "vjp"):
        timings, spent = [], 0.0
        for size in sizes:
            if timings and spent + 2 * timings[-1][0] * size * tangents > max_seconds:
                break
            start = time.perf_counter()
            seconds = product_seconds(
                jacobian, mode, size, tangents, warm_up=not timings, repeats=2
            )
            timings.append((comm.allreduce(seconds, op=MPI.MAX), size))
            spent = comm.allreduce(spent + time.perf_counter() - start, op=MPI.MAX)
        best[mode] = min(timings)[1]
    return {"chunk_samples": best["jvp"], "vjp_chunk_samples": best["vjp"]}


def _flop_rates() -> tuple[float, float]:
    """Measured float64 flop/s of a matrix product and of a Householder QR (local)."""
    A = np.random.default_rng(0).standard_normal((4096, 512))
    A.T @ A
    start = time.perf_counter()
    A.T @ A
    gemm = 2 * 4096 * 512**2 / (time.perf_counter() - start)
    start = time.perf_counter()
    np.linalg.qr(A, mode="r")
    qr = 2 * 4096 * 512**2 / (time.perf_counter() - start)
    return gemm, qr


def _gemv_flops(dtype: torch.dtype) -> float:
    """Measured flop/s of a product of a tall (65536 × 512) matrix in ``dtype`` with a vector
    (memory-bound, as the Krylov reorthogonalisation is). Local."""
    Q, w = torch.randn(65536, 512, dtype=dtype), torch.randn(65536, dtype=dtype)
    Q.T @ w
    start = time.perf_counter()
    for _ in range(4):
        Q.T @ w
    return 4 * 2 * Q.numel() / (time.perf_counter() - start)


def measure_costs(
    residual: DataResidual,
    *,
    n_sketch_samples: int,
    n_probe_samples: int,
    engine: str,
    subspace: str = "randomized",
    reduction: str,
    oversampling: int,
    block_columns: int,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> CostModel:
    """Time one Jacobian product each way on a chunk of this rank's samples (after a warm-up),
    the one-tangent products of a Krylov basis (``subspace="krylov"``) and the float64 kernels,
    and read the memory in use. Collective; a few seconds."""
    jacobian = residual.jacobian
    tangents = 2 * jacobian.chunk_tangents
    jvp = product_seconds(
        jacobian, "jvp", min(len(jacobian.inputs), jacobian.chunk_samples), tangents
    )
    vjp = product_seconds(
        jacobian, "vjp", min(len(jacobian.inputs), jacobian.vjp_chunk_samples), tangents
    )
    krylov_jvp = krylov_vjp = gemv = 0.0
    if subspace == "krylov":
        chunk = max(1, min(len(jacobian.inputs), SINGLE_PRODUCT_ROWS // jacobian.n_outputs))
        krylov_jvp, krylov_vjp = (
            product_seconds(jacobian, mode, chunk, 1) for mode in ("jvp", "vjp")
        )
        gemv = comm.allreduce(_gemv_flops(jacobian.dtype), op=MPI.MIN)
    gemm, qr = _flop_rates()
    rss = local_peak_memory_mb() * 1024.0**2
    return CostModel(
        engine=engine,
        subspace=subspace,
        reduction=reduction,
        n_ranks=comm.size,
        n_params=jacobian.n_params,
        n_outputs=jacobian.n_outputs,
        n_samples=comm.allreduce(len(jacobian.inputs), op=MPI.MAX),
        n_sketch_samples=comm.allreduce(n_sketch_samples, op=MPI.MAX),
        n_probe_samples=comm.allreduce(n_probe_samples, op=MPI.MAX),
        oversampling=oversampling,
        block_columns=block_columns,
        chunk_samples=jacobian.chunk_samples,
        jvp_seconds=comm.allreduce(jvp, op=MPI.MAX),
        vjp_seconds=comm.allreduce(vjp, op=MPI.MAX),
        gemm_flops=comm.allreduce(gemm, op=MPI.MIN),
        qr_flops=comm.allreduce(qr, op=MPI.MIN),
        base_bytes=comm.allreduce(rss),
        krylov_seconds=comm.allreduce(krylov_jvp + krylov_vjp, op=MPI.MAX),
        krylov_jvp_seconds=comm.allreduce(krylov_jvp, op=MPI.MAX),
        gemv_flops=gemv,
    )
