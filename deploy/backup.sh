#!/usr/bin/env bash
# Backs up the compose stack (deploy/compose.yaml) into one folder, while it runs:
#
#   deploy/backup.sh [BACKUP_DIR]        (default: ./trackbridge-backup-<UTC time>)
#
# - the receiver's queue and tokens: SQLite's online backup (a consistent copy of queue.db, the
#   events acknowledged to clients and not yet all in MLflow, and tokens.db), plus its
#   receiver-id and mlflow-store.json;
# - MLflow's runs and metrics: pg_dump of its PostgreSQL database (custom format);
# - MLflow's users and permissions: SQLite's online backup of basic_auth.db;
# - artifacts stay in the S3 store: back that up with the store's own tools (mc mirror, aws s3
#   sync, bucket replication).
# Restore: docs/how-to/operate.md ("Backups").
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-./trackbridge-backup-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" && chmod 700 "$out"
compose=(docker compose -f compose.yaml --env-file .env)

# SQLite's backup API through the Python each image has (the slim images carry no sqlite3).
sqlite_backup() {  # service, database inside it, file name in $out
  "${compose[@]}" exec -T "$1" python -c '
import sqlite3, sys, tempfile, os
source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
fd, path = tempfile.mkstemp(suffix=".db")
os.close(fd)
copy = sqlite3.connect(path)
source.backup(copy)
copy.close()
sys.stdout.buffer.write(open(path, "rb").read())
os.unlink(path)
' "$2" > "$out/$3"
}

sqlite_backup receiver /var/lib/trackbridge/queue.db receiver-queue.db
if "${compose[@]}" exec -T receiver test -f /var/lib/trackbridge/tokens.db; then
  sqlite_backup receiver /var/lib/trackbridge/tokens.db receiver-tokens.db
fi
for file in receiver-id mlflow-store.json; do
  "${compose[@]}" exec -T receiver cat "/var/lib/trackbridge/$file" > "$out/receiver-$file" || true
done
"${compose[@]}" exec -T postgres pg_dump -U mlflow -d mlflow -Fc > "$out/mlflow-postgres.dump"
sqlite_backup mlflow /var/lib/mlflow-auth/basic_auth.db mlflow-auth.db
chmod 600 "$out"/*
echo "backed up to $out"
