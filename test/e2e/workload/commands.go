package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// counterConfig configures the counter subcommand.
type counterConfig struct {
	interval time.Duration
	start    int64
	file     string
}

func parseCounter(args []string) (counterConfig, error) {
	c := counterConfig{}
	fs := flag.NewFlagSet("counter", flag.ContinueOnError)
	fs.DurationVar(&c.interval, "interval", 100*time.Millisecond, "time between lines")
	fs.Int64Var(&c.start, "start", 0, "first value")
	fs.StringVar(&c.file, "file", "", "file that always holds the last value printed")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if c.interval <= 0 {
		return c, usageError{fmt.Errorf("--interval must be positive, got %v", c.interval)}
	}
	return c, nil
}

// runCounter prints count=N every interval. The count lives only in memory, so a
// restored checkpoint continues the sequence where a restarted process would begin anew.
func runCounter(ctx context.Context, args []string, s stdio) error {
	c, err := parseCounter(args)
	if err != nil {
		return err
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for n := c.start; ; n++ {
		writeLine(s.out, "count=%d", n)
		if c.file != "" {
			if err := writeFileAtomic(c.file, []byte(strconv.FormatInt(n, 10)+"\n")); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// heartbeat prints beat n=K every period without touching the held memory.
// A gap in the wall clock between two beats much longer than the period
// means the process was frozen (gVisor pauses the sandbox to checkpoint it,
// and a restored one resumes with the clock moved on): the beat then says
// gap=<ms>, and a gap over 100 ms or 5 periods also asks for a verification
// on verifyNow (the beat ends with "verify").
func heartbeat(ctx context.Context, s stdio, period time.Duration, verifyNow chan<- struct{}) {
	threshold := max(5*period, 100*time.Millisecond)
	hb := time.NewTicker(period)
	defer hb.Stop()
	last := time.Now().Round(0) // wall clock: the monotonic one may skip the pause
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
		}
		now := time.Now().Round(0)
		gap := now.Sub(last)
		last = now
		switch {
		case gap > threshold:
			writeLine(s.out, "beat n=%d gap=%dms verify", n, gap.Milliseconds())
			select {
			case verifyNow <- struct{}{}:
			default:
			}
		case gap > 3*period:
			writeLine(s.out, "beat n=%d gap=%dms", n, gap.Milliseconds())
		default:
			writeLine(s.out, "beat n=%d", n)
		}
	}
}

// writeFileAtomic replaces path with data so readers never see a partial value.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// memholdConfig configures the memhold subcommand.
type memholdConfig struct {
	mib      int
	seed     uint64
	interval time.Duration
	// heartbeat, when positive, prints "beat n=K" at that period from a
	// second goroutine that never touches the held memory: the benchmarks
	// time a restored process's first output with it.
	heartbeat time.Duration
}

func parseMemhold(args []string) (memholdConfig, error) {
	c := memholdConfig{}
	fs := flag.NewFlagSet("memhold", flag.ContinueOnError)
	fs.IntVar(&c.mib, "mib", 256, "MiB of memory to fill and hold")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the pseudo-random fill")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between verifications")
	fs.DurationVar(&c.heartbeat, "heartbeat", 0, "also print beat n=K at this period, without touching the memory (0: off)")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if c.heartbeat < 0 {
		return c, usageError{fmt.Errorf("--heartbeat must not be negative, got %v", c.heartbeat)}
	}
	if c.mib <= 0 {
		return c, usageError{fmt.Errorf("--mib must be positive, got %d", c.mib)}
	}
	if c.interval <= 0 {
		return c, usageError{fmt.Errorf("--interval must be positive, got %v", c.interval)}
	}
	return c, nil
}

// runMemhold fills memory deterministically, prints its digest, and re-verifies it
// every interval, so a test sees whether a checkpoint/restore preserved memory.
func runMemhold(ctx context.Context, args []string, s stdio) error {
	c, err := parseMemhold(args)
	if err != nil {
		return err
	}
	buf := make([]byte, c.mib<<20)
	fill(buf, c.seed)
	want := digest(buf)
	writeLine(s.out, "ready sum=%s", want)
	// verifyNow asks for a verification at once: the heartbeat saw the
	// process frozen (a checkpoint, a restore), and a verification right
	// after it shows when all memory is usable again.
	verifyNow := make(chan struct{}, 1)
	if c.heartbeat > 0 {
		go heartbeat(ctx, s, c.heartbeat, verifyNow)
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-verifyNow:
		}
		if got := digest(buf); got != want {
			writeLine(s.out, "CORRUPT sum=%s want=%s", got, want)
		} else {
			writeLine(s.out, "ok sum=%s n=%d", got, n)
		}
	}
}

