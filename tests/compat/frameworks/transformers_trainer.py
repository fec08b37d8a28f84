"""Hugging Face transformers' MLflowCallback in a Trainer: a tiny BERT built from a config."""

import os

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

os.environ["MLFLOW_EXPERIMENT_NAME"] = os.environ["FRAMEWORK_EXPERIMENT"]
os.environ["MLFLOW_RUN_NAME"] = "hf-trainer"
torch.manual_seed(0)
config = BertConfig(
    vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
)
model = BertForSequenceClassification(config)


class Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor([(i * 3 + j) % 32 for j in range(6)])
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(6, dtype=torch.long),
            "labels": torch.tensor(i % 2),
        }


args = TrainingArguments(
    output_dir="hf-out",
    report_to=["mlflow"],
    max_steps=4,
    per_device_train_batch_size=4,
    logging_steps=1,
    save_strategy="no",
    use_cpu=True,
    seed=0,
    disable_tqdm=True,
)
Trainer(model=model, args=args, train_dataset=Pairs()).train()
