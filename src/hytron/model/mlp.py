"""The MLP block: non-gated squared ReLU, down(relu(up(x))²), no bias (Nemotron-H)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def relu2(x: Tensor) -> Tensor:
    return torch.square(torch.relu(x))


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (b, L, d) -> (b, L, d)
        return self.down_proj(relu2(self.up_proj(x)))