// filesConfig configures the files subcommand.
type filesConfig struct {
	dir      string
	count    int
	interval time.Duration
}

func parseFiles(args []string) (filesConfig, error) {
	c := filesConfig{}
	fs := flag.NewFlagSet("files", flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", "", "directory to write the files into (created if missing)")
	fs.IntVar(&c.count, "count", 10, "number of files")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between verifications")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	switch {
	case c.dir == "":
		return c, usageError{errors.New("--dir is required")}
	case c.count <= 0:
		return c, usageError{fmt.Errorf("--count must be positive, got %d", c.count)}
	case c.interval <= 0:
		return c, usageError{fmt.Errorf("--interval must be positive, got %v", c.interval)}
	}
	return c, nil
}

// runFiles writes count files of known content, then verifies them every interval.
func runFiles(ctx context.Context, args []string, s stdio) error {
	c, err := parseFiles(args)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	for i := range c.count {
		f, err := os.Create(filepath.Join(c.dir, fileName(i)))
		if err != nil {
			return err
		}
		_, err = f.Write(fileContent(i))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	writeLine(s.out, "written")
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if bad := verifyFiles(c.dir, c.count); bad != "" {
			writeLine(s.out, "files-bad %s", bad)
		} else {
			writeLine(s.out, "files-ok")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// verifyFiles returns the name of the first file whose content is wrong, or "".
func verifyFiles(dir string, count int) string {
	for i := range count {
		got, err := os.ReadFile(filepath.Join(dir, fileName(i)))
		if err != nil || string(got) != string(fileContent(i)) {
			return fileName(i)
		}
	}
	return ""
}

// exitConfig configures the exit subcommand.
type exitConfig struct {
	code  int
	after time.Duration
}

func parseExit(args []string) (exitConfig, error) {
	c := exitConfig{}
	fs := flag.NewFlagSet("exit", flag.ContinueOnError)
	fs.IntVar(&c.code, "code", 0, "exit status")
	fs.DurationVar(&c.after, "after", 0, "delay before exiting")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if c.code < 0 || c.code > 255 {
		return c, usageError{fmt.Errorf("--code must be 0..255, got %d", c.code)}
	}
	if c.after < 0 {
		return c, usageError{fmt.Errorf("--after must not be negative, got %v", c.after)}
	}
	return c, nil
}

func runExit(ctx context.Context, args []string, s stdio) error {
	c, err := parseExit(args)
	if err != nil {
		return err
	}
	if c.after > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(c.after):
		}
	}
	writeLine(s.out, "exiting code=%d", c.code)
	if c.code == 0 {
		return nil
	}
	return exitError{c.code}
}

// sleepConfig configures the sleep subcommand; zero means forever.
type sleepConfig struct {
	duration time.Duration
}

func parseSleep(args []string) (sleepConfig, error) {
	c := sleepConfig{}
	fs := flag.NewFlagSet("sleep", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "for", 0, "how long to sleep; 0 sleeps forever")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if c.duration < 0 {
		return c, usageError{fmt.Errorf("--for must not be negative, got %v", c.duration)}
	}
	return c, nil
}

func runSleep(ctx context.Context, args []string, s stdio) error {
	c, err := parseSleep(args)
	if err != nil {
		return err
	}
	var done <-chan time.Time
	if c.duration > 0 {
		done = time.After(c.duration)
	}
	select {
	case <-ctx.Done():
	case <-done:
	}
	return nil
}

func runCat(ctx context.Context, args []string, s stdio) error {
	if err := parseFlags(flag.NewFlagSet("cat", flag.ContinueOnError), args); err != nil {
		return err
	}
	_, err := io.Copy(s.out, s.in)
	return err
}

// runTTY reports whether stdin and stdout are terminals and the window size, at start
// and on every SIGWINCH.
func runTTY(ctx context.Context, args []string, s stdio) error {
	if err := parseFlags(flag.NewFlagSet("tty", flag.ContinueOnError), args); err != nil {
		return err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	writeLine(s.out, "stdin isatty=%t", isTerminal(s.in))
	writeLine(s.out, "stdout isatty=%t", isTerminal(s.out))
	for {
		writeLine(s.out, "winsize=%s", winsize(s.in, s.out))
		select {
		case <-ctx.Done():
			return nil
		case <-winch:
		}
	}
}

// fder is implemented by *os.File.
type fder interface{ Fd() uintptr }

func isTerminal(v any) bool {
	f, ok := v.(fder)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// winsize returns "<rows>x<cols>" of the first terminal among files, or "none".
func winsize(files ...any) string {
	for _, v := range files {
		if f, ok := v.(fder); ok {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
				return fmt.Sprintf("%dx%d", ws.Row, ws.Col)
			}
		}
	}
	return "none"
}

// allocConfig configures the alloc subcommand; mib 0 means no limit.
type allocConfig struct {
	mib      int
	step     int
	interval time.Duration
}

func parseAlloc(args []string) (allocConfig, error) {
	c := allocConfig{}
	fs := flag.NewFlagSet("alloc", flag.ContinueOnError)
	fs.IntVar(&c.mib, "mib", 0, "MiB to allocate in total, then hold; 0 allocates until killed")
	fs.IntVar(&c.step, "step", 16, "MiB allocated per step")
	fs.DurationVar(&c.interval, "interval", 10*time.Millisecond, "pause between steps")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	switch {
	case c.mib < 0:
		return c, usageError{fmt.Errorf("--mib must not be negative, got %d", c.mib)}
	case c.step <= 0:
		return c, usageError{fmt.Errorf("--step must be positive, got %d", c.step)}
	case c.interval < 0:
		return c, usageError{fmt.Errorf("--interval must not be negative, got %v", c.interval)}
	}
	return c, nil
}

// runAlloc allocates and touches memory step by step, printing allocated=<n>MiB after
// each step and holding when the total is reached.
func runAlloc(ctx context.Context, args []string, s stdio) error {
	c, err := parseAlloc(args)
	if err != nil {
		return err
	}
	var held [][]byte
	total := 0
	for c.mib == 0 || total < c.mib {
		n := c.step
		if c.mib > 0 {
			n = min(n, c.mib-total)
		}
		b := make([]byte, n<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
		total += n
		writeLine(s.out, "allocated=%dMiB", total)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.interval):
		}
	}
	writeLine(s.out, "holding=%dMiB", total)
	<-ctx.Done()
	runtime.KeepAlive(held)
	return nil
}

// runSignals prints got=<NAME> for each signal received; on SIGTERM it prints term and
// exits 0. It prints ready once its handlers are installed.
func runSignals(ctx context.Context, args []string, s stdio) error {
	if err := parseFlags(flag.NewFlagSet("signals", flag.ContinueOnError), args); err != nil {
		return err
	}
	c := make(chan os.Signal, 16)
	signal.Notify(c)
	defer signal.Stop(c)
	writeLine(s.out, "ready pid=%d", os.Getpid())
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig := <-c:
			ss, ok := sig.(syscall.Signal)
			if !ok || ss == syscall.SIGURG { // SIGURG is the Go runtime's preemption signal.
				continue
			}
			writeLine(s.out, "got=%s", signalName(ss))
			if ss == syscall.SIGTERM {
				writeLine(s.out, "term")
				return nil
			}
		}
	}
}

func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return "SIG" + strconv.Itoa(int(sig))
}
