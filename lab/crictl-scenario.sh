#!/usr/bin/env bash
# Records crictl driving a whole pod lifecycle by hand against a private
# containerd, through criseq record:
#   runp, pull (from a loopback registry), create, start, stop, rm, stopp, rmp
# Usage (root): lab/crictl-scenario.sh OUT.pcapng
# Needs: containerd, runc, docker-registry, skopeo (lab_install), crictl
# (lab/build-tools.sh). Leaves nothing running; $LAB is removed unless KEEP=1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=$(realpath -m "$1")
LAB=${LAB:-$(mktemp -d /tmp/criseq-lab.XXXXXX)}
CRICTL=${CRICTL:-$("$LAB_REPO/lab/build-tools.sh" | tail -n 1)}

cleanup() {
	recorder_stop
	registry_stop
	containerd_stop
	[ "${KEEP:-}" = 1 ] || rm -rf "$LAB"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lab_build
containerd_start
registry_start
recorder_start "$out"

c() { "$CRICTL" -r "unix://$LAB/criseq.sock" -i "unix://$LAB/criseq.sock" -t 30s "$@"; }
cat >"$LAB/pod.json" <<JSON
{"metadata": {"name": "hello-crictl", "namespace": "default", "uid": "c71c7a11-0000-4000-8000-000000000001", "attempt": 0},
 "log_directory": "$LAB/pods/hello-crictl",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
cat >"$LAB/container.json" <<JSON
{"metadata": {"name": "web"},
 "image": {"image": "$REGISTRY/criseq/app:1"},
 "args": ["serve"],
 "envs": [{"key": "GREETING", "value": "s3cret-env-value"}],
 "log_path": "web.log"}
JSON
mkdir -p "$LAB/pods/hello-crictl"
sid=$(c runp "$LAB/pod.json")
c pull "$REGISTRY/criseq/app:1" >/dev/null
cid=$(c create "$sid" "$LAB/container.json" "$LAB/pod.json")
c start "$cid" >/dev/null
c inspect "$cid" >/dev/null
c stop "$cid" >/dev/null
c rm "$cid" >/dev/null
c stopp "$sid" >/dev/null
c rmp "$sid" >/dev/null
echo "sandbox $sid container $cid" >&2
