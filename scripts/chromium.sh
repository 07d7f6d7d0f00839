#!/usr/bin/env bash
# Headless Chromium for the console's browser tests (tests/e2e/test_console_browser.py).
#
#   scripts/chromium.sh path     print the path of a Chromium binary, installing Debian's package
#                                `chromium` first (as root, with apt-get) when there is none
#
# Playwright (a dev dependency) drives it over its DevTools protocol; Playwright's own browser download
# is never used (no network but the package registries). The browser is started by the test, headless,
# on pages served on loopback only.
set -euo pipefail

usage() {
	echo "usage: $0 path" >&2
	exit 2
}
[ $# -eq 1 ] && [ "$1" = path ] || usage

find_chromium() {
	local c
	for c in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
		[ -n "$c" ] || continue
		if p=$(command -v "$c" 2>/dev/null); then
			echo "$p"
			return
		fi
	done
}

bin=$(find_chromium)
if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "chromium.sh: no Chromium found; installing the Debian package chromium" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q chromium >&2 ||
		{ apt-get update -q >&2 && apt-get install -y -q chromium >&2; } ||
		echo "chromium.sh: apt-get install chromium failed" >&2
	bin=$(find_chromium)
fi
[ -n "$bin" ] || {
	echo "chromium.sh: no Chromium (chromium, chromium-browser or google-chrome on PATH); install one" \
		"(Debian/Ubuntu: apt-get install chromium) or set CHROMIUM" >&2
	exit 1
}
echo "$bin"
