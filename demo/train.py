"""One demo client: trains a small torch model on synthetic data and logs through a Writer.

Run by ``trackbridge demo`` as a separate process per client; prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from client_sdk.writer import Writer


def _data(seed: int, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, 4, generator=g)).argmax(dim=1)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--step-delay", type=float, default=0.0, help="seconds to pause per step (to watch live)"
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x, y = _data(args.seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    lr = 0.05 * (1 + args.seed % 3)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    batch = 64

    writer = Writer(args.receiver, args.client_id, args.job)
    writer.start_run(tags={"site": args.client_id, "framework": "torch"})
    writer.log_params({"lr": lr, "batch_size": batch, "hidden": 32, "epochs": args.epochs})

    call_ns: list[int] = []
    logged = 0
    step = 0
    loss_value = float("nan")
    accuracy = 0.0
    for epoch in range(args.epochs):
        for _ in range(args.steps):
            idx = torch.randint(0, len(x), (batch,))
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = loss.item()
            t0 = time.perf_counter_ns()
            writer.log_metric("train/loss", loss_value, step=step)
            call_ns.append(time.perf_counter_ns() - t0)
            logged += 1
            step += 1
            if args.step_delay > 0:
                time.sleep(args.step_delay)
        with torch.no_grad():
            accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
        writer.log_metric("eval/accuracy", accuracy, step=epoch)
        logged += 1

    run_id = writer.run_id(timeout_s=15.0)
    writer.end_run("FINISHED")
    undelivered = writer.close(timeout_s=30.0)
    print(
        json.dumps(
            {
                "client_id": args.client_id,
                "run_id": run_id,
                "events": logged,
                "final_loss": loss_value,
                "accuracy": accuracy,
                # The median: the first call also starts the sender thread and opens the spool.
                "median_log_metric_us": sorted(call_ns)[len(call_ns) // 2] / 1000 if call_ns else 0,
                "undelivered": undelivered,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
