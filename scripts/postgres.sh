# Sourced by scripts/test.sh and .ci/run (after _env.sh): the PostgreSQL server the portal
# tests use (127.0.0.1:5432, trust auth for local connections of user postgres).
# Installs it with apt when missing and starts it when it is not running; a server that
# cannot be started fails the run (the tests never skip it).

postgres_ready() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

ensure_postgres() {
  if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install "PostgreSQL, for the portal tests" postgresql postgresql-client || return 1
  fi
  postgres_ready && return 0
  if command -v pg_lsclusters >/dev/null 2>&1; then
    local version cluster
    read -r version cluster _ < <(pg_lsclusters -h | head -n1) || true
    if [ -n "${version:-}" ]; then
      pg_ctlcluster "$version" "$cluster" start || true
    fi
  fi
  postgres_ready || service postgresql start >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    postgres_ready && return 0
    sleep 0.5
  done
  echo "PostgreSQL is not running on 127.0.0.1:5432 and could not be started" >&2
  return 1
}
