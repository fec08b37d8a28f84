"""Train a tiny torch network, log it (and its state dict) with mlflow.pytorch, load it back."""

import mlflow
import mlflow.pytorch
import numpy as np
import torch

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
target = torch.tensor([[1.0], [1.0], [0.0], [0.0]])

mlflow.set_experiment("pytorch_model")
with mlflow.start_run(run_name="tiny-net"):
    mlflow.log_param("lr", 0.1)
    for epoch in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), target)
        loss.backward()
        optimizer.step()
        mlflow.log_metric("loss", round(loss.item(), 6), step=epoch)
    example = np.zeros((1, 2), dtype=np.float32)
    info = mlflow.pytorch.log_model(net, name="model", input_example=example)
    mlflow.pytorch.log_state_dict(net.state_dict(), artifact_path="state_dict")

reloaded = mlflow.pytorch.load_model(info.model_uri)  # exported for the example's shape
same = torch.allclose(reloaded(x[:1]), net(x[:1]))
print("reloaded model agrees:", same)
if not same:
    raise SystemExit(1)
