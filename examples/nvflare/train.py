"""A site's training script (NVFlare's Client API, hello-pt style), synthetic data.

``--tracking trackbridge`` logs with trackbridge's ``MLflowWriter``
(``client_sdk.integrations.nvflare``: the site streams to a trackbridge receiver; no MLflow
credentials on the site); ``--tracking nvflare`` with NVFlare's own
(``nvflare.client.tracking.MLflowWriter``: events travel to NVFlare's server, whose
``MLflowReceiver`` writes MLflow). The calls are the same: the import is the only change.
"""

from __future__ import annotations

import argparse
import time

import nvflare.client as flare
import torch
from model import TinyNet
from torch import nn

RUN_NAME = "tb-run"
STEPS = 5


def _writer(tracking: str, site: str, job_name: str, experiment: str):  # type: ignore[no-untyped-def]
    if tracking == "nvflare":
        from nvflare.client.tracking import MLflowWriter as NVFlareWriter

        return NVFlareWriter()
    from client_sdk.integrations.nvflare import MLflowWriter

    job_id = flare.get_job_id()
    if job_id == "simulate_job":  # as NVFlare's MLflowReceiver names simulator runs
        job_id = str(int(time.time()))
    return MLflowWriter(
        client_id=site,
        run_name=RUN_NAME,
        experiment_name=experiment,
        tags={"custom_tag": "x"},
        description="run description",
        job_id=job_id,
        job_name=job_name,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking", choices=("trackbridge", "nvflare"), default="trackbridge")
    parser.add_argument("--job-name", default="tb-hello-pt")
    parser.add_argument("--experiment", default="tb-nvflare")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two sites share two cores
    flare.init()
    site = flare.get_site_name()
    gen = torch.Generator().manual_seed(sum(map(ord, site)))
    x = torch.randn(256, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = TinyNet()
    writer = _writer(args.tracking, site, args.job_name, args.experiment)
    writer.log_params({"lr": 0.1, "site_param": site})
    writer.set_tag("tb_site", site)
    while flare.is_running():
        received = flare.receive()
        server_round = received.current_round
        model.load_state_dict(received.params)
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for i in range(STEPS):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            writer.log_metric("train_loss", loss.item(), server_round * STEPS + i)
        # NVFlare folds the round into the step; with trackbridge's round API it is its own.
        writer.log_metrics({"accuracy": accuracy, "round": float(server_round)}, step=server_round)
        writer.log_text(f"site {site} round {server_round} accuracy {accuracy}\n",
                        f"notes/round_{server_round}.txt")  # fmt: skip
        flare.send(
            flare.FLModel(
                params=model.state_dict(),
                metrics={"accuracy": accuracy},
                meta={"NUM_STEPS_CURRENT_ROUND": STEPS},
            )
        )
    if args.tracking == "trackbridge":
        # Ends the run FINISHED, as NVFlare's receiver does at the job's end, and delivers
        # (without it, the run ends so when the process exits).
        writer.close(timeout_s=30.0)


if __name__ == "__main__":
    main()
