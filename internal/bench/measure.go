package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A child's ru_maxrss counts the high-water RSS of the process that
// started it: os/exec's vfork shares the parent's memory until exec, and
// Linux keeps that mark for the child. The bench, holding captures it
// has just written, would be counted as the command's peak; so each
// command is started by a small process of its own (measure), and a
// daemon's peak is read from its /proc status (VmHWM) while it runs.

// measured is what measure writes.
type measured struct {
	CPU, Sys, Wall time.Duration // CPU is user+sys
	MaxRSS         int64         // bytes
}

// runMeasure runs args[2:] (args: OUT --) and writes its figures to OUT
// as JSON; the command's exit status is the error.
func runMeasure(args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return errors.New("usage: measure OUT -- COMMAND [ARG...]")
	}
	cmd := exec.Command(args[2], args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	t0 := time.Now()
	runErr := cmd.Run()
	m := measured{Wall: time.Since(t0)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			m.Sys = time.Duration(ru.Stime.Nano())
			m.MaxRSS = ru.Maxrss << 10
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(args[0], b, 0o600); err != nil {
		return err
	}
	return runErr
}

// groupCPU is the CPU time, user and system, of the processes of group
// pgid that are running, from /proc.
func groupCPU(pgid int) time.Duration {
	procs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range procs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// After the command's name, in parentheses: state, ppid, pgrp, …,
		// utime and stime, the 12th and 13th.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, /proc's unit of CPU time: 100 on Linux.
const clockTicks = 100

// peakRSS is a running process's high-water RSS, from /proc.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}
