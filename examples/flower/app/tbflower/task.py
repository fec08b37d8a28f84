"""The model and the data: a 4 -> 2 linear classifier on synthetic data made per partition
(no downloads). Seeds are local generators: nothing global is touched."""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 4
TRUE_W = torch.tensor([[1.5, -2.0, 0.5, 1.0], [-1.0, 1.0, -0.5, 2.0]])


def model() -> nn.Module:
    """A fresh model with fixed initial weights."""
    torch.set_num_threads(1)  # two sites share two cores
    net = nn.Linear(FEATURES, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    return net


def data(partition: int, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This partition's examples: features and class labels."""
    gen = torch.Generator().manual_seed(1000 + partition)
    x = torch.randn(examples, FEATURES, generator=gen) + 0.3 * partition
    y = (x @ TRUE_W.T).argmax(dim=1)
    return x, y


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> list[float]:
    """Full-batch SGD; the loss after each local epoch."""
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy."""
    with torch.no_grad():
        logits = net(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy
