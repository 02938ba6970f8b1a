#!/usr/bin/env bash
# The real-node lab: a real kubelet (standalone, static pods) and containerd,
# with kubelet talking to containerd THROUGH criseq record. Runs the scenarios,
# writes each capture and its diagrams under OUT, and restores the host.
# Usage (root): [RUNTIME=containerd2] lab/run.sh [-o OUT] [SCENARIO...]
# Scenarios: warm pull init missing crashloop crictl tcp direct watch swap burst (default: all). "pull" also
# deletes the pod, so its capture holds a start and a stop flow; "burst" starts and removes 20 pods
# at once. RUNTIME=containerd2 runs them on containerd 2.x (built from the Go module proxy) instead
# of Debian's containerd 1.6.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/attach.sh" # scenario attach (not in the default list: sudo lab/run.sh attach)

OUT=lab-out
while getopts o: opt; do
	case $opt in
	o) OUT=$OPTARG ;;
	*) echo "usage: $0 [-o OUT] [SCENARIO...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
scenarios=("$@")
all=(warm pull init missing crashloop crictl tcp direct watch swap burst)
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${all[@]}")
case $RUNTIME in
containerd | containerd2) ;;
*) die "unknown RUNTIME $RUNTIME: containerd (Debian's, the default) or containerd2" ;;
esac
[ "$(id -u)" = 0 ] || die "the lab runs containers: run it as root (sudo make lab)"
# One lab at a time: the registry port, the bridge and kubelet's host changes are shared.
exec 9>/run/criseq-lab.lock
flock -w 3600 9 || die "another lab run holds /run/criseq-lab.lock"
OUT=$(realpath -m "$OUT")
mkdir -p "$OUT"

lab_install
tools=$("$LAB_REPO/lab/build-tools.sh" "$RUNTIME") || die "building the lab's tools failed"
{ read -r KUBELET; read -r CRICTL; read -r CONTAINERD2_DIR || true; } <<<"$tools"
LAB=$(mktemp -d /tmp/criseq-lab.XXXXXX)
export LAB

