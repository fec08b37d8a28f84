"""Figures, images and tables, logged the ways MLflow offers."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from PIL import Image

T0 = 1_700_000_300_000
matplotlib.rcParams["svg.hashsalt"] = "conformance"  # reproducible SVG element ids

with mlflow.start_run(run_name="media"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 1, 3])
    ax.set_title("loss")
    mlflow.log_figure(fig, "plots/loss.png")
    mlflow.log_figure(fig, "plots/loss.svg", save_kwargs={"metadata": {"Date": None}})
    plt.close(fig)

    gradient = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    mlflow.log_image(gradient, "images/gradient.png")
    mlflow.log_image(np.random.default_rng(0).random((8, 8, 3)), "images/noise.png")
    mlflow.log_image(Image.new("RGB", (20, 10), (200, 30, 30)), "images/red.jpg")
    for step in range(2):
        mlflow.log_image(gradient, key="samples/grad", step=step, timestamp=T0 + step)

    mlflow.log_table({"epoch": [0, 1], "loss": [1.0, 0.5]}, "tables/history.json")
    mlflow.log_table({"epoch": [2], "loss": [0.25]}, "tables/history.json")
    mlflow.log_table(pd.DataFrame({"label": ["cat", "dog"], "score": [0.9, 0.8]}), "preds.json")
