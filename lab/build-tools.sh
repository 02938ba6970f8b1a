#!/usr/bin/env bash
# Builds the real CRI peers the lab and the end-to-end tests use, from the Go
# module proxy, into a cache outside the clone keyed by version:
#   $CRISEQ_CACHE/kubelet-v1.37.2/kubelet  (cold build ~6.5 min on 2 cores)
#   $CRISEQ_CACHE/crictl-v1.37.0/crictl    (~1.5 min)
#   $CRISEQ_CACHE/containerd-v2.4.2/       (containerd and its runc shim, ~1 min;
#                                           only when asked: build-tools.sh containerd2)
# Prints the paths (kubelet, crictl, then the containerd 2 directory if asked).
# Safe to run again: cached binaries are reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CRISEQ_CACHE:-/var/cache/criseq}
kubelet_version=v1.37.2
crictl_version=v1.37.0
containerd2_version=v2.4.2

kdir=$cache/kubelet-$kubelet_version
if [ ! -x "$kdir/kubelet" ]; then
	mkdir -p "$kdir"
	echo "building kubelet $kubelet_version (cold: several minutes)" >&2
	pkg=k8s.io/component-base/version
	(cd "$here/kubelet" && CGO_ENABLED=0 go build -trimpath -o "$kdir/kubelet.tmp" \
		-ldflags "-s -w -X $pkg.gitVersion=$kubelet_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=37" \
		k8s.io/kubernetes/cmd/kubelet)
	mv "$kdir/kubelet.tmp" "$kdir/kubelet"
fi

cdir=$cache/crictl-$crictl_version
if [ ! -x "$cdir/crictl" ]; then
	mkdir -p "$cdir"
	echo "building crictl $crictl_version" >&2
	GOBIN=$cdir CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
fi
echo "$kdir/kubelet"
echo "$cdir/crictl"

if [ "${1:-}" = containerd2 ]; then
	ddir=$cache/containerd-$containerd2_version
	if [ ! -x "$ddir/containerd" ] || [ ! -x "$ddir/containerd-shim-runc-v2" ]; then
		echo "building containerd $containerd2_version" >&2
		# Built into a temporary directory and renamed, so a broken build is never cached.
		rm -rf "$ddir.tmp" && mkdir -p "$ddir.tmp"
		# The version a release build stamps in (else it reports 2.4.2+unknown).
		GOBIN=$ddir.tmp go install -trimpath \
			-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd2_version" \
			"github.com/containerd/containerd/v2/cmd/containerd@$containerd2_version" \
			"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd2_version"
		rm -rf "$ddir" && mv "$ddir.tmp" "$ddir"
	fi
	echo "$ddir"
fi
