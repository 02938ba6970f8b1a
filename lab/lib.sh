# Shared functions of criseq's lab: a private containerd (and registry,
# kubelet) under one directory, started and stopped by PID. Sourced by the
# lab's scripts; every daemon's log is in $LAB/logs.
# shellcheck shell=bash

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${CRISEQ_CACHE:=/var/cache/criseq}"
APP_IMAGE=criseq.local/app:1
PAUSE_IMAGE=criseq.local/pause:1
REGISTRY=127.0.0.1:5000

die() { echo "lab: $*" >&2; exit 1; }

# lab_install installs the Debian packages the lab uses (once).
lab_install() {
	local need=()
	for p in containerd runc containernetworking-plugins docker-registry skopeo tshark; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	echo "lab: installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

# lab_build builds criseq, the lab app and its images into $LAB/bin.
lab_build() {
	mkdir -p "$LAB/bin" "$LAB/images"
	(cd "$LAB_REPO" && go build -o "$LAB/bin/criseq" ./cmd/criseq &&
		CGO_ENABLED=0 go build -o "$LAB/bin/app" ./lab/app &&
		go build -o "$LAB/bin/mkimage" ./lab/mkimage) || die "build failed"
	"$LAB/bin/mkimage" -bin "$LAB/bin/app" -name "$APP_IMAGE" -o "$LAB/images/app.tar"
	"$LAB/bin/mkimage" -bin "$LAB/bin/app" -name "$PAUSE_IMAGE" -o "$LAB/images/pause.tar"
}

# wait_socket waits for a unix socket, or fails with the daemon's log tail.
wait_socket() {
	local sock=$1 log=$2 pid=$3
	for _ in $(seq 100); do
		[ -S "$sock" ] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "lab: daemon exited; last lines of $log:" >&2
			tail -n 30 "$log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "lab: $sock did not appear in 10s; last lines of $log:" >&2
	tail -n 30 "$log" >&2
	return 1
}

# containerd_start starts a containerd private to $LAB on $LAB/containerd.sock.
containerd_start() {
	mkdir -p "$LAB/containerd" "$LAB/cni" "$LAB/logs" "$LAB/runc"
	cat >"$LAB/containerd/config.toml" <<TOML
version = 2
root = "$LAB/containerd/root"
state = "$LAB/containerd/state"
[grpc]
  address = "$LAB/containerd.sock"
[ttrpc]
  address = "$LAB/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$LAB/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$LAB/cni"
TOML
	containerd --config "$LAB/containerd/config.toml" >"$LAB/logs/containerd.log" 2>&1 &
	CONTAINERD_PID=$!
	echo "$CONTAINERD_PID" >"$LAB/containerd.pid"
	wait_socket "$LAB/containerd.sock" "$LAB/logs/containerd.log" "$CONTAINERD_PID" || return 1
	for img in pause app; do
		ctr -a "$LAB/containerd.sock" -n k8s.io images import "$LAB/images/$img.tar" >/dev/null ||
			die "importing $img image failed"
	done
}

# containerd_stop stops containerd and the shims it left, and unmounts what
# they mounted under $LAB.
containerd_stop() {
	local pid
	pid=$(cat "$LAB/containerd.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $LAB/containerd.sock" 2>/dev/null
	sleep 0.2
	grep " $LAB/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -f "$LAB/containerd.pid"
}

# recorder_start runs criseq record between a client socket and containerd.
recorder_start() {
	local out=$1
	rm -f "$LAB/criseq.sock"
	"$LAB/bin/criseq" record --upstream "$LAB/containerd.sock" --listen "$LAB/criseq.sock" -w "$out" \
		>"$LAB/logs/criseq.log" 2>&1 &
	RECORDER_PID=$!
	wait_socket "$LAB/criseq.sock" "$LAB/logs/criseq.log" "$RECORDER_PID"
}

recorder_stop() {
	[ -n "${RECORDER_PID:-}" ] || return 0
	kill -TERM "$RECORDER_PID" 2>/dev/null
	wait "$RECORDER_PID" 2>/dev/null
	RECORDER_PID=
}

# registry_start runs a real OCI registry on 127.0.0.1:5000, storage under
# $LAB, and pushes the app image to it as $REGISTRY/criseq/app:1.
registry_start() {
	mkdir -p "$LAB/registry" "$LAB/logs"
	cat >"$LAB/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $LAB/registry/data
http:
  addr: $REGISTRY
YML
	docker-registry serve "$LAB/registry/config.yml" >"$LAB/logs/registry.log" 2>&1 &
	REGISTRY_PID=$!
	echo "$REGISTRY_PID" >"$LAB/registry.pid"
	for _ in $(seq 100); do
		curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && break
		kill -0 "$REGISTRY_PID" 2>/dev/null || { tail -n 30 "$LAB/logs/registry.log" >&2; return 1; }
		sleep 0.1
	done
	skopeo copy --quiet --dest-tls-verify=false "oci-archive:$LAB/images/app.tar" \
		"docker://$REGISTRY/criseq/app:1" >/dev/null || die "pushing to the registry failed"
}

registry_stop() {
	local pid
	pid=$(cat "$LAB/registry.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	rm -f "$LAB/registry.pid"
}
