#!/usr/bin/env bash
# Installs the Debian packages criseq's tests use as real peers: tshark (checks
# the pcapng we write), plantuml (checks the .puml we draw), chromium (runs the
# real Mermaid on the .mmd we draw), containerd, runc, docker-registry and
# skopeo (the end-to-end tests). Only as root; elsewhere the tests that need
# them skip and say why. Then, where node and npm exist, installs Mermaid from
# npm into render/mermaid-check (its package-lock.json).
set -u
cd "$(dirname "$0")/.." || exit 1

# mermaid_deps installs render/mermaid-check's node_modules if missing or
# older than its package-lock.json.
mermaid_deps() {
	local d=render/mermaid-check
	[ "$d/node_modules/.package-lock.json" -nt "$d/package-lock.json" ] && return 0
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		echo "test-deps: no node/npm, so not installing $d; the Mermaid test will skip" >&2
		return 0
	fi
	echo "test-deps: npm ci in $d" >&2
	(cd "$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
		{ echo "test-deps: npm ci in $d failed" >&2; rm -rf "$d/node_modules"; return 1; }
}

pkgs=(tshark plantuml chromium containerd runc containernetworking-plugins docker-registry skopeo socat curl)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "test-deps: not root, so not installing ${missing[*]}; tests needing them will skip" >&2
		mermaid_deps
		exit 0
	fi
	echo "test-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ echo "test-deps: apt-get install failed" >&2; exit 1; }
fi
mermaid_deps
