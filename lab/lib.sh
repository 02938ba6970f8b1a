# Shared functions of criseq's lab: a private containerd (and registry,
# kubelet) under one directory, started and stopped by PID. Sourced by the
# lab's scripts; every daemon's log is in $LAB/logs.
# shellcheck shell=bash

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${CRISEQ_CACHE:=/var/cache/criseq}"
APP_IMAGE=criseq.local/app:1
PAUSE_IMAGE=criseq.local/pause:1
# The image burst's IfNotPresent pods run: present, and with an ID of its
# own (the registry's app image shares APP_IMAGE's ID, and kubelet 1.37
# re-pulls a present image whose ID it has pulled under another name).
BURST_IMAGE=criseq.local/burst:1
REGISTRY=127.0.0.1:5000
# The runtime: Debian's containerd 1.6 (containerd), or containerd 2.x
# built from the Go module proxy (containerd2).
RUNTIME=${RUNTIME:-containerd}

die() { echo "lab: $*" >&2; exit 1; }

# runtime_version names the runtime the lab runs, e.g. "containerd v2.4.2".
runtime_version() {
	local bin=containerd
	[ "$RUNTIME" = containerd2 ] && bin=$CONTAINERD2_DIR/containerd
	"$bin" --version | awk '{print $1, $3}'
}

# lab_install installs the Debian packages the lab uses (once).
lab_install() {
	local need=()
	for p in containerd runc containernetworking-plugins docker-registry skopeo tshark socat curl; do
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
	"$LAB/bin/mkimage" -bin "$LAB/bin/app" -name "$BURST_IMAGE" -o "$LAB/images/burst.tar"
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

# containerd_start starts a containerd private to $LAB on $LAB/containerd.sock:
# Debian's containerd 1.6, or with RUNTIME=containerd2 the one in
# $CONTAINERD2_DIR (lab/build-tools.sh containerd2), first on its PATH so it
# runs its own shim.
containerd_start() {
	mkdir -p "$LAB/containerd" "$LAB/cni" "$LAB/logs" "$LAB/runc"
	local path=$PATH
	case $RUNTIME in
	containerd) containerd_config1 ;;
	containerd2) containerd_config3; path=$CONTAINERD2_DIR:$PATH ;;
	esac >"$LAB/containerd/config.toml"
	PATH=$path containerd --config "$LAB/containerd/config.toml" >"$LAB/logs/containerd.log" 2>&1 &
	CONTAINERD_PID=$!
	echo "$CONTAINERD_PID" >"$LAB/containerd.pid"
	wait_socket "$LAB/containerd.sock" "$LAB/logs/containerd.log" "$CONTAINERD_PID" || return 1
	# A key containerd does not know is only a warning in its log: fail on it.
	if grep -i "unknown key" "$LAB/logs/containerd.log" >&2; then
		echo "lab: containerd did not take its whole config (above)" >&2
		return 1
	fi
	for img in pause app burst; do
		ctr -a "$LAB/containerd.sock" -n k8s.io images import "$LAB/images/$img.tar" >/dev/null ||
			die "importing $img image failed"
	done
}

# containerd_config1 is containerd 1.6's config (version 2, one CRI plugin).
containerd_config1() {
	cat <<TOML
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
}

# containerd_config3 is the same for containerd 2.x (version 3): the CRI
# plugin is split into an image service (snapshotter, the sandbox image as
# a pinned image) and a runtime service (runtimes, CNI, OOM score).
containerd_config3() {
	cat <<TOML
version = 3
root = "$LAB/containerd/root"
state = "$LAB/containerd/state"
[grpc]
  address = "$LAB/containerd.sock"
[ttrpc]
  address = "$LAB/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        Root = "$LAB/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$LAB/cni"
TOML
}

