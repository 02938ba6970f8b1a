#!/usr/bin/env bash
# Installs the Debian packages criseq's tests use as real peers: tshark (checks
# the pcapng we write), plantuml (checks the .puml we draw), containerd, runc,
# docker-registry and skopeo (the end-to-end tests). Only as root; elsewhere
# the tests that need them skip and say why.
set -u
pkgs=(tshark plantuml containerd runc containernetworking-plugins docker-registry skopeo socat curl)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "test-deps: not root, so not installing ${missing[*]}; tests needing them will skip" >&2
	exit 0
fi
echo "test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
	{ echo "test-deps: apt-get install failed" >&2; exit 1; }
