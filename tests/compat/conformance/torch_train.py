"""A small torch training loop: tensor losses logged as they are, the model saved as a file."""

import os
import tempfile

import mlflow
import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(256, 8)
y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.CrossEntropyLoss()

with mlflow.start_run(run_name="mlp"):
    mlflow.log_params({"hidden": 16, "lr": 0.1, "optimizer": type(optimizer).__name__})
    mlflow.log_text(str(model), "model_summary.txt")
    for epoch in range(3):
        for step in range(8):
            batch = slice(step * 32, (step + 1) * 32)
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            mlflow.log_metric("train_loss", loss.detach(), step=epoch * 8 + step)  # a 0-d tensor
        with torch.no_grad():
            accuracy = (model(x).argmax(dim=1) == y).float().mean()
        mlflow.log_metric("accuracy", accuracy, step=epoch)
        mlflow.log_metric("accuracy_item", accuracy.item(), step=epoch)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        torch.save(model.state_dict(), path)
        mlflow.log_artifact(path, artifact_path="model")