# containerd_stop stops containerd and the shims it left, and unmounts what
# they mounted under $LAB.
containerd_stop() {
	local pid
	pid=$(cat "$LAB/containerd.pid" 2>/dev/null) || return 0
	if kill "$pid" 2>/dev/null; then for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; fi
	kill -9 "$pid" 2>/dev/null || true
	# Containers and their shims outlive containerd (when the pods could
	# not be removed first): kill the containers through runc's state here,
	# which also removes their cgroups, then the shims. containerd 2.x writes
	# no shim.pid: find them by this lab's containerd address.
	local id shims
	for id in $(runc --root "$LAB/runc/k8s.io" list -q 2>/dev/null); do
		runc --root "$LAB/runc/k8s.io" delete -f "$id" 2>/dev/null
	done
	shims=$(lab_shims)
	[ -z "$shims" ] || kill -9 $shims 2>/dev/null
	sleep 0.2
	grep " $LAB/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -f "$LAB/containerd.pid"
}

# lab_shims prints the PIDs of the runc shims of this lab's containerd.
lab_shims() {
	local f pid
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/} && pid=${pid%/cmdline}
		tr '\0' ' ' 2>/dev/null <"$f" | grep -q "^[^ ]*containerd-shim-runc-v2 .*-address $LAB/containerd.sock " && echo "$pid"
	done
	return 0
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
	kill -TERM "$RECORDER_PID" 2>/dev/null || true
	wait "$RECORDER_PID" 2>/dev/null || true
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
	kill "$pid" 2>/dev/null || true
	rm -f "$LAB/registry.pid"
}

# host_save records the host state kubelet changes, so host_restore can put it back.
host_save() {
	mkdir -p "$LAB/host"
	for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
		sysctl -n "$s" >"$LAB/host/$s" 2>/dev/null || true
	done
	for t in iptables ip6tables; do
		command -v $t >/dev/null || continue
		for tbl in filter nat mangle; do
			$t -t $tbl -S 2>/dev/null | awk '$1=="-N"{print $2}' >"$LAB/host/$t-$tbl.chains" || true
		done
	done
	ls /var/log/containers/ 2>/dev/null >"$LAB/host/log-links" || true
	[ -e /var/lib/kubelet/device-plugins/kubelet.sock ] && touch "$LAB/host/had-device-sock"
	[ -e /var/lib/cni/results ] && touch "$LAB/host/had-cni-results"
	[ -e /var/lib/kubelet ] && touch "$LAB/host/had-var-lib-kubelet"
	return 0
}

