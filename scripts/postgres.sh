#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback, for the tests and for local runs with a Postgres checkpointer.
#
#   scripts/postgres.sh start [DIR]    initdb (once) and start; prints the URL (also written to DIR/url)
#   scripts/postgres.sh url [DIR]      print the URL of the running server
#   scripts/postgres.sh stop [DIR]     stop the server (the data stays, a later start reuses it)
#   scripts/postgres.sh destroy [DIR]  stop the server and delete its data
#
# DIR (default .pg) holds the state: url, and the data directory (DIR/data). PostgreSQL refuses to run
# as root, so as root the server runs as the `postgres` user; when that user cannot reach DIR/data (a
# private tmp dir, say) the data goes to a mktemp dir under ${TMPDIR:-/tmp} that it owns, and DIR/datadir
# names it. Trust authentication, loopback only (127.0.0.1 on a free port, and a Unix socket in the data
# directory), fsync off: a test server, never a production one.
#
# The binaries: pg_ctl on PATH, then the newest /usr/lib/postgresql/*/bin; failing both, as root with
# apt-get, the Debian package `postgresql` is installed.
set -euo pipefail

DB=supply_agent
usage() {
	echo "usage: $0 start|stop|url|destroy [DIR]" >&2
	exit 2
}
die() {
	echo "postgres.sh: $*" >&2
	exit 1
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
cmd=$1
dir=${2:-.pg}
case $cmd in start | stop | url | destroy) ;; *) usage ;; esac

is_root() { [ "$(id -u)" = 0 ]; }

# Run a command as the user that owns the cluster: postgres when we are root, else ourselves.
as_pg() {
	if ! is_root; then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		runuser -u postgres -- "$@"
	else
		su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
	fi
}

# A directory holding initdb, pg_ctl and postgres, or nothing.
find_bindir() {
	local p d
	if p=$(command -v pg_ctl 2>/dev/null); then
		d=$(dirname "$(readlink -f "$p")")
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return
		fi
	fi
	if p=$(command -v pg_config 2>/dev/null) && d=$("$p" --bindir 2>/dev/null) &&
		[ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
		echo "$d"
		return
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return
		fi
	done
}

bindir() {
	local d
	d=$(find_bindir)
	if [ -z "$d" ] && is_root && command -v apt-get >/dev/null 2>&1; then
		echo "postgres.sh: no PostgreSQL found; installing the Debian package postgresql" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q postgresql >&2 ||
			{ apt-get update -q >&2 && apt-get install -y -q postgresql >&2; } ||
			echo "postgres.sh: apt-get install postgresql failed" >&2
		d=$(find_bindir)
	fi
	[ -n "$d" ] || die "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in" \
		"/usr/lib/postgresql/*/bin; install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)"
	echo "$d"
}

# The data directory of DIR, if one was made.
datadir() {
	if [ -f "$dir/datadir" ]; then
		cat "$dir/datadir"
	else
		echo "$dir/data"
	fi
}

running() { [ -f "$1/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Make the data directory: DIR/data, or as root (when postgres cannot reach DIR/data) a mktemp dir.
make_datadir() {
	local data=$dir/data
	mkdir -p "$data"
	if is_root; then
		id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh postgres ||
			die "PostgreSQL will not run as root, and there is no postgres user to run it"
		chown postgres: "$data"
		chmod 700 "$data"
		if ! as_pg test -w "$data" 2>/dev/null; then
			rmdir "$data"
			data=$(mktemp -d "${TMPDIR:-/tmp}/supply-agent-pg.XXXXXX")
			chown postgres: "$data"
			chmod 700 "$data"
			echo "$data" >"$dir/datadir"
		fi
	fi
	echo "$data"
}

write_url() {
	local port url
	port=$(sed -n 4p "$1/postmaster.pid")
	url="postgresql://postgres@127.0.0.1:$port/$DB"
	echo "$url" >"$dir/url"
	echo "$url"
}

start() {
	local data port tries=0
	data=$(datadir)
	if [ ! -f "$data/PG_VERSION" ]; then
		if [ -d "$data" ] && [ -n "$(ls -A "$data")" ]; then
			die "$data is not empty and holds no cluster"
		fi
		# Left over from an initdb that failed: start afresh.
		[ -d "$data" ] && rmdir "$data"
		rm -f "$dir/datadir"
		data=$(make_datadir)
		as_pg "$BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; die "initdb -D $data failed"; }
		# Loopback only, whatever initdb's template says.
		printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 trust" \
			"host all all ::1/128 trust" | as_pg tee "$data/pg_hba.conf" >/dev/null
	fi
	if ! running "$data"; then
		# The Unix socket lives in the data directory, unless that path is too long for one (107 bytes):
		# nothing here needs it, everything connects over TCP.
		local sockets=$data
		[ ${#data} -le 80 ] || sockets=
		until
			port=$(free_port)
			as_pg "$BIN/pg_ctl" -D "$data" -w -t 60 -l "$data/log" \
				-o "-c listen_addresses=127.0.0.1 -p $port -k '$sockets' -c fsync=off" start >&2 9>&-
		do
			tries=$((tries + 1))
			[ "$tries" -lt 3 ] || { tail -n 30 "$data/log" >&2 || true; die "the server in $data did not start"; }
		done
	fi
	port=$(sed -n 4p "$data/postmaster.pid")
	local psql=("$BIN/psql")
	[ -x "$BIN/psql" ] || psql=(psql)
	psql+=(-X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
	if [ "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
		"${psql[@]}" -d postgres -c "CREATE DATABASE $DB" >/dev/null
	fi
	write_url "$data"
}

stop() {
	local data
	data=$(datadir)
	if [ -f "$data/PG_VERSION" ] && running "$data"; then
		as_pg "$BIN/pg_ctl" -D "$data" -m fast -w stop >&2
	fi
	rm -f "$dir/url"
}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# One command at a time on one DIR.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$dir/.lock" # closed for pg_ctl: the server must not inherit (and hold) the lock
	flock -w 120 9 || die "$dir/.lock: another postgres.sh holds it"
fi

case $cmd in
start)
	BIN=$(bindir)
	start
	;;
url)
	BIN=$(bindir)
	data=$(datadir)
	running "$data" || die "no server running in $data (scripts/postgres.sh start $dir)"
	write_url "$data"
	;;
stop)
	if [ -f "$(datadir)/PG_VERSION" ]; then
		BIN=$(bindir)
		stop
	fi
	;;
destroy)
	data=$(datadir)
	if [ -f "$data/PG_VERSION" ]; then
		BIN=$(bindir)
		stop
	fi
	rm -rf "$data" "$dir/datadir" "$dir/initdb.log" "$dir/url"
	;;
esac
