"""Creates the receiver's own MLflow user, not an admin (compose one-shot; also by hand).

Runs as MLflow's admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or
MLFLOW_TRACKING_PASSWORD_FILE) against MLFLOW_TRACKING_URI, and makes the user
RECEIVER_MLFLOW_USERNAME with the password in the file RECEIVER_MLFLOW_PASSWORD_FILE; a user that
exists gets that password. MLflow lets any user create experiments and makes their creator
MANAGE them, so the receiver needs nothing more for the jobs' experiments it creates; for an
experiment someone else made, grant it EDIT (MLflow's UI or AuthServiceClient's
create_experiment_permission).
"""

import os
import sys
import warnings
from pathlib import Path


def main() -> int:
    if os.environ.get("MLFLOW_TRACKING_PASSWORD_FILE"):
        path = Path(os.environ["MLFLOW_TRACKING_PASSWORD_FILE"])
        os.environ["MLFLOW_TRACKING_PASSWORD"] = path.read_text().strip()
    username = os.environ["RECEIVER_MLFLOW_USERNAME"]
    password = Path(os.environ["RECEIVER_MLFLOW_PASSWORD_FILE"]).read_text().strip()
    if username == os.environ.get("MLFLOW_TRACKING_USERNAME"):
        print("the receiver's user must not be the admin", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.exceptions import MlflowException
        from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    try:
        client.create_user(username, password)
        print(f"MLflow user {username} created (not an admin)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        print(f"MLflow user {username} exists: its password set")
    if client.get_user(username).is_admin:
        print(f"MLflow user {username} is an admin: make it a plain user", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
