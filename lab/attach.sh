# The lab's "attach" scenario (sourced by run.sh): criseq record --attach on
# a kubelet that has been running for a while, compared with criseq's relay.
#
# Phase 1: kubelet talks to containerd through criseq record (the truth,
# capture.pcapng) for at least 60 s; then criseq record --attach starts on the
# same kubelet, found by name, its runtime socket read from its configuration
# (attach.pcapng); a pod starts and stops; attach stops.
# Phase 2: kubelet restarted talking to containerd directly (no relay, the case
# users have); attach again (attach-direct.pcapng); a pod starts and stops.
# lab/attach_e2e_test.go checks the captures.
# shellcheck shell=bash

# attach_start runs criseq record --attach into $1, its log into $2.
attach_start() {
	"$LAB/bin/criseq" record --attach -w "$1" >"$2" 2>&1 &
	ATTACH_PID=$!
	# Not left tracing if the lab is interrupted: stopped when run.sh exits.
	(while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM "$ATTACH_PID" 2>/dev/null) &
	WAIT=30 wait_for grep -q "attached to process" "$2" || { tail -n 20 "$2" >&2; attach_stop; return 1; }
}

attach_stop() {
	[ -n "${ATTACH_PID:-}" ] || return 0
	kill -TERM "$ATTACH_PID" 2>/dev/null || true
	wait "$ATTACH_PID" 2>/dev/null || true
	ATTACH_PID=
}

# attach_pod NAME: a pod starts, runs, and is deleted (start and stop flows).
attach_pod() {
	pod "$1" true "$APP_IMAGE" IfNotPresent | put_manifest "$1"
	wait_for running web || return 1
	sleep 2
	rm -f "$LAB/manifests/$1.yaml"
	WAIT=90 wait_for no_pods || return 1
	sleep 1
}

scenario_attach() {
	local dir=$OUT/attach ok=0
	# kubelet has been talking through the relay since the scenario began.
	echo "lab: attach: kubelet runs through criseq record for 60s first" >&2
	sleep 60
	attach_start "$dir/attach.pcapng" "$dir/attach.log" || return 1
	attach_pod attached || ok=1
	attach_stop

	echo "lab: attach: kubelet restarted on containerd's own socket" >&2
	cp "$LAB/logs/kubelet.log" "$dir/kubelet-relay.log"
	kubelet_stop
	rm -rf "$LAB/kubelet"
	kubelet_start "$LAB/containerd.sock" || return 1
	sleep 5
	attach_start "$dir/attach-direct.pcapng" "$dir/attach-direct.log" || return 1
	attach_pod direct-attached || ok=1
	attach_stop
	return $ok
}
