import numpy as np
import pytest

from pinn_lsr.io.plots import plot_fields


@pytest.mark.parametrize("shape", [(2, 8, 8), (2, 8)])  # 2D images, 1D curves (burgers)
def test_plot_fields_writes_png(tmp_path, shape):
    fields = np.random.default_rng(0).random(shape)
    plot_fields(tmp_path / "f.png", [("a", fields), ("u", fields**2)], sample_labels=["s0", "s1"])
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
