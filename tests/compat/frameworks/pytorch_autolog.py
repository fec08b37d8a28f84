"""mlflow.pytorch.autolog() with a Lightning Trainer."""

import os

import lightning.pytorch as pl
import mlflow
import mlflow.pytorch
import torch


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


pl.seed_everything(7, verbose=False)
mlflow.set_experiment(os.environ["FRAMEWORK_EXPERIMENT"])
mlflow.pytorch.autolog(log_models=False, silent=True)
x = torch.arange(16, dtype=torch.float32).reshape(8, 2) / 10
data = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4
)
trainer = pl.Trainer(
    max_epochs=2,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    accelerator="cpu",
)
with mlflow.start_run(run_name="autolog"):
    trainer.fit(Tiny(), data)
