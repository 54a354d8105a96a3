"""``solve.py method=lsr`` with a memory and time budget, the lean/plain engines and restart
directories."""

import json

import pytest

from pinn_lsr.run.cli import main
from tests.run.test_cli import SMALL

DEEPONET = [
    "model=deeponet",
    "model.width=8",
    "model.latent=8",
    "model.trunk_width=8",
    "data.n_train=12",
    "data.n_test=3",
    "output.n_show=1",
    "method=lsr",
]


def run(tmp_path, *overrides):
    return main(
        [
            f"hydra.run.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *SMALL[:6],
            "train.epochs=2",
            *DEEPONET,
            *overrides,
        ]
    )


def test_deeponet_lsr_takes_a_memory_and_time_budget(tmp_path):
    assert (
        run(
            tmp_path,
            "method.rank=null",
            "method.memory_budget_gb=8",
            "method.time_budget_minutes=0.1",
        )
        == 0
    )
    lsr = json.loads((tmp_path / "run" / "metrics.json").read_text())["lsr"]
    predicted = lsr["predicted"]
    assert lsr["max_rank"] >= 1 and predicted["seconds"] <= 6.0 and predicted["memory_gb"] <= 8
    assert predicted["costs"]["jvp_seconds"] > 0 and lsr["total_peak_memory_mb"] > 0


def test_deeponet_krylov_lsr_takes_a_time_budget(tmp_path):
    assert (
        run(
            tmp_path, "method.subspace=krylov", "method.rank=null", "method.time_budget_minutes=0.1"
        )
        == 0
    )
    lsr = json.loads((tmp_path / "run" / "metrics.json").read_text())["lsr"]
    assert lsr["predicted"]["costs"]["subspace"] == "krylov" and lsr["predicted"]["seconds"] <= 6.0
    assert "krylov" in lsr["seconds_by_phase"] and lsr["test_rel_l2"] > 0


def test_plain_engine_and_restart_dir_give_the_same_refinement(tmp_path):
    results = {}
    for name, extra in {
        "lean": [f"method.restart_dir={tmp_path / 'lsr_restart'}"],
        "plain": ["method.engine=plain"],
    }.items():
        assert run(tmp_path / name, "method.rank=20", "method.relative=false", *extra) == 0
        results[name] = json.loads((tmp_path / name / "run" / "metrics.json").read_text())["lsr"]
    assert results["lean"]["test_mse"] == pytest.approx(results["plain"]["test_mse"], rel=0.05)
    assert (tmp_path / "lsr_restart" / "rank0of1" / "sketch_0.pt").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.engine=fast", "method.engine must be one of"),
        ("method.time_budget_minutes=-1", "method.time_budget_minutes must be a positive number"),
        ("method.rank=null", "method.rank must be an integer"),
        (
            "method.subspace=krylov method.restart_dir=ckpt",
            "method.restart_dir needs method.engine=lean and method.subspace=randomized",
        ),
        (
            "method.subspace=random method.rank=null method.time_budget_minutes=1",
            "budgets are predicted for",
        ),
    ],
)
def test_bad_lsr_settings_are_usage_errors(tmp_path, capsys, override, message):
    assert run(tmp_path, *override.split()) == 2
    assert message in capsys.readouterr().err
