// Command workload is the program inside the e2e test image. Each subcommand is a
// small, observable behaviour that the end-to-end tests drive through containerd and
// check from the outside by the lines it prints (one write per line, so output is
// line-buffered even through pipes and FIFOs):
//
//	counter [--interval 100ms] [--start N] [--file F]  count=N every interval; in-memory state only
//	memhold --mib 256 --seed S [--interval 1s]          ready sum=<hex>, then ok sum=<hex> n=<k> or CORRUPT
//	        [--heartbeat 20ms]                          and beat n=<k> [gap=<ms> [verify]] every heartbeat
//	files --dir D --count N [--interval 1s]             written, then files-ok or files-bad <name>
//	exit --code N [--after 0s]                          exits with code N
//	sleep [--for D]                                     sleeps for D (default forever)
//	cat                                                 copies stdin to stdout until EOF
//	tty                                                 isatty and winsize lines, again on SIGWINCH
//	alloc --mib N [--step 16] [--interval 10ms]         allocates and touches memory (OOM tests)
//	signals                                             got=<SIGNAME> per signal; term and exit 0 on SIGTERM
//
// Long-running subcommands exit with 128+signal on SIGTERM, SIGINT or SIGHUP, as a
// shell would report a process killed by that signal (a Go program that is PID 1 would
// otherwise exit with status 2).
//
// The program is built with CGO_ENABLED=0 and uses only the standard library and
// golang.org/x/sys, so it runs in an image with nothing but busybox.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitCodeUsage is returned for bad arguments, like the flag package does.
const exitCodeUsage = 2

// exitError asks main to exit with a specific status.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// command is one subcommand: run parses args and runs until done or ctx ends.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, s stdio) error
	// ownSignals is set for subcommands that handle termination signals themselves.
	ownSignals bool
}

// stdio carries the process streams so subcommands can be tested.
type stdio struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}

func commands() map[string]command {
	return map[string]command{
		"counter": {summary: "print count=N every interval", run: runCounter},
		"memhold": {summary: "hold deterministic memory and verify it", run: runMemhold},
		"files":   {summary: "write files and verify them", run: runFiles},
		"exit":    {summary: "exit with a code", run: runExit},
		"sleep":   {summary: "sleep for a duration or forever", run: runSleep},
		"cat":     {summary: "copy stdin to stdout until EOF", run: runCat},
		"tty":     {summary: "report terminal state and window size", run: runTTY},
		"alloc":   {summary: "allocate memory until killed", run: runAlloc},
		"signals": {summary: "print the signals received", run: runSignals, ownSignals: true},
	}
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

// run dispatches args[0] and returns the process exit status.
func run(ctx context.Context, args []string, s stdio) int {
	cmds := commands()
	if len(args) == 0 {
		usage(s.err, cmds)
		return exitCodeUsage
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(s.err, "workload: unknown subcommand %q\n", args[0])
		usage(s.err, cmds)
		return exitCodeUsage
	}
	if !cmd.ownSignals {
		go exitOnTermination()
	}
	err := cmd.run(ctx, args[1:], s)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(s.err, "workload %s: %v\n", args[0], err)
		return exitCodeUsage
	default:
		fmt.Fprintf(s.err, "workload %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: workload <subcommand> [flags]; subcommands:")
	for _, name := range []string{"counter", "memhold", "files", "exit", "sleep", "cat", "tty", "alloc", "signals"} {
		fmt.Fprintf(w, "  %-8s %s\n", name, cmds[name].summary)
	}
}

// exitOnTermination exits with 128+signal when a termination signal arrives.
func exitOnTermination() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	sig := <-c
	os.Exit(128 + int(sig.(syscall.Signal)))
}

// usageError marks argument errors.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// parseFlags parses args into fs, rejecting positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// writeLine writes one line with a single Write call.
func writeLine(w io.Writer, format string, a ...any) {
	_, _ = io.WriteString(w, fmt.Sprintf(format, a...)+"\n")
}
