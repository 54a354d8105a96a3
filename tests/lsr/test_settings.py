"""LSRSettings: every validation rule, unknown keys, the YAML block, and one set of rules shared
by the library (``refine``) and the command line (``method.*``)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import open_dict

from pinn_lsr.lsr.settings import DATA_SUBSPACES, ENGINES, SOLVERS, LSRSettings

LSR_YAML = Path(__file__).parents[2] / "pinn_lsr" / "conf" / "method" / "lsr.yaml"

# (changes on top of rank=40, the message the library gives; the CLI's is the same with every
# key written method.<key>)
BAD = [
    ({"rank": None}, "rank must be an integer >= 1, got None; give a rank"),
    ({"rank": 0}, "rank must be an integer >= 1, got 0"),
    ({"rank": 2.5}, "rank must be an integer >= 1, got 2.5"),
    ({"rank": True}, "rank must be an integer >= 1, got True"),
    ({"rank": "40"}, "rank must be an integer >= 1, got '40'"),
    ({"memory_budget_gb": 0}, "memory_budget_gb must be a positive number or null, got 0"),
    ({"memory_budget_gb": True}, "memory_budget_gb must be a positive number or null, got True"),
    ({"time_budget_minutes": -1}, "time_budget_minutes must be a positive number or null"),
    ({"block_columns": 0}, "block_columns must be an integer >= 1, got 0"),
    ({"block_columns": True}, "block_columns must be an integer >= 1, got True"),
    ({"oversampling": -1}, "oversampling must be an integer >= 0, got -1"),
    ({"oversampling": False}, "oversampling must be an integer >= 0, got False"),
    ({"power_iterations": 1.0}, "power_iterations must be an integer >= 0, got 1.0"),
    ({"chunk_tangents": 0}, "chunk_tangents must be an integer >= 1, got 0"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"chunk_samples": 0}, "chunk_samples must be an integer >= 1 or 'auto', got 0"),
    ({"chunk_samples": True}, "chunk_samples must be an integer >= 1 or 'auto', got True"),
    ({"chunk_samples": "fast"}, "chunk_samples must be an integer >= 1 or 'auto', got 'fast'"),
    ({"row_fraction": 0}, r"row_fraction must be in \(0, 1\] or null, got 0"),
    ({"row_fraction": 1.5}, r"row_fraction must be in \(0, 1\] or null, got 1.5"),
    ({"fraction": 0.0}, r"fraction must be in \(0, 1\] or null, got 0.0"),
    ({"krylov_patience": 0.5}, "krylov_patience must be a number >= 1 or null, got 0.5"),
    ({"krylov_patience": True}, "krylov_patience must be a number >= 1 or null, got True"),
    ({"validation_fraction": 1}, r"validation_fraction must be in \(0, 1\), got 1"),
    ({"validation_fraction": 0.0}, r"validation_fraction must be in \(0, 1\), got 0.0"),
    ({"restart_seconds": -1}, "restart_seconds must be a non-negative number, got -1"),
    ({"relative": 1}, "relative must be true or false, got 1"),
    ({"scaled": "yes"}, "scaled must be true or false, got 'yes'"),
    ({"solver": "qr"}, r"solver must be one of \('streaming', 'dense', 'lsqr'\), got 'qr'"),
    ({"subspace": "svd"}, "subspace must be one of"),
    ({"distribution": "normal"}, "distribution must be one of"),
    ({"engine": "fast"}, "engine must be one of"),
    ({"reduction": "lu"}, "reduction must be one of"),
    ({"parameters": "net.4"}, "parameters must be a list of parameter names or null"),
    ({"parameters": [4]}, "parameters must be a list of parameter names or null"),
    ({"scan_ranks": [0, 3]}, "scan_ranks must be a list of integers >= 1 or null"),
    ({"scan_ranks": [True]}, "scan_ranks must be a list of integers >= 1 or null"),
    ({"petsc_options": "ksp_type lsqr"}, "petsc_options must be a mapping or null"),
    (
        {"restart_dir": "ckpt", "engine": "plain"},
        "restart_dir needs engine=lean and subspace=randomized, got engine=plain",
    ),
    (
        {"restart_dir": "ckpt", "subspace": "krylov"},
        "restart_dir needs engine=lean and subspace=randomized, got engine=lean and "
        "subspace=krylov",
    ),
    (
        {"subspace": "random", "rank": None, "time_budget_minutes": 1},
        "budgets are predicted for the randomized and krylov subspaces only, got subspace=random",
    ),
]


def test_defaults_are_valid_with_a_rank_or_a_budget():
    settings = LSRSettings(rank=40)
    assert settings.rank == 40 and not settings.budgeted
    assert settings.subspace == "randomized" and settings.solver == "streaming"
    assert (
        LSRSettings(memory_budget_gb=2).budgeted and LSRSettings(time_budget_minutes=1).rank is None
    )
    assert LSRSettings(rank=5, memory_budget_gb=1.5).budgeted  # the rank caps the budget's
    assert DATA_SUBSPACES == ("randomized", "krylov", "random")
    assert SOLVERS == ("streaming", "dense", "lsqr") and ENGINES == ("lean", "plain")


def test_without_a_rank_or_a_budget_the_message_says_what_to_give():
    with pytest.raises(ValueError, match="give a rank, or a memory and/or time budget"):
        LSRSettings()


@pytest.mark.parametrize("changes, message", BAD)
def test_every_rule_raises_a_value_error_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        LSRSettings(**{"rank": 40, **changes})


def test_integers_of_any_kind_but_bool_are_accepted():
    settings = LSRSettings(rank=np.int64(30), oversampling=np.int32(0), chunk_samples="auto")
    assert settings.rank == 30 and settings.chunk_samples == "auto"
    assert LSRSettings(rank=3, memory_budget_gb=1, row_fraction=1, krylov_patience=1).rank == 3


def test_settings_are_frozen_and_hold_no_caller_lists():
    names, options = ["net.4"], {"ksp_rtol": 1e-10}
    settings = LSRSettings(rank=4, parameters=names, scan_ranks=[1, 2], petsc_options=options)
    names.append("net.0")
    options["ksp_rtol"] = 1.0
    assert settings.parameters == ("net.4",) and settings.scan_ranks == (1, 2)
    assert settings.petsc_options == {"ksp_rtol": 1e-10}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rank = 5


def test_replace_applies_changes_and_validates_them_again():
    settings = LSRSettings(rank=40)
    assert settings.replace(rank=12, engine="plain") == LSRSettings(rank=12, engine="plain")
    assert settings.replace() is settings
    assert dataclasses.replace(settings, seed=3).seed == 3
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        settings.replace(rank=0)
    with pytest.raises(ValueError, match="unknown LSR setting"):
        settings.replace(checkpoint="dir")


def test_unknown_keys_are_refused_with_the_valid_ones_listed():
    with pytest.raises(ValueError, match="unknown LSR setting.* checkpoint; valid: rank, ") as e:
        LSRSettings.from_mapping({"rank": 3, "checkpoint": "dir"})
    assert "restart_dir" in str(e.value) and "restart_seconds" in str(e.value)
    with pytest.raises(ValueError, match=r"method.checkpoint, method.checkpoint_seconds; valid"):
        LSRSettings.from_mapping(
            {"rank": 3, "checkpoint": "d", "checkpoint_seconds": 1}, prefix="method."
        )


def test_refine_takes_settings_and_field_overrides_and_refuses_unknown_ones():
    import torch

    from pinn_lsr import refine

    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(30, 3, dtype=torch.float64)
    y = x.sum(dim=1, keepdim=True)
    with pytest.raises(ValueError, match="unknown LSR setting.* checkpoint"):
        refine(model, x, y, rank=2, checkpoint="dir")
    with pytest.raises(ValueError, match="engine must be one of"):
        refine(model, x, y, LSRSettings(rank=2), engine="fast")
    _, by_keyword = refine(model, x, y, rank=3, relative=False)
    _, by_settings = refine(model, x, y, LSRSettings(rank=4, relative=False), rank=3)
    assert by_keyword.rank == by_settings.rank == 3
    assert by_keyword.linearized_objective == by_settings.linearized_objective


def test_the_yaml_block_builds_settings_and_names_every_key_as_a_field():
    options = yaml.safe_load(LSR_YAML.read_text())
    assert options.pop("name") == "lsr"
    settings = LSRSettings.from_mapping(options, prefix="method.")
    assert {f.name for f in dataclasses.fields(LSRSettings)} >= set(options)
    assert settings.rank == options["rank"] and settings.restart_dir is None
    assert settings.chunk_samples == options["chunk_samples"]


def _cli_message(changes, overrides=("model=mlp", "model.width=8")) -> str:
    """The message of the command line's check of method=lsr with ``changes``."""
    from pinn_lsr.run.cli import compose_config
    from pinn_lsr.run.config import load_settings

    cfg = compose_config(list(overrides))
    with open_dict(cfg):
        for key, value in {"rank": 40, **changes}.items():
            cfg.method[key] = value
    with pytest.raises(ValueError) as error:
        load_settings(cfg)
    return str(error.value)


@pytest.mark.parametrize("changes, message", BAD)
def test_the_cli_applies_the_same_rules_with_method_keys(changes, message):
    with pytest.raises(ValueError) as library:
        LSRSettings(**{"rank": 40, **changes})
    cli = _cli_message(changes)
    assert cli.replace("method.", "") == str(library.value)
    assert cli.startswith("budgets" if "budgets" in message else "method.")


def test_the_cli_names_restart_dir_and_keeps_the_model_check():
    assert _cli_message({"subspace": "krylov", "restart_dir": "r"}).startswith(
        "method.restart_dir needs method.engine=lean and method.subspace=randomized"
    )
    assert "unknown LSR setting(s) method.checkpoint" in _cli_message({"checkpoint": "r"})
    assert "method=lsr needs a model" in _cli_message({"rank": 3}, overrides=["~model"])


def test_the_device_is_checked_by_its_library_and_command_line_name():
    assert LSRSettings(rank=4).device == "cpu"
    with pytest.raises(ValueError, match=r"device must be one of cpu \| cuda \| cuda:N, got 'gpu'"):
        LSRSettings(rank=4, device="gpu")
