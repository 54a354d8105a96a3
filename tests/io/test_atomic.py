import json
import stat

import pytest

from pinn_lsr.io.atomic import write_atomic, write_json


def test_write_json_is_complete_and_readable(tmp_path):
    write_json(tmp_path / "sub" / "m.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "sub" / "m.json").read_text()) == {"a": [1.5], "b": 1}
    assert (tmp_path / "sub" / "m.json").stat().st_mode & stat.S_IRGRP  # not mkstemp's 0600
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.json"]


def test_failed_write_leaves_previous_file_and_no_debris(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"old": True})

    def failing(tmp):
        tmp.write_text("{half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_atomic(target, failing)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_json_is_strict_json(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": (2, 3.5)})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": [2, 3.5]}
