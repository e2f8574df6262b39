#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: redis-server and
# redis-cli (storage tests, Redis Cluster), prometheus and promtool (operator
# kit). On Debian/Ubuntu as root it uses apt-get; elsewhere it says what to
# install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Jaeger (the OTLP collector of the tracing tests) is a Go program pinned in
# tools/jaeger, a module of its own; built once, into /usr/local/bin as root,
# else into $(go env GOPATH)/bin (which must be on PATH).
if ! command -v jaeger >/dev/null 2>&1; then
	bindir=/usr/local/bin
	[ -w "$bindir" ] || bindir="$(go env GOPATH)/bin"
	echo "test-deps: building jaeger into $bindir (a few minutes the first time)"
	(cd tools/jaeger && go build -o "$bindir/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli    >/dev/null 2>&1 || missing+=(redis-tools)
command -v prometheus   >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool     >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium     >/dev/null 2>&1 || missing+=(chromium)
command -v tmux         >/dev/null 2>&1 || missing+=(tmux)

if [ ${#missing[@]} -eq 0 ]; then
	echo "test-deps: redis-server, redis-cli, prometheus, promtool, chromium, tmux and jaeger present"
	exit 0
fi

# unique package names
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "test-deps: installing ${pkgs[*]}"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: please install ${pkgs[*]} (Debian: apt-get install -y ${pkgs[*]})" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
# The Debian packages start system services; the tests start their own
# servers on free loopback ports and never use these.
for cmd in redis-server redis-cli prometheus promtool chromium tmux; do
	command -v "$cmd" >/dev/null 2>&1 || { echo "test-deps: $cmd still missing" >&2; exit 1; }
done
echo "test-deps: installed ${pkgs[*]}"
