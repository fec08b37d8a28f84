"""The global model: a 4 -> 8 -> 2 MLP."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """About 60 parameters: the cost of a round is NVFlare's, not the model's. Its initial
    weights are the same in every process (NVFlare's server builds its own from this class),
    from a generator of its own: torch's global seed is left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))
