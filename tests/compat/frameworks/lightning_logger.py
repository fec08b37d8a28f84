"""PyTorch Lightning's MLFlowLogger (it reads MLFLOW_TRACKING_URI)."""

import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


pl.seed_everything(7, verbose=False)
x = torch.arange(16, dtype=torch.float32).reshape(8, 2) / 10
data = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4
)
logger = MLFlowLogger(
    experiment_name=os.environ["FRAMEWORK_EXPERIMENT"],
    run_name="lightning",
    tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
)
trainer = pl.Trainer(
    max_epochs=2,
    logger=logger,
    log_every_n_steps=1,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    accelerator="cpu",
)
trainer.fit(Tiny(), data)