cleanup() {
	set +e
	[ -n "${KUBELET_PID:-}" ] && rm -f "$LAB"/manifests/*.yaml
	kubelet_stop
	recorder_stop
	if [ -S "$LAB/containerd.sock" ]; then
		direct rmp -fa >/dev/null 2>&1
	fi
	registry_stop
	containerd_stop
	host_restore
	[ "${KEEP:-}" = 1 ] || rm -rf "$LAB"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

host_save
lab_build
containerd_start
registry_start
mkdir -p "$LAB/cni"
cat >"$LAB/cni/10-criseq.conflist" <<'JSON'
{"cniVersion": "0.4.0", "name": "criseq-lab",
 "plugins": [{"type": "bridge", "bridge": "cni-criseq", "isGateway": true, "ipMasq": false,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.77.0/24"}]]}}]}
JSON

pod() { # name hostNetwork image pullPolicy [extra yaml]
	cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  hostNetwork: $2
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: $3
    imagePullPolicy: $4
    args: [serve]
    env: [{name: GREETING, value: s3cret-env-value}]
${5:-}
YAML
}

# scenario NAME: starts the recorder and kubelet, runs NAME's steps, stops both
# (pods removed first, so the next kubelet starts clean) and renders.
scenario() {
	local name=$1 dir="$OUT/$1"
	rm -rf "$dir" && mkdir -p "$dir"
	echo "lab: scenario $name" >&2
	local t0=$SECONDS
	case $name in
	tcp | direct) ;;
	watch) watch_start "$dir" || return 1 ;;
	swap) swap_start "$dir" || return 1 ;;
	*) recorder_start "$dir/capture.pcapng" || return 1 ;;
	esac
	# Only burst traces (each CRI request carries its pod's traceparent) and
	# opens the Evented PLEG stream: the other scenarios' captures are goldens.
	local KUBELET_EXTRA=
	[ "$name" = burst ] && KUBELET_EXTRA=$BURST_KUBELET
	local ok=true
	if [ "$name" = tcp ]; then
		scenario_tcp "$dir" || ok=false
	elif [ "$name" = crictl ]; then
		scenario_crictl || ok=false
	else
		# The "direct" scenario is "warm" without criseq in between.
		local sock=$LAB/criseq.sock
		case $name in direct | swap) sock=$LAB/containerd.sock ;; esac
		kubelet_start "$sock" || return 1
		"scenario_$name" || ok=false
		# What the pods came to (swap writes it before deleting its pod).
		[ -s "$dir/outcome.txt" ] || outcome >"$dir/outcome.txt" 2>&1 || true
		rm -f "$LAB"/manifests/*.yaml
		# kubelet removes a stopped pod's sandbox in its clean-up, once a
		# minute: only the scenarios whose stop flow is checked wait for it
		# (pull, watch and burst wait in their steps); the others end once
		# kubelet has stopped the pod, and the lab removes it.
		WAIT=30 wait_for pods_stopped || true
		cp "$LAB/logs/kubelet.log" "$dir/kubelet.log"
		kubelet_stop
		rm -rf "$LAB/kubelet" # each scenario's kubelet starts with no pull records
	fi
	recorder_stop
	direct rmp -fa >/dev/null 2>&1 || true
	[ -e "$dir/capture.pcapng" ] && [ "$name" != watch ] &&
		"$LAB/bin/criseq" render -o "$dir/diagrams" "$dir/capture.pcapng" >"$dir/render.txt" 2>&1 || true
	provenance "$name" "$dir"
	if ! $ok; then
		echo "lab: scenario $name FAILED after $((SECONDS - t0))s; logs in $dir" >&2
		return 1
	fi
	echo "lab: scenario $name done in $((SECONDS - t0))s → $dir" >&2
}

provenance() {
	local client="kubelet $("$KUBELET" --version 2>/dev/null | awk '{print $2}') (built from the Go module proxy, lab/kubelet), standalone, static pods"
	local how="Recorded with \`criseq record\` between kubelet and containerd."
	case $1 in
	crictl) client="$(basename "$(dirname "$CRICTL")" | tr - " ") (built from the Go module proxy)"
		how="Recorded with \`criseq record\` between crictl and containerd." ;;
	tcp) client="$(basename "$(dirname "$CRICTL")" | tr - " ") (built from the Go module proxy), through socat $(socat -V 2>/dev/null | awk '/socat version/{print $3; exit}')"
		how="Captured with \`$(tshark --version | head -1)\` on lo: \`tshark -i lo -f 'tcp port 10010' -w capture.pcapng\`." ;;
	esac
	local cmd="sudo lab/run.sh $1"
	[ "$RUNTIME" = containerd ] || cmd="sudo RUNTIME=$RUNTIME lab/run.sh $1"
	cat >"$2/README.md" <<MD
# $1 — recorded by criseq's lab (\`$cmd\`)

- Date: $(date -u +%Y-%m-%d)
- Client: $client
- Runtime: $(runtime_version), runc $(runc --version | awk 'NR==1{print $3}'), Debian $(cat /etc/debian_version)
- $how

$(scenario_text "$1")
$(call_counts "$2/capture.pcapng")
MD
}

# call_counts prints a Markdown table of the capture's calls per method, by criseq calls.
call_counts() {
	[ -e "$1" ] || return 0
	local rows
	rows=$("$LAB/bin/criseq" calls "$1" | awk 'NR > 1 {
		m = $4; sub(/.*\//, "", m); n[m]++
		if ($6 != "OK") bad[m]++
	} END { for (m in n) printf "| %s | %d | %d |\n", m, n[m], bad[m] }' | sort)
	printf '\nCalls per method (`criseq calls`), %d in all (not OK: failed, or still open when the capture ended):\n\n' \
		"$(awk -F'|' '{s += $3} END {print s}' <<<"$rows")"
	printf '| method | calls | not OK |\n|---|--:|--:|\n%s\n' "$rows"
}

scenario_text() {
	case $1 in
	warm) echo "A pod start with the image already present (hostNetwork, imagePullPolicy IfNotPresent)." ;;
	swap) echo "criseq record --swap on containerd's own socket, kubelet configured for that socket: the pod starts through criseq; criseq stops (SIGTERM) and puts the socket back while kubelet goes on, and the pod's deletion then works without criseq." ;;
	watch) echo "criseq watch in place of criseq record: the start and stop diagrams of a pod must be written while kubelet runs." ;;
	direct) echo "The warm scenario with kubelet talking to containerd directly, without criseq: its outcome.txt must equal warm's." ;;
	pull) echo "A pod start with a real PullImage from a loopback registry (imagePullPolicy Always), then the pod's deletion (its manifest removed): a start and a stop flow." ;;
	init) echo "A pod with an init container and two app containers on a bridge CNI network (pod IP in 198.18.77.0/24)." ;;
	missing) echo "A pod whose image does not exist in the registry: PullImage fails and kubelet backs off and retries." ;;
	crashloop) echo "A pod whose only container exits at once (restartPolicy Always): kubelet restarts it three times with its back-off (CrashLoopBackOff), each a CreateContainer at the next attempt, removing the older exited instance. Beside it a pod whose exec liveness probe always fails: kubelet kills its container (StopContainer) and restarts it, at least twice. Then both manifests are removed." ;;
	crictl) echo "crictl driving a pod lifecycle by hand: runp, pull, create, start, inspect, stop, rm, stopp, rmp." ;;
	burst) echo "20 static pods dropped at once (their manifests renamed into the static pod directory by one mv): 10 with imagePullPolicy Always on $REGISTRY/criseq/app:1 (a real PullImage each, from a loopback registry) and 10 IfNotPresent on $BURST_IMAGE (already present, imported), all hostNetwork; once all 20 ran, all 20 manifests removed at once (one rm), and the stop flows followed through kubelet's clean-up (RemovePodSandbox). kubelet runs with tracing on (each CRI request carries its pod sync's W3C traceparent; no collector listens) and the EventedPLEG feature gate on (a GetContainerEvents server stream)." ;;
	tcp) echo "The crictl lifecycle carried over TCP (socat: unix → 127.0.0.1:10010 → containerd's unix socket) and captured by tshark on the loopback interface, not by criseq: a capture made by someone else's tool." ;;
	esac
}

scenario_warm() {
	pod warm true "$APP_IMAGE" IfNotPresent | put_manifest warm
	wait_for running web || return 1
	sleep 2
}

scenario_direct() { scenario_warm; }

# watch_start runs criseq watch in place of the recorder: diagrams are
# written live into $1/diagrams, its lines into $1/watch.txt.
watch_start() {
	rm -f "$LAB/criseq.sock"
	"$LAB/bin/criseq" watch --upstream "$LAB/containerd.sock" --listen "$LAB/criseq.sock" \
		-o "$1/diagrams" -w "$1/capture.pcapng" >"$1/watch.txt" 2>"$LAB/logs/watch.log" &
	RECORDER_PID=$!
	wait_socket "$LAB/criseq.sock" "$LAB/logs/watch.log" "$RECORDER_PID"
}

# swap_start takes over containerd's own socket with criseq record --swap:
# kubelet is configured for containerd's socket and never hears of criseq.
swap_start() {
	"$LAB/bin/criseq" record --swap "$LAB/containerd.sock" -w "$1/capture.pcapng" >"$LAB/logs/criseq.log" 2>&1 &
	RECORDER_PID=$!
	WAIT=10 wait_for test -S "$LAB/containerd.sock.criseq-orig" || { tail "$LAB/logs/criseq.log" >&2; return 1; }
}

# scenario_swap: a pod starts through the swapped socket; then criseq stops
# (SIGTERM) and must put the socket back while kubelet goes on: the pod
# keeps running and its deletion works without criseq.
scenario_swap() {
	pod swapped true "$APP_IMAGE" IfNotPresent | put_manifest swapped
	wait_for running web || return 1
	sleep 2
	recorder_stop
	cp "$LAB/logs/criseq.log" "$OUT/swap/criseq.log"
	[ ! -e "$LAB/containerd.sock.criseq-orig" ] || { echo "lab: the socket was not put back" >&2; return 1; }
	sleep 3
	running web || { echo "lab: the pod stopped running after criseq restored the socket" >&2; return 1; }
	outcome >"$OUT/swap/outcome.txt" 2>&1 || true
	# kubelet goes on without criseq: the pod's deletion works.
	rm -f "$LAB/manifests/swapped.yaml"
	WAIT=30 wait_for pods_stopped || { echo "lab: kubelet did not stop the pod after criseq restored the socket" >&2; return 1; }
}

# scenario_watch: each diagram must appear while kubelet is still running;
# the stop's as soon as the pod is down, then again once kubelet's clean-up
# removed it.
scenario_watch() {
	local d=$OUT/watch/diagrams
	pod live true "$APP_IMAGE" IfNotPresent | put_manifest live
	WAIT=30 wait_for test -e "$d/default_live-criseq-lab_start.svg" || return 1
	rm -f "$LAB/manifests/live.yaml"
	WAIT=30 wait_for test -e "$d/default_live-criseq-lab_stop.svg" || return 1
	WAIT=120 wait_for grep -q "removed .* later.*(updated)" "$OUT/watch/watch.txt" || return 1
}

scenario_pull() {
	pod hello true "$REGISTRY/criseq/app:1" Always | put_manifest hello
	wait_for running web || return 1
	sleep 3
	rm -f "$LAB/manifests/hello.yaml"
	WAIT=90 wait_for no_pods || return 1
	sleep 1
}

scenario_init() {
	cat <<YAML | put_manifest init
apiVersion: v1
kind: Pod
metadata: {name: with-init, namespace: default}
spec:
  terminationGracePeriodSeconds: 5
  initContainers:
  - {name: setup, image: $APP_IMAGE, imagePullPolicy: IfNotPresent, args: [exit]}
  containers:
  - {name: web, image: $APP_IMAGE, imagePullPolicy: IfNotPresent, args: [serve]}
  - {name: sidecar, image: $APP_IMAGE, imagePullPolicy: IfNotPresent, args: [serve]}
YAML
	wait_for running sidecar || return 1
	wait_for running web || return 1
	sleep 2
}

# scenario_crashloop: a container that exits at once, restarted by kubelet
# with its back-off (none, 10s, 20s): three restarts, each a CreateContainer
# at the next attempt; beside it a pod whose liveness probe always fails,
# its container killed (StopContainer) and restarted. Then both deleted.
scenario_crashloop() {
	# attempt NAME N: container NAME was made at attempt N or later (kubelet
	# removes the older instances).
	attempt() { direct ps -a --name "^$1\$" -o json | grep -o '"attempt": [0-9]*' | awk -v n="$2" '$2 >= n {ok = 1} END {exit !ok}'; }
	cat <<YAML | put_manifest crashloop
apiVersion: v1
kind: Pod
metadata: {name: crashloop, namespace: default}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - {name: web, image: $APP_IMAGE, imagePullPolicy: IfNotPresent, args: [exit],
     env: [{name: GREETING, value: s3cret-env-value}]}
YAML
	cat <<YAML | put_manifest liveness
apiVersion: v1
kind: Pod
metadata: {name: liveness, namespace: default}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: probed
    image: $APP_IMAGE
    imagePullPolicy: IfNotPresent
    args: [serve]
    livenessProbe: {exec: {command: [/app, fail]}, initialDelaySeconds: 1, periodSeconds: 2, failureThreshold: 1}
YAML
	# The third restart comes 20s after the second's container exited.
	WAIT=90 wait_for attempt web 3 || return 1
	WAIT=60 wait_for attempt probed 2 || return 1
	sleep 2
}

scenario_missing() {
	pod missing true "$REGISTRY/criseq/missing:1" IfNotPresent | put_manifest missing
	# kubelet's back-off: 10s, 20s, ... wait for the retry after the first.
	WAIT=60 wait_for bash -c "[ \$(grep -c 'PullImage from image service failed' '$LAB/logs/kubelet.log') -ge 2 ]" || return 1
	sleep 1
}

# scenario_tcp: crictl → unix socket → socat → TCP 127.0.0.1:10010 → socat →
# containerd, captured by tshark on lo, as a user without criseq would.
scenario_tcp() {
	local dir=$1 pids=()
	socat TCP-LISTEN:10010,bind=127.0.0.1,fork,reuseaddr "UNIX-CONNECT:$LAB/containerd.sock" & pids+=($!)
	tshark -q -n -i lo -f "tcp port 10010" -w "$dir/capture.pcapng" >"$LAB/logs/tshark.log" 2>&1 & pids+=($!)
	# tshark says "Capturing on 'Loopback: lo'" once it captures.
	WAIT=20 wait_for grep -q "Capturing on" "$LAB/logs/tshark.log" || { kill "${pids[@]}"; return 1; }
	socat "UNIX-LISTEN:$LAB/tcp.sock,fork" TCP:127.0.0.1:10010 & pids+=($!)
	WAIT=10 wait_for test -S "$LAB/tcp.sock"
	local ok=0
	CRI_SOCK=$LAB/tcp.sock scenario_crictl || ok=1
	sleep 1
	kill "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	chmod 0600 "$dir/capture.pcapng"
	return $ok
}

# The KubeletConfiguration lines burst adds: tracing, whose W3C traceparent
# on every CRI request names the pod sync it belongs to (nothing needs to
# listen on the endpoint), and the Evented PLEG (a GetContainerEvents stream).
BURST_KUBELET='tracing: {endpoint: "127.0.0.1:4317", samplingRatePerMillion: 1000000}
featureGates: {EventedPLEG: true}'

# scenario_burst: 20 static pods at once, half pulling one image (Always),
# half on another already present; then all 20 removed at once, waiting for
# kubelet's clean-up to remove every sandbox.
scenario_burst() {
	local i stage=$LAB/burst-staging
	rm -rf "$stage" && mkdir -p "$stage"
	for i in $(seq -w 1 10); do
		pod "burst-pull-$i" true "$REGISTRY/criseq/app:1" Always >"$stage/burst-pull-$i.yaml"
		pod "burst-local-$i" true "$BURST_IMAGE" IfNotPresent >"$stage/burst-local-$i.yaml"
	done
	# Renames within one file system, all in one command: kubelet sees 20
	# whole manifests within a few milliseconds.
	mv "$stage"/*.yaml "$LAB/manifests/"
	WAIT=120 wait_for running_count 20 || return 1
	sleep 2
	rm -f "$LAB"/manifests/burst-*.yaml
	WAIT=150 wait_for no_pods || return 1
	sleep 1
}

scenario_crictl() {
	: >"$LAB/crictl.yaml"
	c() { "$CRICTL" -c "$LAB/crictl.yaml" -r "unix://${CRI_SOCK:-$LAB/criseq.sock}" -i "unix://${CRI_SOCK:-$LAB/criseq.sock}" -t 30s "$@"; }
	mkdir -p "$LAB/pods/hello-crictl"
	cat >"$LAB/pod.json" <<JSON
{"metadata": {"name": "hello-crictl", "namespace": "default", "uid": "c71c7a11-0000-4000-8000-000000000001", "attempt": 0},
 "log_directory": "$LAB/pods/hello-crictl",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
	cat >"$LAB/container.json" <<JSON
{"metadata": {"name": "web"}, "image": {"image": "$REGISTRY/criseq/app:1"}, "args": ["serve"],
 "envs": [{"key": "GREETING", "value": "s3cret-env-value"}], "log_path": "web.log"}
JSON
	local sid cid
	sid=$(c runp "$LAB/pod.json") &&
		c pull "$REGISTRY/criseq/app:1" >/dev/null &&
		cid=$(c create "$sid" "$LAB/container.json" "$LAB/pod.json") &&
		c start "$cid" >/dev/null &&
		c inspect "$cid" >/dev/null &&
		c stop "$cid" >/dev/null &&
		c rm "$cid" >/dev/null &&
		c stopp "$sid" >/dev/null &&
		c rmp "$sid" >/dev/null
}

failed=()
for s in "${scenarios[@]}"; do
	declare -F "scenario_$s" >/dev/null || die "unknown scenario $s (known: ${all[*]})"
	scenario "$s" || failed+=("$s")
done
echo "lab: captures and diagrams in $OUT" >&2
if [ ${#failed[@]} -gt 0 ]; then
	echo "lab: failed scenarios: ${failed[*]}" >&2
	exit 1
fi
