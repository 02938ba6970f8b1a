package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultSocket is the runtime socket assumed when kubelet names none.
const DefaultSocket = "/run/containerd/containerd.sock"

// findProcesses lists the processes whose name (comm) or executable's base
// name is name, this process excepted.
func findProcesses(name string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if procName(pid) == name {
			pids = append(pids, pid)
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil &&
			filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// startTime is a process's start time in clock ticks since boot: with its
// pid, it names the process even once the pid is reused.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command, which may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// runtimeEndpoints returns the sockets a kubelet process talks CRI on, as
// paths in its own mount namespace: its --container-runtime-endpoint and
// --image-service-endpoint flags, else the same keys of its --config file,
// else DefaultSocket.
func runtimeEndpoints(pid int) []string {
	flags := map[string]string{}
	for _, f := range parseFlags(cmdline(pid)) {
		flags[f.name] = f.val // the last wins
	}
	var eps []string
	for _, k := range []string{"container-runtime-endpoint", "image-service-endpoint"} {
		if v := flags[k]; v != "" {
			eps = append(eps, v)
		}
	}
	if len(eps) == 0 && flags["config"] != "" {
		cfg := flags["config"]
		if !filepath.IsAbs(cfg) {
			if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
				cfg = filepath.Join(cwd, cfg)
			}
		}
		eps = configEndpoints(filepath.Join(fmt.Sprintf("/proc/%d/root", pid), cfg))
	}
	var out []string
	for _, e := range eps {
		if p, ok := strings.CutPrefix(e, "unix://"); ok {
			out = append(out, p)
		} else if strings.HasPrefix(e, "/") {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		out = []string{DefaultSocket}
	}
	return out
}

// cmdline returns a process's arguments.
func cmdline(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// cliFlag is a flag on a command line, --name=val or --name val.
type cliFlag struct{ name, val string }

// parseFlags returns a command line's flags, in order.
func parseFlags(args []string) []cliFlag {
	var out []cliFlag
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			val = args[i+1]
			i++
		}
		out = append(out, cliFlag{name, val})
	}
	return out
}

// configEndpoints reads containerRuntimeEndpoint and imageServiceEndpoint
// from a KubeletConfiguration (YAML or JSON) by line: both are plain
// top-level strings.
func configEndpoints(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimLeft(line, "{")
		for _, k := range []string{"containerRuntimeEndpoint", "imageServiceEndpoint"} {
			rest, ok := strings.CutPrefix(strings.TrimLeft(line, `"`), k)
			if !ok {
				continue
			}
			rest = strings.TrimLeft(rest, `"`)
			rest, ok = strings.CutPrefix(strings.TrimSpace(rest), ":")
			if !ok {
				continue
			}
			v := strings.Trim(strings.TrimSpace(strings.TrimRight(strings.TrimSpace(rest), ",}")), `"'`)
			if v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// socketFile identifies the socket file at path.
func socketFile(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return fileID{}, fmt.Errorf("%s is not a unix socket", path)
	}
	return fileID{major: unix.Major(st.Dev), minor: unix.Minor(st.Dev), ino: st.Ino}, nil
}

// runtimeFiles resolves the runtime sockets of process pid: socket if set
// (a path as criseq sees it), else the endpoints kubelet is configured with,
// looked up through its root so that a kubelet in a container works too.
func runtimeFiles(pid int, socket string) (map[fileID]string, error) {
	files := map[fileID]string{}
	if socket != "" {
		id, err := socketFile(socket)
		if err != nil {
			return nil, fmt.Errorf("attach: --socket: %w", err)
		}
		files[id] = socket
		return files, nil
	}
	var errs []error
	for _, p := range runtimeEndpoints(pid) {
		id, err := socketFile(filepath.Join(fmt.Sprintf("/proc/%d/root", pid), p))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		files[id] = p
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("attach: cannot find the runtime socket of process %d (%w); name it with --socket PATH", pid, errors.Join(errs...))
	}
	return files, nil
}

// socketFDs lists the fds of process pid that are sockets, by inode.
func socketFDs(pid int) (map[int]uint32, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]uint32{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // closed meanwhile
			}
			return nil, err
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 32); err == nil {
				out[fd] = uint32(ino)
			}
		}
	}
	return out, nil
}