# host_restore undoes what kubelet changed on the host (see host_save).
host_restore() {
	[ -d "$LAB/host" ] || return 0
	for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
		[ -s "$LAB/host/$s" ] && sysctl -qw "$s=$(cat "$LAB/host/$s")" 2>/dev/null
	done
	for t in iptables ip6tables; do
		command -v $t >/dev/null || continue
		for tbl in filter nat mangle; do
			$t -t $tbl -S 2>/dev/null | awk '$1=="-N"{print $2}' | while read -r chain; do
				grep -qx "$chain" "$LAB/host/$t-$tbl.chains" 2>/dev/null && continue
				# A chain kubelet added: drop the rules that jump to it, then it.
				$t -t $tbl -S 2>/dev/null | grep -- "-j $chain\$" | sed 's/^-A/-D/' |
					while read -r rule; do eval "$t -t $tbl $rule" 2>/dev/null; done
				$t -t $tbl -F "$chain" 2>/dev/null
				$t -t $tbl -X "$chain" 2>/dev/null
			done
		done
	done
	if [ -d /var/log/containers ]; then
		for l in /var/log/containers/*; do
			[ -L "$l" ] || continue
			grep -qx "$(basename "$l")" "$LAB/host/log-links" 2>/dev/null || rm -f "$l"
		done
	fi
	[ -e "$LAB/host/had-device-sock" ] || rm -f /var/lib/kubelet/device-plugins/kubelet.sock
	[ -e "$LAB/host/had-var-lib-kubelet" ] || rm -rf /var/lib/kubelet
	[ -e "$LAB/host/had-cni-results" ] || rm -rf /var/lib/cni/results
	ip link del cni-criseq 2>/dev/null || true
	rm -rf "$LAB/host"
}

# kubelet_start runs a real kubelet in standalone mode (static pods from
# $LAB/manifests), talking to the runtime through $1 (a unix socket path).
# $KUBELET_EXTRA is appended to its KubeletConfiguration.
kubelet_start() {
	local sock=$1
	mkdir -p "$LAB/manifests" "$LAB/kubelet" "$LAB/pki" "$LAB/pod-logs" "$LAB/volume-plugins" "$LAB/logs"
	cat >"$LAB/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $LAB/manifests
enableServer: false
readOnlyPort: 0
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
cgroupDriver: cgroupfs
failSwapOn: false
protectKernelDefaults: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
podLogsDir: $LAB/pod-logs
volumePluginDir: $LAB/volume-plugins
syncFrequency: 10s
fileCheckFrequency: 1s
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
${KUBELET_EXTRA:-}
YAML
	"$KUBELET" --config "$LAB/kubelet.yaml" --root-dir "$LAB/kubelet" --cert-dir "$LAB/pki" \
		--hostname-override criseq-lab --v 2 --vmodule remote_runtime=10,remote_image=10 \
		>"$LAB/logs/kubelet.log" 2>&1 &
	KUBELET_PID=$!
	echo "$KUBELET_PID" >"$LAB/kubelet.pid"
	# Ready when it has talked to the runtime (its first relist).
	for _ in $(seq 150); do
		grep -q "Starting to sync pod status\|Started kubelet" "$LAB/logs/kubelet.log" 2>/dev/null && break
		kill -0 "$KUBELET_PID" 2>/dev/null || { echo "lab: kubelet exited; last lines:" >&2; tail -n 30 "$LAB/logs/kubelet.log" >&2; return 1; }
		sleep 0.1
	done
	sleep 1
}

kubelet_stop() {
	local pid
	pid=$(cat "$LAB/kubelet.pid" 2>/dev/null) || return 0
	if kill "$pid" 2>/dev/null; then for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; fi
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$LAB/kubelet.pid"
	# kubelet bind-mounts its root dir onto itself.
	while grep -q " $LAB/kubelet " /proc/mounts; do umount "$LAB/kubelet" 2>/dev/null || umount -l "$LAB/kubelet"; done
}

# direct runs crictl on containerd itself, bypassing the recorder, so the
# lab's own checks never show up in a capture.
direct() { : >"$LAB/crictl.yaml"; "$CRICTL" -c "$LAB/crictl.yaml" -r "unix://$LAB/containerd.sock" -i "unix://$LAB/containerd.sock" -t 30s "$@"; }

# put_manifest writes a static pod manifest atomically (kubelet rejects a half-written one).
put_manifest() {
	local name=$1
	cat >"$LAB/manifests/.$name.tmp"
	mv "$LAB/manifests/.$name.tmp" "$LAB/manifests/$name.yaml"
}

# wait_for CMD... retries a check for up to $WAIT seconds (default 60).
wait_for() {
	local n=$(( ${WAIT:-60} * 10 ))
	for _ in $(seq "$n"); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "lab: timed out waiting for: $*" >&2
	if [ -n "${KUBELET_PID:-}" ]; then
		kill -0 "$KUBELET_PID" 2>/dev/null || echo "lab: kubelet is not running" >&2
		echo "lab: last lines of kubelet's log:" >&2
		tail -n 15 "$LAB/logs/kubelet.log" >&2
	fi
	return 1
}

# outcome writes what the pods came to: one line per container, name,
# state and attempt, sorted; it compares runs with and without criseq.
outcome() {
	# Table columns are 2+ spaces apart: CONTAINER IMAGE CREATED STATE NAME ATTEMPT ...
	direct ps -a | awk -F '  +' 'NR > 1 {print $5, $4, $6}' | sort
}

# running NAME: a container named NAME runs.
running() { [ -n "$(direct ps -q --name "^$1\$" --state running)" ]; }
# running_count N: N containers run.
running_count() { [ "$(direct ps -q --state running | wc -l)" -eq "$1" ]; }
# pods_stopped: no container runs and no sandbox is ready (kubelet stopped its pods).
pods_stopped() { [ -z "$(direct ps -q --state running)" ] && [ -z "$(direct pods -q --state ready)" ]; }
# no_pods: no sandbox left in containerd.
no_pods() { [ -z "$(direct pods -q)" ]; }
