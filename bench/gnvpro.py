"""GNvpro (Gauss–Newton variable projection) against gradient training, with work units and seconds.

Experiments (``--experiments``): ``peaks`` (2-D peaks regression), ``cdr`` (surrogate of a
convection–diffusion–reaction problem solved by DOLFINx: 6 parameters -> 49 sensor values, an MLP
with 32 hidden units; ``cdr_wide``: 128), ``digits`` (scikit-learn's digits, cross-entropy) and
``darcy`` (DeepONet on Darcy 16×16 by GNvpro with ``method=gnvpro``'s settings or Adam, each then
refined by LSR). The regression experiments report losses at 50, 200, 1000 and 6000 WU, the goals
(Adam's best 6000-WU loss within 1/5 of its WU; ≤ 1/10 of Adam's loss at 200 WU) and a sweep of the
initial relative damping μ0. Each prints a Markdown table and saves loss-vs-work-units and
loss-vs-seconds plots under ``--out`` (default bench/results).

Work units (WU): a forward or backward pass over the training data is 1, a Gauss–Newton product
2 (see pinn_lsr.vpro.problem); an Adam/SGD epoch is 2, an L-BFGS function+gradient 2. Loss
evaluations for the curves are neither counted nor timed. Float64, one thread, one process.

Usage: ``.venv/bin/python bench/gnvpro.py [--quick] [--experiments peaks cdr cdr_wide digits darcy]
[--damping MU0] [--dampings MU ...] [--krylov-budgets K ...] [--krylov-forcings F ...]
[--darcy-rank R]``. The last three reproduce the probes behind the forcing term (fixed CG budgets,
other forcing terms) and LSR to a large rank after GNvpro on Darcy, with the test error at every
scanned rank.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchutil import git_commit  # noqa: E402
from mpi4py import MPI  # noqa: E402

from pinn_lsr import vpro  # noqa: E402
from pinn_lsr.models.mlp import MLP  # noqa: E402

ROOT = Path(__file__).parents[1]
COMM = MPI.COMM_SELF
WU_MARKS = (50, 200, 1000, 6000)  # the work units the tables report losses at


def median(values):
    return float(np.median(values)) if len(values) else math.nan


# ---------------------------------------------------------------- data


def peaks_data(n_train: int, seed: int = 0):
    """The classic peaks function on [-3, 3]²: x (n, 2), y (n, 1)."""
    x = (
        torch.rand(n_train, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        * 6
        - 3
    )
    a, b = x[:, 0], x[:, 1]
    y = (
        3 * (1 - a) ** 2 * torch.exp(-(a**2) - (b + 1) ** 2)
        - 10 * (a / 5 - a**3 - b**5) * torch.exp(-(a**2) - b**2)
        - torch.exp(-((a + 1) ** 2) - b**2) / 3
    )
    return x, y[:, None]


def cdr_data(n_samples: int, seed: int = 0):
    """Convection–diffusion–reaction ``-κΔu + β·∇u + c u = f`` on the unit square, u = 0 on the
    boundary, f a Gaussian source at x0. Inputs m ∈ [-1, 1]⁶ -> (log10 κ ∈ [-1.5, -1],
    β ∈ [-1, 1]², c ∈ [0, 2], x0 ∈ [0.3, 0.7]²); outputs: u at the 7 × 7 sensors (grid nodes
    4, 8, ..., 28 of 33). P1 FEM on a 32 × 32 mesh (DOLFINx, MUMPS LU), 49 values per sample.
    Returns (m (n, 6), u (n, 49))."""
    import dolfinx_solver  # noqa: F401  (before dolfinx)
    import ufl

    import dolfinx.fem
    from pinn_lsr.fem.linear_pde import LinearPDE
    from pinn_lsr.fem.mesh import unit_square

    s = 33
    domain = unit_square(MPI.COMM_SELF, s - 1)
    kappa, reaction = (dolfinx.fem.Constant(domain.mesh, 1.0) for _ in range(2))
    beta, center = (dolfinx.fem.Constant(domain.mesh, np.zeros(2)) for _ in range(2))

    def forms(u, v, w, x):
        source = 10.0 * ufl.exp(-ufl.dot(x - center, x - center) / (2 * 0.1**2))
        a = (
            kappa * ufl.inner(ufl.grad(u), ufl.grad(v))
            + ufl.dot(beta, ufl.grad(u)) * v
            + reaction * u * v
        ) * ufl.dx
        return a, source * v * ufl.dx

    pde = LinearPDE(domain, forms, grid_size=s, prefix="cdr_")
    m = np.random.default_rng(seed).uniform(-1, 1, (n_samples, 6))
    sensors = np.arange(4, 29, 4)
    outputs = []
    for row in m:
        kappa.value = 10 ** (-1.25 + 0.25 * row[0])
        beta.value[:] = row[1:3]
        reaction.value = 1.0 + row[3]
        center.value[:] = 0.5 + 0.2 * row[4:6]
        pde.solve(np.zeros((s, s)))
        outputs.append(pde.solution_on_grid()[np.ix_(sensors, sensors)].ravel())
    pde.destroy()
    return torch.as_tensor(m), torch.as_tensor(np.array(outputs))


def digits_data():
    """scikit-learn's digits (1797 8×8 images), pixels / 16; 80 % train, 20 % validation
    (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return (torch.as_tensor(x_train), torch.as_tensor(y_train)), (
        torch.as_tensor(x_val),
        torch.as_tensor(y_val),
    )


# ---------------------------------------------------------------- training runs


def mse(model, x, y) -> float:
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def cross_entropy(model, x, labels) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), labels))


