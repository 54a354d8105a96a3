"""DeepONet (Lu et al., Nat. Mach. Intell. 2021): ``u(a)(x) ≈ Σ_k b_k(a) t_k(x) + b_0``."""

import torch
from torch import nn

from pinn_lsr.models.bilinear import BilinearOutput, split_last_linear
from pinn_lsr.models.mlp import ACTIVATIONS, mlp_layers
from pinn_lsr.models.normalization import Normalizer

BRANCHES = ("mlp", "cnn")


class DeepONet(nn.Module):
    """Coefficient on the grid -> solution at any points.

    ``forward(a, points=None)``: ``a`` (batch, s, s); ``points`` (n_points, 2) in the grid's
    coordinates (default: the grid nodes of the unit square, C order) -> (batch, n_points).
    With ``dim = 1`` (Burgers): ``a`` (batch, s), ``points`` (n_points, 1), default the nodes
    ``i / (s - 1)`` of the unit interval (the trunk's coordinate, whatever the problem's grid).
    The branch net reads the coefficient (an MLP on the flattened grid, or a small CNN), the
    trunk net the coordinates; their ``latent`` outputs are contracted, plus a bias.

    With ``out_channels = c > 1`` (a vector field) both nets have ``c · latent`` outputs, split
    into one group of ``latent`` per channel (each with its own bias): the output is
    (batch, c * n_points), channel-major (the (c, n_points) field flattened in C order).
    """

    def __init__(
        self,
        grid_size: int,
        *,
        dim: int = 2,
        branch: str = "mlp",
        latent: int = 64,
        width: int = 128,
        depth: int = 3,
        trunk_width: int = 128,
        trunk_depth: int = 3,
        activation: str = "gelu",
        out_channels: int = 1,
    ):
        super().__init__()
        if branch not in BRANCHES:
            raise ValueError(f"unknown DeepONet branch {branch!r}; choose one of {BRANCHES}")
        if dim not in (1, 2):
            raise ValueError(f"DeepONet grids are 1D or 2D, got dim={dim!r}")
        self.grid_size = grid_size
        self.grid_shape = (grid_size,) * dim
        self.out_channels = out_channels
        s = grid_size
        features = out_channels * latent
        if branch == "mlp":
            self.branch = nn.Sequential(
                nn.Flatten(), mlp_layers([s**dim] + [width] * depth + [features], activation)
            )
        else:  # 16 pooled positions in 1D and 2D alike
            act = ACTIVATIONS[activation]
            conv, pool = (
                (nn.Conv1d, nn.AdaptiveAvgPool1d(16)),
                (nn.Conv2d, nn.AdaptiveAvgPool2d(4)),
            )[dim - 1]
            self.branch = nn.Sequential(
                nn.Unflatten(1, (1, s)),
                conv(1, 16, 5, stride=2, padding=2), act(),
                conv(16, 32, 5, stride=2, padding=2), act(),
                conv(32, 64, 3, stride=2, padding=1), act(),
                pool, nn.Flatten(),
                mlp_layers([64 * 16, width, features], activation),
            )  # fmt: skip
        self.trunk = nn.Sequential(
            mlp_layers([dim] + [trunk_width] * trunk_depth + [features], activation),
            ACTIVATIONS[activation](),
        )
        self.bias = nn.Parameter(
            torch.zeros(()) if out_channels == 1 else torch.zeros(out_channels, 1)
        )
        axes = torch.meshgrid(*[torch.linspace(0.0, 1.0, s)] * dim, indexing="ij")
        self.register_buffer("grid_points", torch.stack([x.reshape(-1) for x in axes], dim=1))
        self.input_normalizer = Normalizer()
        self.output_normalizer = Normalizer()

    def forward(self, a: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        grid = self.grid_shape
        if a.shape[1:] != grid:
            raise ValueError(
                f"DeepONet expects coefficients of shape (batch, {', '.join(map(str, grid))}), "
                f"got {tuple(a.shape)}"
            )
        points = self.grid_points if points is None else points
        if points.dim() != 2 or points.shape[1] != len(grid):
            raise ValueError(
                f"DeepONet expects points of shape (n_points, {len(grid)}), "
                f"got {tuple(points.shape)}"
            )
        b = self.branch(self.input_normalizer.encode(a))  # (batch, out_channels * latent)
        t = self.trunk(points.to(b.dtype))  # (n_points, out_channels * latent)
        if self.out_channels == 1:
            return self.output_normalizer.decode(b @ t.T + self.bias)
        c = self.out_channels
        y = (
            torch.einsum("bcl,pcl->bcp", b.reshape(len(b), c, -1), t.reshape(len(t), c, -1))
            + self.bias
        )
        return self.output_normalizer.decode(y.reshape(len(b), -1))

    def bilinear_output(self) -> BilinearOutput:
        """The output as bilinear in the branch's last linear layer and the bias
        (:mod:`pinn_lsr.models.bilinear`): left features = the branch before that layer, right
        features = the trunk at the points (default the grid nodes), offset = ``bias``.

        Raises:
            ValueError: ``out_channels > 1`` (one group of latent features per channel, each with
                its own bias: not one bilinear form).
        """
        if self.out_channels != 1:
            raise ValueError(
                "a DeepONet's output is one bilinear form only with one output channel, got "
                f"out_channels={self.out_channels} (a vector problem: train it by gradients, "
                "or use model=mlp)"
            )
        left, head = split_last_linear(self.branch, "branch")
        return BilinearOutput(
            left=left,
            head=head,
            right=self.trunk,
            points=self.grid_points,
            offset=self.bias,
            input_normalizer=self.input_normalizer,
            output_normalizer=self.output_normalizer,
        )
