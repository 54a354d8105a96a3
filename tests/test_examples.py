import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(
        tmp_path
    )  # examples that write files (couple_dolfinx.py: outputs/) write here
    monkeypatch.setattr(
        sys, "argv", [str(example)]
    )  # no pytest arguments leak into the example's parser
    runpy.run_path(str(example), run_name="__main__")
    assert capsys.readouterr().out
