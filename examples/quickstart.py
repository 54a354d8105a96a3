"""Quickstart: learn the solution operator f -> u of -u'' = f on (0, 1), then refine it by LSR."""

import torch

from pinn_lsr.lsr import refine

torch.manual_seed(0)
n = 32  # interior grid points, u(0) = u(1) = 0; finite differences
e = torch.ones(n - 1)
A = (n + 1) ** 2 * (2 * torch.eye(n) - torch.diag(e, 1) - torch.diag(e, -1))
modes = torch.sin(torch.pi * torch.arange(1, 6)[:, None] * torch.linspace(0, 1, n + 2)[1:-1])
f = torch.randn(1200, 5) @ modes  # inputs: smooth sources on the grid, (n_samples, n)
u = torch.linalg.solve(A, f.T).T  # targets: the discrete solutions, (n_samples, n)
x, y, xv, yv, x_test, y_test = f[:800], u[:800], f[800:1000], u[800:1000], f[1000:], u[1000:]

model = torch.nn.Sequential(torch.nn.Linear(n, 64), torch.nn.Tanh(), torch.nn.Linear(64, n))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(300):  # a short gradient training: the state θ0 LSR starts from
    optimizer.zero_grad()
    ((model(x) - y).norm(dim=1) / y.norm(dim=1)).mean().backward()
    optimizer.step()

refined, report = refine(model, x, y, rank=40, validation=(xv, yv))  # best rank on (xv, yv)
with torch.no_grad():
    errors = [
        ((p - y_test).norm(dim=1) / y_test.norm(dim=1)).mean()
        for p in (model(x_test), refined.predict(x_test))
    ]
print(f"test rel. L2: trained {errors[0]:.2e}, LSR (rank {report.rank}) {errors[1]:.2e}")