def accuracy(model, x, labels) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == labels).double().mean())


def run_gradient(
    model,
    x,
    y,
    loss_fn,
    *,
    optimizer: str,
    lr: float,
    epochs: int,
    batch: int,
    seed: int,
    eval_every: int = 1,
):
    """Adam or SGD (momentum 0.9) with mini-batches; curve of (WU, seconds, loss) per
    ``eval_every`` epochs and at the epochs of :data:`WU_MARKS`."""
    params = list(model.parameters())
    opt = (
        torch.optim.Adam(params, lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )
    per_sample = (
        torch.nn.functional.cross_entropy
        if loss_fn is cross_entropy
        else torch.nn.functional.mse_loss
    )
    rng = np.random.default_rng(seed)
    curve = [(0.0, 0.0, loss_fn(model, x, y))]
    seconds = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(x)))
        for k in range(0, len(x), batch):
            idx = order[k : k + batch]
            opt.zero_grad()
            per_sample(model(x[idx]), y[idx]).backward()
            opt.step()
        seconds += time.perf_counter() - start
        if epoch % eval_every == 0 or epoch == epochs or 2 * epoch in WU_MARKS:
            loss = loss_fn(model, x, y)
            curve.append((2.0 * epoch, seconds, loss))
            if not math.isfinite(loss):
                break
    return curve


def run_lbfgs(model, x, y, loss_fn, *, max_work_units: float):
    """Full-batch L-BFGS (strong Wolfe); every function+gradient evaluation is 2 WU."""
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=5, history_size=50, line_search_fn="strong_wolfe"
    )
    per_sample = (
        torch.nn.functional.cross_entropy
        if loss_fn is cross_entropy
        else torch.nn.functional.mse_loss
    )
    calls = [0]

    def closure():
        opt.zero_grad()
        value = per_sample(model(x), y)
        value.backward()
        calls[0] += 1
        return value

    curve = [(0.0, 0.0, loss_fn(model, x, y))]
    seconds = 0.0
    while 2 * calls[0] < max_work_units:
        start = time.perf_counter()
        opt.step(closure)
        seconds += time.perf_counter() - start
        curve.append((2.0 * calls[0], seconds, loss_fn(model, x, y)))
        if curve[-1][2] >= curve[-2][2]:
            break
    return curve


