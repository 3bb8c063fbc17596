#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: `initdb` in a temporary folder
# (as the `postgres` user when run as root: initdb refuses root), started with
# `pg_ctl` on a free loopback port, trust authentication, no fsync (nothing
# in it outlives the run), stopped and removed at the end. Where `openssl` is
# installed the server also speaks TLS, with a certificate for 127.0.0.1 from
# a CA made for the run, so that `sslmode=require` is tested for real.
#
#   . .ci/postgres.sh          Sourced (as .ci/run does): when
#                              LIVEBASE_TEST_POSTGRES_URL is unset, starts a
#                              server and exports its URL there (and the CA's
#                              PEM file as LIVEBASE_TEST_POSTGRES_CA); the
#                              server stops when the sourcing shell exits.
#   bash .ci/postgres.sh --serve
#                              Starts a server, prints its URL on one line and
#                              the CA's file (or nothing) on the next, and
#                              keeps it until standard input closes (how
#                              livebase-testkit starts one for `cargo test`
#                              on a machine with PostgreSQL installed).
#
# Needs Debian's `postgresql` package (binaries under /usr/lib/postgresql/*/bin)
# and python3 (to find a free port).

livebase_pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Starts a server; sets LIVEBASE_PG_DIR and LIVEBASE_PG_URL.
livebase_pg_start() {
  local bin dir port
  bin="$(livebase_pg_bin)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2
    return 1
  fi
  dir="$(mktemp -d "${TMPDIR:-/tmp}/livebase-pg.XXXXXX")"
  LIVEBASE_PG_DIR="$dir"
  LIVEBASE_PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    LIVEBASE_PG_AS=(runuser -u postgres --)
  fi
  local tls=""
  LIVEBASE_PG_CA=""
  if command -v openssl >/dev/null 2>&1; then
    # EC keys: made in milliseconds. The server's certificate names 127.0.0.1.
    if (cd "$dir" \
        && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout ca.key -out ca.pem -days 2 -subj /CN=livebase-test-ca \
        && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout server.key -out server.csr -subj /CN=127.0.0.1 \
        && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext \
        && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out server.crt -days 2 -extfile server.ext \
        && chmod 600 server.key) >"$dir/openssl.log" 2>&1; then
      if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/server.key" "$dir/server.crt"; fi
      tls="-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
      LIVEBASE_PG_CA="$dir/ca.pem"
    else
      cat "$dir/openssl.log" >&2
    fi
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  if ! "${LIVEBASE_PG_AS[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
      -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    return 1
  fi
  if ! "${LIVEBASE_PG_AS[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=400 $tls" \
      start >/dev/null; then
    cat "$dir/server.log" >&2
    return 1
  fi
  LIVEBASE_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

livebase_pg_stop() {
  if [ -n "${LIVEBASE_PG_DIR:-}" ]; then
    "${LIVEBASE_PG_AS[@]}" "$(livebase_pg_bin)/pg_ctl" -D "$LIVEBASE_PG_DIR/data" -m immediate stop \
      >/dev/null 2>&1 || true
    rm -rf "$LIVEBASE_PG_DIR"
    LIVEBASE_PG_DIR=
  fi
}

if [ "${1:-}" = "--serve" ]; then
  set -eu
  trap livebase_pg_stop EXIT
  trap 'exit 1' INT TERM HUP
  livebase_pg_start
  echo "$LIVEBASE_PG_URL"
  echo "$LIVEBASE_PG_CA"
  # Until whoever started this closes our standard input (or exits).
  cat >/dev/null || true
  exit 0
fi

if [ -z "${LIVEBASE_TEST_POSTGRES_URL:-}" ]; then
  livebase_pg_start
  trap livebase_pg_stop EXIT
  export LIVEBASE_TEST_POSTGRES_URL="$LIVEBASE_PG_URL"
  export LIVEBASE_TEST_POSTGRES_CA="$LIVEBASE_PG_CA"
  echo "PostgreSQL for the tests at $LIVEBASE_TEST_POSTGRES_URL"
fi
