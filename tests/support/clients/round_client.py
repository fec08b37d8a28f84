"""A federated client for the rounds and aggregates tests, driven line by line on stdin.

    python tests/support/clients/round_client.py --receiver HOST:PORT --client-id ID --job JOB \
        --mode writer|light|full

Each stdin line is a JSON command; each is answered on stdout with one JSON line once the
receiver has acknowledged everything logged so far (``{"ok": true}``):

- ``{"log": KEY, "value": V, "round": R, "num_examples": N, "step": S}`` logs one point inside
  ``federated_round(R, num_examples=N)`` (``writer``: ``Writer.federated_round``; ``light`` and
  ``full``: ``client_sdk.mlflow.federated_round``); ``"arg": true`` passes ``round=`` to the
  Writer's ``log_metric`` instead;
- ``{"end": true}`` ends the run and exits.

The run starts at launch (answered with ``{"ok": true, "run_key": ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--mode", choices=("writer", "light", "full"), default="writer")
    args = parser.parse_args()
    if args.mode == "writer":
        from client_sdk.writer import Writer

        writer = Writer(args.receiver, args.client_id, args.job)
        run = writer.start_run(args.client_id)
        flush: Any = writer.flush
        rounds: Any = writer.federated_round
        key = run.run_key
    else:
        if args.mode == "light":
            from client_sdk.mlflow import _light as mlflow
        else:
            from client_sdk import mlflow  # type: ignore[no-redef]
        mlflow.set_tracking_uri(f"trackbridge://{args.receiver}")
        mlflow.configure(client_id=args.client_id, job=args.job)
        mlflow.start_run(run_name=args.client_id)
        flush, rounds, key = mlflow.flush, mlflow.federated_round, ""
    assert flush(60), "run start acknowledged"
    _answer({"ok": True, "run_key": key})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("end"):
            break
        if command.get("arg"):
            writer.log_metric(
                command["log"],
                command["value"],
                step=command.get("step", 0),
                round=command["round"],
                num_examples=command.get("num_examples"),
            )
        else:
            with rounds(command["round"], num_examples=command.get("num_examples")):
                if args.mode == "writer":
                    writer.log_metric(command["log"], command["value"], step=command.get("step", 0))
                else:
                    mlflow.log_metric(command["log"], command["value"], step=command.get("step", 0))
        _answer({"ok": bool(flush(60))})
    if args.mode == "writer":
        writer.end_run("FINISHED")
        left = int(writer.close(30))
    else:
        mlflow.end_run()
        left = 0 if mlflow.flush(30) else 1
    _answer({"ok": left == 0, "ended": True})
    return 0 if left == 0 else 1


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