def run_gn(model, x, y, settings: vpro.GNSettings, *, variable_projection: bool = True):
    result = vpro.run_gnvpro(
        model, x, y, settings, comm=COMM, variable_projection=variable_projection
    )
    return [(h["work_units"], h["seconds"], h["loss"]) for h in result.history], result


def first_reaching(curve, target):
    """(WU, seconds) of the first curve point with loss ≤ target, or (inf, inf): a median over
    seeds is then the WU most seeds need, inf when most never get there."""
    return next(((wu, s) for wu, s, loss in curve if loss <= target), (math.inf, math.inf))


def best_within(curve, work_units):
    return min((loss for wu, _, loss in curve if wu <= work_units), default=math.nan)


def seconds_at(curve, work_units):
    """Seconds at the last curve point within ``work_units``; nan for a run that stopped before
    0.9 of them."""
    if curve[-1][0] < 0.9 * work_units:
        return math.nan
    return max(s for wu, s, _ in curve if wu <= work_units)


# ---------------------------------------------------------------- regression experiments


def regression_baselines(x, y, fresh, args) -> dict:
    """Adam (``args.adam_lrs`` for the whole budget, ``args.adam_short_lrs`` for 1000 WU), SGD,
    L-BFGS and plain Gauss–Newton on seed 0: label -> [curve]."""
    adam_epochs = args.adam_epochs
    budget = 2.0 * adam_epochs
    curves = {}
    for lr, epochs in [(lr, adam_epochs) for lr in args.adam_lrs] + [
        (lr, min(adam_epochs, 500)) for lr in args.adam_short_lrs
    ]:
        label = f"Adam lr {lr:g}" + (f" ({2 * epochs} WU)" if epochs < adam_epochs else "")
        curves[label] = [
            run_gradient(
                fresh(0),
                x,
                y,
                mse,
                optimizer="adam",
                lr=lr,
                epochs=epochs,
                batch=32,
                seed=0,
                eval_every=max(1, epochs // 100),
            )
        ]
        log(f"{label}: {curves[label][0][-1]}")
    sgd_epochs = max(1, adam_epochs // 6)
    curves["SGD+momentum lr 0.01"] = [
        run_gradient(
            fresh(0),
            x,
            y,
            mse,
            optimizer="sgd",
            lr=0.01,
            epochs=sgd_epochs,
            batch=32,
            seed=0,
            eval_every=max(1, sgd_epochs // 100),
        )
    ]
    curves["L-BFGS"] = [run_lbfgs(fresh(0), x, y, mse, max_work_units=budget)]
    curves["GN, no VarPro (LM)"] = [
        run_gn(
            fresh(0),
            x,
            y,
            vpro.GNSettings(max_iterations=10**6, max_work_units=budget),
            variable_projection=False,
        )[0]
    ]
    return curves


def regression_experiment(name, x, y, make_model, args, out: Path):
    """Baselines (:func:`regression_baselines`; ``--stage baselines`` only runs and stores them,
    ``--stage gnvpro`` reads them back) and GNvpro variants (the μ0 sweep over ``args.seeds``) on
    (x, y); prints the table of losses at :data:`WU_MARKS` and the goals."""
    budget = 2.0 * args.adam_epochs
    short = min(budget, args.sweep_work_units)  # the μ0 sweep's and the variants' budget

    def fresh(seed):
        model = make_model(seed)
        model.input_normalizer.fit(x)
        model.output_normalizer.fit(y)
        return model

    stored = out / f"gnvpro_{name}_baselines.json"
    if args.stage == "gnvpro":
        curves = json.loads(stored.read_text())
    else:
        curves = regression_baselines(x, y, fresh, args)
        out.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(curves))
        if args.stage == "baselines":
            log(f"{name}: baselines stored in {stored}")
            return
    adams = [k for k in curves if k.startswith("Adam") and "WU)" not in k]
    adam_label = min(adams, key=lambda k: best_within(curves[k][0], budget))
    adam_curve = curves[adam_label][0]
    target = best_within(adam_curve, budget)
    adam_early = min(best_within(curves[k][0], 200) for k in curves if k.startswith("Adam"))
    sample = len(x) // 4
    main = f"GNvpro LM, sample {sample}, μ0 {args.damping:g}"
    variants = {
        main: (dict(curvature_batch_size=sample), args.seeds, budget),
        f"{main}, fixed CG tolerance": (
            dict(curvature_batch_size=sample, krylov_forcing=None),
            args.seeds,
            budget,
        ),
    }
    for damping in args.dampings:
        if damping != args.damping:
            variants[f"GNvpro LM, sample {sample}, μ0 {damping:g}"] = (
                dict(curvature_batch_size=sample, damping=damping),
                args.seeds,
                short,
            )
    for budget_k in args.krylov_budgets:  # the CG-budget probe behind the forcing term
        variants[f"{main}, ≤ {budget_k} CG products, fixed tolerance"] = (
            dict(curvature_batch_size=sample, krylov_max_iterations=budget_k, krylov_forcing=None),
            args.seeds,
            short,
        )
    for forcing in args.krylov_forcings:
        variants[f"{main}, forcing {forcing:g}"] = (
            dict(curvature_batch_size=sample, krylov_forcing=forcing),
            args.seeds,
            short,
        )
    variants.update(
        {
            "GNvpro LM, all data": (dict(), [0], short),
            "GNvpro trust region": (dict(globalization="trust_region"), [0], short),
            f"GNvpro mini-batch {sample}": (dict(batch_size=sample, monitor_every=5), [0], short),
        }
    )
    for label, (settings, seeds, wu) in variants.items():
        settings = {"damping": args.damping, **settings}
        curves[label] = [
            run_gn(
                fresh(seed),
                x,
                y,
                vpro.GNSettings(max_iterations=10**6, max_work_units=wu, seed=seed, **settings),
            )[0]
            for seed in seeds
        ]
        log(f"{name}: {label}: {[c[-1] for c in curves[label]]}")

    print(
        f"\n### {name}: training MSE; target = best Adam loss {target:.3e} "
        f"({adam_label}, {args.adam_epochs} epochs, {budget:.0f} WU, "
        f"{seconds_at(adam_curve, budget):.1f} s)\n"
    )
    marks = [m for m in WU_MARKS if m <= budget]
    print(
        "| method | seeds | "
        + " | ".join(f"loss ≤ {m} WU" for m in marks)
        + " | "
        + " | ".join(f"s at {m} WU" for m in sorted({200, marks[-1]}))
        + " | WU to target | s to target |"
    )
    print("|---|---|" + "---|" * (len(marks) + len({200, marks[-1]}) + 2))
    for label, runs in curves.items():
        reach = [first_reaching(c, target) for c in runs]
        print(
            f"| {label} | {len(runs)} | "
            + " | ".join(f"{median([best_within(c, m) for c in runs]):.3e}" for m in marks)
            + " | "
            + " | ".join(
                f"{median([seconds_at(c, m) for c in runs]):.1f}" for m in sorted({200, marks[-1]})
            )
            + f" | {median([r[0] for r in reach]):.0f} | {median([r[1] for r in reach]):.1f} |"
        )
    main_reach = [first_reaching(c, target) for c in curves[main]]
    wu, seconds = median([r[0] for r in main_reach]), median([r[1] for r in main_reach])
    early = median([best_within(c, 200) for c in curves[main]])
    print(
        f"\nGoals ({main}, median over seeds {args.seeds}): Adam's best {budget:.0f}-WU loss "
        f"reached in {wu:.0f} WU = {wu / budget:.3f} of its WU "
        f"(goal ≤ 0.2: {'met' if wu <= 0.2 * budget else 'NOT met'}), "
        f"{seconds:.1f} s = {seconds / seconds_at(adam_curve, budget):.3f} of its seconds; "
        f"at 200 WU {early:.3e} = {early / adam_early:.3f} of the best Adam's {adam_early:.3e} "
        f"(goal ≤ 0.1: {'met' if early <= 0.1 * adam_early else 'NOT met'})."
    )
    plot(out / f"gnvpro_{name}.png", curves, f"{name}: training MSE")


# ---------------------------------------------------------------- digits


def digits_experiment(args, out: Path):
    (x, labels), (x_val, labels_val) = digits_data()
    epochs = args.digits_epochs

    def fresh(seed):
        torch.manual_seed(seed)
        return MLP(64, 10, width=32, depth=2, activation="tanh").double()

    rows, curves = [], {}
    for optimizer, lrs in (("adam", (1e-3, 3e-3, 1e-2)), ("sgd", (0.01, 0.03, 0.1))):
        for lr in lrs:
            accs, runs = [], []
            for seed in args.seeds:
                model = fresh(seed)
                runs.append(
                    run_gradient(
                        model,
                        x,
                        labels,
                        cross_entropy,
                        optimizer=optimizer,
                        lr=lr,
                        epochs=epochs,
                        batch=32,
                        seed=seed,
                        eval_every=max(1, epochs // 50),
                    )
                )
                accs.append(accuracy(model, x_val, labels_val))
            label = f"{'Adam' if optimizer == 'adam' else 'SGD+momentum'} lr {lr:g}"
            curves[label] = runs
            rows.append((label, runs, accs))
            log(f"digits: {label}: val {accs}")
    for alpha in (1e-4, 1e-3):
        accs, runs = [], []
        for seed in args.seeds:
            model = fresh(seed)
            settings = vpro.GNSettings(
                loss="cross_entropy",
                alpha_W=alpha,
                alpha_theta=alpha,
                max_iterations=args.digits_gn_iterations,
                seed=seed,
            )
            curve, result = run_gn(model, x, labels, settings)
            runs.append(curve)
            accs.append(accuracy(model, x_val, labels_val))
        label = f"GNvpro LM, α_W = α_θ = {alpha:g}"
        curves[label] = runs
        rows.append((label, runs, accs))
        log(f"digits: {label}: val {accs}")
    print(
        f"\n### digits: cross-entropy, {len(x)} train / {len(x_val)} validation, "
        "MLP 64-32-32-10 tanh, "
        f"Adam/SGD {epochs} epochs batch 32, GNvpro {args.digits_gn_iterations} iterations\n"
    )
    print(
        "| method | seeds | train loss (median) | validation accuracy (median) | min–max | WU | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, runs, accs in rows:
        print(
            f"| {label} | {len(runs)} | {median([c[-1][2] for c in runs]):.3e} | "
            f"{100 * median(accs):.2f} % | "
            f"{100 * min(accs):.2f}–{100 * max(accs):.2f} | "
            f"{median([c[-1][0] for c in runs]):.0f} | "
            f"{median([c[-1][1] for c in runs]):.1f} |"
        )
    best_baseline = max(median(a) for label, _, a in rows if not label.startswith("GNvpro"))
    best_gn = max(median(a) for label, _, a in rows if label.startswith("GNvpro"))
    print(
        f"\nGoal: GNvpro validation accuracy {100 * best_gn:.2f} % vs best tuned Adam/SGD "
        f"{100 * best_baseline:.2f} % "
        f"(within one point: {'met' if best_gn >= best_baseline - 0.01 else 'NOT met'})."
    )
    plot(out / "gnvpro_digits.png", curves, "digits: training cross-entropy")


# ---------------------------------------------------------------- DeepONet on Darcy, then LSR


def method_gnvpro_settings(n_train: int) -> vpro.GNSettings:
    """The settings ``method=gnvpro`` runs with (pinn_lsr/conf/method/gnvpro.yaml) for
    ``n_train`` samples."""
    from pinn_lsr.run.cli import compose_config
    from pinn_lsr.run.config import load_settings

    overrides = [
        "model=deeponet",
        "method=gnvpro",
        "physics.instances=0",
        f"data.n_train={n_train}",
    ]
    return load_settings(compose_config(overrides)).gnvpro


def darcy_experiment(args, out: Path):
    """DeepONet on Darcy 16×16: Adam (lr grid) against GNvpro with ``method=gnvpro``'s settings
    for Adam's wall time, each seed; then LSR on each trained model. ``pipeline`` standardises
    the targets for GNvpro: its iterates do not depend on that (scale invariance), so the raw
    targets are passed and the losses reported as MSE / variance."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_darcy import load_data

    from pinn_lsr import refine
    from pinn_lsr.models.deeponet import DeepONet
    from pinn_lsr.train.loop import TrainSettings, train

    s = 16
    train_set, test_set = load_data(s, args.darcy_train, 100, MPI.COMM_WORLD)

    def tensors(d):
        return torch.as_tensor(d.inputs), torch.as_tensor(d.solutions.reshape(len(d), -1))

    (a, u), (a_test, u_test) = tensors(train_set), tensors(test_set)
    variance = float(u.var())

    def fresh(seed):
        torch.manual_seed(seed)
        return DeepONet(
            s, branch="mlp", latent=32, width=64, depth=2, trunk_width=64, trunk_depth=2
        ).double()

    def rel_l2(predict, x, y):
        with torch.no_grad():
            return float(
                (
                    torch.linalg.vector_norm(predict(x) - y, dim=1)
                    / torch.linalg.vector_norm(y, dim=1)
                ).mean()
            )

    def with_lsr(model, test_scan=False):
        """(train, test rel-L2 before; LSR rank; train, test after; LSR seconds; the scan: per
        rank the training objective and the validation rel-L2, with ``test_scan`` the test rel-L2
        too, whose products LSR's seconds then include)."""
        before = (rel_l2(model, a, u), rel_l2(model, a_test, u_test))
        start = time.perf_counter()
        refined, report = refine(
            model,
            a[:-50],
            u[:-50],
            rank=args.darcy_rank,
            validation=(a[-50:], u[-50:]),
            evaluate={"test": (a_test, u_test)} if test_scan else None,
            relative=False,
            row_fraction=0.5,
            comm=COMM,
        )
        seconds = time.perf_counter() - start
        after = (rel_l2(refined.predict, a, u), rel_l2(refined.predict, a_test, u_test))
        return before, report.rank, after, seconds, report.scan

    base = method_gnvpro_settings(len(a))
    runs = {}  # label -> list of (curve, WU, seconds, LSR record) per seed
    for seed in args.seeds:
        adam = {}
        for lr in args.darcy_lrs:
            model = fresh(seed)
            start = time.perf_counter()
            result = train(
                model,
                (a, u),
                None,
                TrainSettings(
                    epochs=args.darcy_epochs,
                    batch_size=20,
                    lr=lr,
                    weight_decay=0.0,
                    scheduler="cosine",
                    loss="mse",
                    seed=seed,
                ),
                comm=COMM,
                progress=False,
            )
            seconds = time.perf_counter() - start
            curve = [
                (
                    2.0 * h["epoch"],
                    seconds * h["epoch"] / args.darcy_epochs,
                    h["train_loss"] / variance,
                )
                for h in result.history
            ]
            adam[lr] = (model, curve, seconds)
        best_lr = min(adam, key=lambda lr: mse(adam[lr][0], a, u))
        for lr, (model, curve, seconds) in adam.items():
            record = with_lsr(model) if lr == best_lr else None
            runs.setdefault(f"Adam lr {lr:g}", []).append((curve, curve[-1][0], seconds, record))
        adam_seconds = adam[best_lr][2]
        for damping in args.darcy_dampings if seed == args.seeds[0] else [base.damping]:
            model = fresh(seed)
            settings = dataclasses.replace(
                base,
                damping=damping,
                seed=seed,
                max_iterations=10**6,
                max_work_units=math.inf,
                max_seconds=adam_seconds,
            )
            result = vpro.train_gnvpro_on_dataset(model, a, u, settings, comm=COMM)
            curve = [(h["work_units"], h["seconds"], h["loss"] / variance) for h in result.history]
            record = (
                with_lsr(model, test_scan=seed == args.seeds[0])
                if damping == base.damping
                else None
            )
            runs.setdefault(f"GNvpro (method=gnvpro), μ0 {damping:g}", []).append(
                (curve, result.work_units, result.seconds, record)
            )
        log(f"darcy: seed {seed} done")
    n_params = sum(p.numel() for p in fresh(0).parameters())
    print(
        f"\n### Darcy {s}×{s}: DeepONet (MLP branch 256-64-64-32, trunk 2-64-64-32, gelu, "
        f"{n_params} parameters, GNvpro eliminates the branch head and bias: 2081), "
        f"{len(a)} train / {len(a_test)} test, float64; Adam {args.darcy_epochs} epochs, batch 20, "
        f"cosine; GNvpro for the best Adam's wall time with method=gnvpro's settings "
        f"(alpha_W {base.alpha_W:g}, curvature sample {base.curvature_batch_size}, "
        f"{base.krylov_max_iterations} CG products); then LSR (rank ≤ {args.darcy_rank}, picked on "
        f"the last 50 training samples); medians over seeds {args.seeds} (μ0 sweep: seed "
        f"{args.seeds[0]})\n"
    )
    print(
        "| training | seeds | WU | s | MSE/var ≤ 50 WU | ≤ 200 WU | final | train rel-L2 | "
        "test rel-L2 | LSR rank | train rel-L2 after LSR | test rel-L2 after LSR | LSR s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, entries in runs.items():
        records = [r for *_, r in entries if r is not None]
        lsr = (
            " | ".join(
                f"{median(values):.4g}"
                for values in (
                    [r[0][0] for r in records],
                    [r[0][1] for r in records],
                    [r[1] for r in records],
                    [r[2][0] for r in records],
                    [r[2][1] for r in records],
                    [r[3] for r in records],
                )
            )
            if records
            else "– | – | – | – | – | –"
        )
        print(
            f"| {label} | {len(entries)} | {median([e[1] for e in entries]):.0f} | "
            f"{median([e[2] for e in entries]):.1f} | "
            + " | ".join(
                f"{median([best_within(e[0], m) for e in entries]):.3e}"
                for m in (50, 200, math.inf)
            )
            + f" | {lsr} |"
        )
    main_label = f"GNvpro (method=gnvpro), μ0 {base.damping:g}"
    *_, first_record = runs[main_label][0]  # the first seed's (curve, WU, seconds, LSR record)
    scanned = first_record[4]  # with_lsr's scan
    print(
        f"\nLSR after {main_label}, seed {args.seeds[0]}, at every scanned rank "
        f"(the training objective per sample; rel-L2 of the linear predictor):\n"
    )
    print("| rank | training objective | validation rel-L2 | test rel-L2 |")
    print("|---|---|---|---|")
    for entry in scanned:
        print(
            f"| {entry['rank']} | {entry['train_objective']:.4e} | "
            f"{entry['validation_rel_l2']:.5f} | {entry['test_rel_l2']:.5f} |"
        )
    plot(
        out / "gnvpro_darcy.png",
        {label: [e[0] for e in entries] for label, entries in runs.items()},
        "Darcy DeepONet: training MSE / variance",
    )


# ---------------------------------------------------------------- plots and driver


def plot(path: Path, curves: dict, title: str) -> None:
    """Loss against work units and against seconds, one line per method (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, runs in curves.items():
        wu, seconds, loss = zip(*runs[0])
        axes[0].semilogy(wu, loss, label=label)
        axes[1].semilogy(seconds, loss, label=label)
    for ax, xlabel in zip(axes, ("work units", "seconds")):
        ax.set_xlabel(xlabel)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(title, fontsize=10)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log(message: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one seed, short runs (about 2 minutes)"
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        default=["peaks", "cdr", "cdr_wide", "digits", "darcy"],
        help="cdr_wide: the CDR surrogate with 128 hidden units instead of 32 (capacity or "
        "optimisation?)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--damping",
        type=float,
        default=vpro.GNSettings().damping,
        help="μ0 of the main GNvpro runs (regression: 6000 WU; Darcy: LSR after it)",
    )
    parser.add_argument(
        "--dampings",
        type=float,
        nargs="+",
        default=[1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
        help="the μ0 sweep (regression: --sweep-work-units each, every seed; Darcy: seed 0)",
    )
    parser.add_argument("--sweep-work-units", type=float, default=1200.0)
    parser.add_argument(
        "--krylov-budgets",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="regression experiments: also GNvpro with at most K CG products a step and the fixed "
        "tolerance, every seed, --sweep-work-units each",
    )
    parser.add_argument(
        "--krylov-forcings",
        type=float,
        nargs="+",
        default=[],
        metavar="F",
        help="regression experiments: also GNvpro with the forcing term F (krylov_forcing), every "
        "seed, --sweep-work-units each",
    )
    parser.add_argument(
        "--darcy-rank",
        type=int,
        help="Darcy: LSR's largest rank after training (default 200, --quick 50); the test error "
        "at every scanned rank is printed for the first seed's main GNvpro run",
    )
    parser.add_argument(
        "--adam-epochs",
        type=int,
        help="regression experiments: Adam's epochs, whose 2 WU each set every method's budget "
        "(default 3000, --quick 100)",
    )
    parser.add_argument(
        "--stage",
        choices=["all", "baselines", "gnvpro"],
        default="all",
        help="regression experiments: run and store the baselines only, or read them back and run "
        "GNvpro (two commands of half the length)",
    )
    args = parser.parse_args()
    full = not args.quick
    args.seeds = [0, 1, 2] if full else [0]
    args.adam_epochs = args.adam_epochs or (3000 if full else 100)
    args.adam_lrs = [1e-3] if full else [3e-3]  # the best at 6000 WU on peaks and CDR (c09162c)
    args.adam_short_lrs = [3e-3, 1e-2] if full else []
    args.digits_epochs = 200 if full else 20
    args.digits_gn_iterations = 20 if full else 5
    args.darcy_train, args.darcy_epochs, darcy_rank = (500, 200, 200) if full else (100, 10, 50)
    args.darcy_rank = args.darcy_rank or darcy_rank
    args.darcy_lrs = [1e-3, 3e-3] if full else [1e-3]
    args.darcy_dampings = sorted({*args.dampings, method_gnvpro_settings(args.darcy_train).damping})
    torch.set_num_threads(1)
    commit = git_commit()
    print(
        f"<!-- bench/gnvpro.py{' --quick' if args.quick else ''}: 1 process, 1 thread, float64, "
        f"commit {commit}; "
        f"GNvpro medians over seeds {args.seeds} where marked, baselines seed 0; "
        f"main μ0 {args.damping:g} -->"
    )
    start = time.perf_counter()
    if "peaks" in args.experiments:
        x, y = peaks_data(2000 if full else 500)

        def make_peaks(seed):
            torch.manual_seed(seed)
            return MLP(2, 1, width=16, depth=3, activation="tanh").double()

        regression_experiment("peaks", x, y, make_peaks, args, args.out)
    for name, width in (("cdr", 32), ("cdr_wide", 128)):
        if name not in args.experiments:
            continue
        t = time.perf_counter()
        m, sensors = cdr_data(1000 if full else 300)
        log(f"{name}: {len(m)} FEM solves in {time.perf_counter() - t:.1f} s")

        def make_cdr(seed, width=width):
            torch.manual_seed(seed)
            return MLP(6, sensors.shape[1], width=width, depth=3, activation="tanh").double()

        regression_experiment(name, m, sensors, make_cdr, args, args.out)
    if "digits" in args.experiments:
        digits_experiment(args, args.out)
    if "darcy" in args.experiments:
        darcy_experiment(args, args.out)
    print(f"\nTotal wall time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
