"""Refine a trained network by LSR: fit sin(πx) sin(πy), then refine with a rank-200 subspace."""

import torch

from pinn_lsr import refine

torch.manual_seed(0)
x = torch.rand(4000, 2) * 2 - 1
y = torch.sin(torch.pi * x[:, :1]) * torch.sin(torch.pi * x[:, 1:])
model = torch.nn.Sequential(
    torch.nn.Linear(2, 64),
    torch.nn.Tanh(),
    torch.nn.Linear(64, 64),
    torch.nn.Tanh(),
    torch.nn.Linear(64, 1),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(500):  # a short gradient training: the state LSR starts from
    optimizer.zero_grad()
    loss = (model(x[:3200]) - y[:3200]).pow(2).mean()
    loss.backward()
    optimizer.step()

refined, report = refine(
    model, x[:3200], y[:3200], rank=200, validation=(x[3200:], y[3200:]), relative=False
)
print(
    f"validation MSE: Adam {(model(x[3200:]) - y[3200:]).pow(2).mean():.2e}, "
    f"LSR rank {report.rank} {(refined.predict(x[3200:]) - y[3200:]).pow(2).mean():.2e}"
)
