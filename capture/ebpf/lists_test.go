package ebpf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criseq/criseq/internal/testpeer"
)

// kubelet's list streaming from its flags, drop-ins, configuration file
// and version, in kubelet's order of precedence.
func TestListsOf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("on.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfeatureGates:\n  EventedPLEG: true\n  CRIListStreaming: true\n")
	write("off.json", `{"kind":"KubeletConfiguration","featureGates":{"CRIListStreaming":false,"EventedPLEG":true}}`)
	write("none.yaml", "kind: KubeletConfiguration\nfeatureGates:\n  EventedPLEG: true\n")
	write("conf.d/10-a.conf", "featureGates:\n  CRIListStreaming: false\n")
	write("conf.d/20-b.conf", "featureGates:\n  \"CRIListStreaming\": true\n")
	write("conf.d/30-c.conf", "maxPods: 10\n")
	path := func(p string) string { return filepath.Join(dir, p) }
	noVersion := func() string { t.Error("version asked although the gate is set"); return "" }
	version := func(v string) func() string { return func() string { return v } }
	for _, tc := range []struct {
		name    string
		args    []string
		version func() string
		unary   bool
		why     string
	}{
		{"flag off", []string{"/usr/bin/kubelet", "--feature-gates=EventedPLEG=true,CRIListStreaming=false"}, noVersion, true, "CRIListStreaming=false (--feature-gates)"},
		{"flag on, last flag wins", []string{"kubelet", "--feature-gates", "CRIListStreaming=false", "--feature-gates=CRIListStreaming=true"}, noVersion, false, "CRIListStreaming=true (--feature-gates)"},
		{"flag over config", []string{"kubelet", "--config=on.yaml", "--feature-gates=CRIListStreaming=false"}, noVersion, true, "(--feature-gates)"},
		{"config yaml on", []string{"kubelet", "--config", "on.yaml"}, noVersion, false, "(on.yaml)"},
		{"config json off", []string{"kubelet", "--config=off.json"}, noVersion, true, "(off.json)"},
		{"drop-ins over config, last wins", []string{"kubelet", "--config=off.json", "--config-dir=conf.d"}, noVersion, false, "conf.d/20-b.conf"},
		{"unset, v1.37", []string{"kubelet", "--config=none.yaml"}, version("v1.37.2"), true, "v1.37.2, CRIListStreaming not set: off by default"},
		{"unset, v1.31: no gate", []string{"kubelet"}, version("v1.31.4"), true, "v1.31.4 has no list streaming"},
		{"unset, a later version", []string{"kubelet"}, version("v1.40.0"), false, "not known here"},
		{"unset, no version", []string{"kubelet"}, version(""), false, "version not found"},
		{"missing config", []string{"kubelet", "--config=/nowhere.yaml"}, version("v1.36.0"), true, "off by default"},
	} {
		l := listsOf(tc.args, path, tc.version)
		if l.Unary != tc.unary || !strings.Contains(l.Why, tc.why) {
			t.Errorf("%s: %+v, want unary %v and why containing %q", tc.name, l, tc.unary, tc.why)
		}
	}
}

// The version of a real kubelet binary, the one the lab builds: from its
// build information, and from its --version as for a release binary.
// make e2e runs it once the lab has built kubelet.
func TestE2EKubeletVersion(t *testing.T) {
	if os.Getenv("CRISEQ_E2E") != "1" {
		t.Skip("end-to-end test: needs the lab's kubelet build (make e2e)")
	}
	cache := os.Getenv("CRISEQ_CACHE")
	if cache == "" {
		cache = "/var/cache/criseq"
	}
	bin := filepath.Join(cache, "kubelet-v1.37.2", "kubelet")
	testpeer.NeedFile(t, bin, "kubelet v1.37.2", "built by lab/build-tools.sh (make lab)")
	if v := kubeletVersion(bin); v != "v1.37.2" {
		t.Errorf("kubeletVersion = %q, want v1.37.2", v)
	}
	if v := versionFlag(bin); v != "v1.37.2" {
		t.Errorf("kubelet --version read as %q, want v1.37.2", v)
	}
	if v := versionFlag("/bin/true"); v != "" {
		t.Errorf("/bin/true --version read as %q, want nothing", v)
	}
}
