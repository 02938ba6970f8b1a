package ebpf

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Lists is what a traced process's configuration says of KEP-5825's
// Stream* list methods (StreamContainers, ...), which read on the wire
// as their List* twins. A decoder told that a client never calls them
// names the calls caught midway that read as either (decode.Options.
// ListsUnary).
type Lists struct {
	// Unary: the process never calls the Stream* list methods.
	Unary bool
	// Why says how that was found, for the capture's note and the user.
	Why string
}

// The kubelet releases whose CRIListStreaming default criseq knows: the
// gate came in v1.36 as alpha (off), and kubelets before it have no
// Stream* calls at all.
const (
	listStreamingFrom = 36 // first minor with the gate
	listStreamingKnow = 37 // last minor whose default (off) is known here
)

// gateRE finds the CRIListStreaming gate in a KubeletConfiguration file,
// YAML or JSON: the key is nowhere else.
var gateRE = regexp.MustCompile(`(?m)["']?\bCRIListStreaming["']?\s*:\s*["']?(true|false)\b`)

// kubeletLists finds out whether kubelet process pid streams lists: the
// gate in its --feature-gates flags, else in its --config-dir drop-ins,
// else in its --config file; unset, the default of its version.
func kubeletLists(pid int) Lists {
	name := procName(pid)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if name != DefaultComm && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != DefaultComm {
		return Lists{Why: fmt.Sprintf("process %d is not kubelet", pid)}
	}
	args := cmdline(pid)
	root := fmt.Sprintf("/proc/%d/root", pid)
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	inRoot := func(p string) string {
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		return filepath.Join(root, p)
	}
	return listsOf(args, inRoot, func() string { return kubeletVersion(fmt.Sprintf("/proc/%d/exe", pid)) })
}

// listsOf decides from kubelet's arguments; path maps a path of kubelet's
// to one criseq can open; version, called only if the gate is not set,
// returns kubelet's version ("v1.37.2") or "".
func listsOf(args []string, path func(string) string, version func() string) Lists {
	var gates []string
	var config, configDir string
	for _, f := range parseFlags(args) {
		switch f.name {
		case "feature-gates":
			gates = append(gates, f.val)
		case "config":
			config = f.val
		case "config-dir":
			configDir = f.val
		}
	}
	// Flags override the drop-ins, which override the file; the last of
	// each wins.
	var on *bool
	set := func(v string) {
		b := v == "true"
		on = &b
	}
	where := ""
	for _, g := range slices.Backward(gates) {
		for _, kv := range slices.Backward(strings.Split(g, ",")) {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if k == "CRIListStreaming" && on == nil {
				set(strings.ToLower(strings.TrimSpace(v)))
				where = "--feature-gates"
			}
		}
	}
	if on == nil && configDir != "" {
		ents, _ := os.ReadDir(path(configDir))
		for _, e := range slices.Backward(ents) { // lexical order; the last wins
			if on != nil || e.IsDir() || !strings.HasSuffix(e.Name(), ".conf") {
				continue
			}
			if v := gateIn(filepath.Join(path(configDir), e.Name())); v != "" {
				set(v)
				where = filepath.Join(configDir, e.Name())
			}
		}
	}
	if on == nil && config != "" {
		if v := gateIn(path(config)); v != "" {
			set(v)
			where = config
		}
	}
	switch {
	case on != nil && *on:
		return Lists{Why: "kubelet sets CRIListStreaming=true (" + where + ")"}
	case on != nil:
		return Lists{Unary: true, Why: "kubelet sets CRIListStreaming=false (" + where + ")"}
	}
	v := version()
	minor, ok := kubeMinor(v)
	switch {
	case !ok:
		return Lists{Why: "kubelet's version not found, and CRIListStreaming not set"}
	case minor < listStreamingFrom:
		return Lists{Unary: true, Why: "kubelet " + v + " has no list streaming"}
	case minor <= listStreamingKnow:
		return Lists{Unary: true, Why: "kubelet " + v + ", CRIListStreaming not set: off by default"}
	}
	return Lists{Why: "kubelet " + v + ", CRIListStreaming not set: its default in this version is not known here"}
}

// gateIn reads the CRIListStreaming gate from a configuration file: "true",
// "false" or "".
func gateIn(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 1<<20 {
		return ""
	}
	var v string
	for _, m := range gateRE.FindAllSubmatch(b, -1) {
		v = string(m[1])
	}
	return v
}

// kubeMinor returns the minor of a Kubernetes v1.N.P version.
func kubeMinor(v string) (int, bool) {
	rest, ok := strings.CutPrefix(v, "v1.")
	if !ok {
		return 0, false
	}
	n, _, _ := strings.Cut(rest, ".")
	minor, err := strconv.Atoi(n)
	return minor, err == nil
}

// kubeletVersion returns the version of a kubelet binary (a process's
// /proc/PID/exe): from its build information when built as a module
// (k8s.io/kubernetes at a version), else from its --version, as a user
// would read it (kubelet prints it and exits before reading any
// configuration).
func kubeletVersion(exe string) string {
	if bi, err := buildinfo.ReadFile(exe); err == nil {
		for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			if m.Path == "k8s.io/kubernetes" {
				if _, ok := kubeMinor(m.Version); ok {
					return m.Version
				}
			}
		}
	}
	return versionFlag(exe)
}

// versionFlag runs exe --version and reads "Kubernetes v1.37.2".
func versionFlag(exe string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "--version").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 2 && f[0] == "Kubernetes" {
		return f[1]
	}
	return ""
}
