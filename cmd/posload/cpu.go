package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// build that matters.
const clockTicks = 100

// cpuUse is where the machine's CPU went during the measured window, in
// cores (CPU seconds per second) and in CPU microseconds per successful
// command. Server is the -server-pid process, Postgres every process named
// postgres, LoadGen this process, Other the rest of the busy time.
type cpuUse struct {
	Cores          int     `json:"cores"`
	Server         float64 `json:"server"`
	Postgres       float64 `json:"postgres"`
	LoadGen        float64 `json:"load_generator"`
	Other          float64 `json:"other"`
	Idle           float64 `json:"idle"`
	ServerPerCmd   float64 `json:"server_us_per_command"`
	PostgresPerCmd float64 `json:"postgres_us_per_command"`
	LoadGenPerCmd  float64 `json:"load_generator_us_per_command"`

	wall float64
}

type cpuSnapshot struct {
	at                                 time.Time
	busy, idle, server, postgres, self float64 // CPU seconds
}

// measureCPU samples at from and at until and returns the difference; nil
// when /proc is not there or ctx ends first.
func measureCPU(ctx context.Context, from, until time.Time, serverPID int) *cpuUse {
	wait := func(t time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(t)):
			return true
		}
	}
	if !wait(from) {
		return nil
	}
	a, ok := snapshot(serverPID)
	if !ok || !wait(until) {
		return nil
	}
	b, ok := snapshot(serverPID)
	if !ok {
		return nil
	}
	wall := b.at.Sub(a.at).Seconds()
	u := &cpuUse{
		Cores:    runtime.NumCPU(),
		Server:   (b.server - a.server) / wall,
		Postgres: (b.postgres - a.postgres) / wall,
		LoadGen:  (b.self - a.self) / wall,
		Idle:     (b.idle - a.idle) / wall,
		wall:     wall,
	}
	u.Other = max(0, (b.busy-a.busy)/wall-u.Server-u.Postgres-u.LoadGen)
	return u
}

func (u *cpuUse) perCommand(ok uint64) {
	if ok == 0 {
		return
	}
	per := func(cores float64) float64 { return cores * u.wall / float64(ok) * 1e6 }
	u.ServerPerCmd, u.PostgresPerCmd, u.LoadGenPerCmd = per(u.Server), per(u.Postgres), per(u.LoadGen)
}

func snapshot(serverPID int) (cpuSnapshot, bool) {
	s := cpuSnapshot{at: time.Now()}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, false
	}
	for _, l := range strings.Split(string(stat), "\n") {
		f := strings.Fields(l)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		n := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v / clockTicks }
		s.busy = n(1) + n(2) + n(3) + n(6) + n(7) + n(8) // user nice system irq softirq steal
		s.idle = n(4) + n(5)                             // idle iowait
		break
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	if serverPID > 0 {
		s.server, _ = procCPU(filepath.Join("/proc", strconv.Itoa(serverPID), "stat"))
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if t, comm := procCPU(filepath.Join("/proc", d.Name(), "stat")); comm == "postgres" {
			s.postgres += t
		}
	}
	return s, true
}

// procCPU returns a process's user+system CPU seconds and its command name.
func procCPU(path string) (float64, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	l := string(b)
	open, end := strings.IndexByte(l, '('), strings.LastIndexByte(l, ')')
	if open < 0 || end < open {
		return 0, ""
	}
	f := strings.Fields(l[end+1:])
	if len(f) < 13 { // state ... utime(12) stime(13), counting from state as 1
		return 0, ""
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks, l[open+1 : end]
}
