#!/usr/bin/env bash
# An MLflow tracking server for gammaray without Docker: PostgreSQL from the distribution's
# `postgresql` package (Debian, Ubuntu) holds runs and metrics, a folder (or an s3:// URI)
# holds artifacts, served through the server so that clients need only http://HOST:5000.
#
#   sudo apt-get install -y postgresql && sudo systemctl start postgresql
#   pip install "mlflow==3.17.2" psycopg2-binary      # in the environment that runs the server
#   export MLFLOW_DB_PASSWORD=$(openssl rand -hex 16)  # letters and digits: it goes in a URI
#   cluster/mlflow/start-mlflow.sh                     # serves until stopped (Ctrl-C, or a systemd unit)
#
# Run it again at any time: the role and the database are created only if missing. It needs
# the PostgreSQL superuser (`postgres`), through sudo, or directly when run as root.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (the password of the mlflow database role)}"
DB_PORT="${DB_PORT:-5432}"                        # PostgreSQL: local only, never opened to others
PG_SOCKET_DIR="${PG_SOCKET_DIR:-/var/run/postgresql}"
MLFLOW_HOST="${MLFLOW_HOST:-0.0.0.0}"             # every interface: Ray nodes and laptops connect
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_ARTIFACTS="${MLFLOW_ARTIFACTS:-/srv/mlflow-artifacts}"   # or s3://bucket/prefix (needs boto3)
# Host headers the server answers. MLflow's default is localhost and private IPs; a DNS name
# such as mlflow.example.com must be added (keep the private ranges when you add one).
MLFLOW_ALLOWED_HOSTS="${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,192.168.*,172.1[6-9].*,172.2[0-9].*,172.3[01].*}"

if [[ ! $MLFLOW_DB_PASSWORD =~ ^[A-Za-z0-9._~-]+$ ]]; then
  echo "start-mlflow: MLFLOW_DB_PASSWORD: use letters, digits and ._~- only (it is part of a URI)" >&2
  exit 2
fi

# psql as the PostgreSQL superuser, over the local socket (peer authentication).
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    sudo -u postgres "$@"
  fi
}

if ! pg_isready -q -h "$PG_SOCKET_DIR" -p "$DB_PORT"; then
  echo "start-mlflow: PostgreSQL is not answering on port $DB_PORT; start it (sudo systemctl start postgresql)" >&2
  exit 1
fi
if ! command -v mlflow >/dev/null; then
  echo "start-mlflow: no mlflow command: activate the environment it is installed in" >&2
  exit 1
fi
# The driver must be importable by the Python that runs `mlflow` (its script's #! line).
read -r shebang < "$(command -v mlflow)"
read -r -a mlflow_python <<< "${shebang#\#!}"
if ! "${mlflow_python[@]}" -c "import psycopg2" 2>/dev/null; then
  echo "start-mlflow: the PostgreSQL driver is missing next to mlflow: pip install psycopg2-binary" >&2
  exit 1
fi

# The role and its database, each only if missing; the password is (re)set every time, so
# changing MLFLOW_DB_PASSWORD and running again takes effect. It travels as a psql variable,
# quoted by psql (:'password'), never as part of the SQL text.
as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$DB_PORT" -d postgres \
  -v password="$MLFLOW_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec
ALTER ROLE mlflow PASSWORD :'password';
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SQL

if [[ $MLFLOW_ARTIFACTS != *://* ]]; then
  mkdir -p "$MLFLOW_ARTIFACTS"
fi

# The backend URI holds the password: given through the option's environment variable
# (MLFLOW_BACKEND_STORE_URI is --backend-store-uri), it stays out of `ps` output.
export MLFLOW_BACKEND_STORE_URI="postgresql://mlflow:${MLFLOW_DB_PASSWORD}@127.0.0.1:${DB_PORT}/mlflow"
# The server's background job runner serves GenAI features gammaray does not use.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

echo "start-mlflow: http://$(hostname -f 2>/dev/null || hostname):$MLFLOW_PORT (artifacts: $MLFLOW_ARTIFACTS)" >&2
# Artifacts are proxied (--serve-artifacts is the default): runs get mlflow-artifacts:/
# locations, which the server resolves to --artifacts-destination.
exec mlflow server \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --host "$MLFLOW_HOST" \
  --port "$MLFLOW_PORT" \
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
