"""A client process configured only through ``TRACKBRIDGE_*`` variables (receiver, client id,
job, token file, TLS, spool), as a site would run it: logs ``x = i`` at step ``i`` for
``--points`` points, closes, and prints a JSON report that also says whether this process held
any MLflow setting or loaded MLflow at all (a client must do neither)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from client_sdk.writer import Writer

BASE_TS = 1_700_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--close-timeout", type=float, default=60.0)
    args = parser.parse_args()
    writer = Writer()
    writer.start_run()
    for i in range(args.points):
        writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
    undelivered = writer.close(timeout_s=args.close_timeout)
    report = {
        "undelivered": undelivered,
        "mlflow_settings": sorted(name for name in os.environ if name.startswith("MLFLOW_")),
        "mlflow_loaded": "mlflow" in sys.modules,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
