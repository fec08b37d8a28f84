"""A client process for artifact tests: starts a run, logs points and one file, then reports.

The file (``--size`` random bytes) is written to a temporary folder and deleted as soon as
``log_artifact`` returns: what reaches MLflow is the writer's staged copy. Writes a JSON summary
(the file's SHA-256, what close() left) to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from client_sdk.config import WriterConfig
from client_sdk.writer import Writer

BASE_TS = 1_700_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=0, help="bytes of the file; 0: no file")
    parser.add_argument("--name", default="model.bin")
    parser.add_argument("--artifact-path", default="checkpoints")
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--close-timeout", type=float, default=60.0)
    parser.add_argument("--hold", action="store_true", help="after logging, wait to be killed")
    args = parser.parse_args()

    config = WriterConfig(
        receiver=args.receiver,
        client_id=args.client_id,
        job=args.job,
        spool_dir=args.spool_dir,
    )
    writer = Writer(config=config)
    run = writer.start_run()
    for i in range(args.points):
        writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
    sha256 = ""
    if args.size:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / args.name
            data = os.urandom(args.size)
            path.write_bytes(data)
            sha256 = hashlib.sha256(data).hexdigest()
            writer.log_artifact(path, args.artifact_path)
    with open(f"{args.out}.logged", "w") as marker:
        json.dump({"sha256": sha256, "run_key": run.run_key}, marker)
    if args.hold:
        while True:
            time.sleep(3600)
    writer.end_run("FINISHED")
    result = writer.close(timeout_s=args.close_timeout)
    summary = {
        "sha256": sha256,
        "run_key": run.run_key,
        "undelivered_events": result.undelivered_events,
        "dropped_events": result.dropped_events,
        "artifacts_left": result.artifacts_left,
    }
    with open(args.out, "w") as out:
        json.dump(summary, out)


if __name__ == "__main__":
    main()
