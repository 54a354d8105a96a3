import pytest
import torch

from pinn_lsr.lsr.denormals import flush_denormals


def test_subnormal_results_become_zero():
    tiny = torch.tensor([1e-30], dtype=torch.float32)
    if not flush_denormals():
        pytest.skip("this CPU cannot flush subnormals")
    assert float(tiny * 1e-10) == 0.0  # 1e-40 is subnormal in float32
    assert float(tiny * 1e-5) > 0  # 1e-35 is normal
