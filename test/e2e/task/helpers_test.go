//go:build e2e

package task

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	// startWait bounds waiting for a sandbox to come up and print its first line.
	startWait = time.Minute
	// exitWait bounds waiting for a process to exit after a signal or on its own.
	exitWait = 30 * time.Second
)

// env is one private containerd with the test image imported.
type env struct {
	d     *harness.Daemon
	ref   string
	image containerd.Image
}

// newEnv starts a containerd for t and imports the test image.
func newEnv(t *testing.T, opts harness.Options) *env {
	t.Helper()
	d := harness.StartContainerd(t, opts)
	if dir := os.Getenv("TASK_E2E_KEEP_LOGS"); dir != "" {
		// Debugging aid: keep containerd's log after the test.
		t.Cleanup(func() {
			b, _ := os.ReadFile(d.LogPath)
			_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log"), b, 0o644)
		})
	}
	ref := d.ImportTestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	image, err := d.Client().GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return &env{d: d, ref: ref, image: image}
}

// testCtx returns a context bounded by limit and cancelled at the end of the test.
func testCtx(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// newContainer creates a container of the test image under the project's shim
// (e.d.RuntimeOpts() unless rt is given) running args.
func (e *env) newContainer(ctx context.Context, t *testing.T, id string, rt containerd.NewContainerOpts, specOpts []oci.SpecOpts, args ...string) containerd.Container {
	t.Helper()
	if rt == nil {
		rt = e.d.RuntimeOpts()
	}
	so := append([]oci.SpecOpts{oci.WithImageConfig(e.image), oci.WithProcessArgs(args...)}, specOpts...)
	c, err := e.d.Client().NewContainer(ctx, id,
		containerd.WithImage(e.image),
		containerd.WithNewSnapshot(id+"-snap", e.image),
		rt,
		containerd.WithNewSpec(so...),
	)
	if err != nil {
		t.Fatalf("new container %s: %v", id, err)
	}
	// A failed (sub)test leaves its container to the next one otherwise.
	t.Cleanup(func() {
		if t.Failed() {
			forceDelete(e.d, c)
		}
	})
	return c
}

// forceDelete removes c and its task, best effort, after a failure.
func forceDelete(d *harness.Daemon, c containerd.Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if task, err := c.Task(ctx, nil); err == nil {
		_ = task.Kill(ctx, syscall.SIGKILL)
		if _, err := task.Delete(ctx); err != nil {
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
	}
	_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
}

// run creates and starts a container running args, its stdout and stderr
// collected in one LineBuffer, and returns it with its task and an exit channel.
func (e *env) run(ctx context.Context, t *testing.T, prefix string, specOpts []oci.SpecOpts, args ...string) (containerd.Container, containerd.Task, <-chan containerd.ExitStatus, *harness.LineBuffer) {
	t.Helper()
	return e.start(ctx, t, e.newContainer(ctx, t, harness.RandomID(prefix), nil, specOpts, args...))
}

// runWith is run with the runtime options rt.
func (e *env) runWith(ctx context.Context, t *testing.T, prefix string, rt containerd.NewContainerOpts, args ...string) (containerd.Container, containerd.Task, <-chan containerd.ExitStatus, *harness.LineBuffer) {
	t.Helper()
	return e.start(ctx, t, e.newContainer(ctx, t, harness.RandomID(prefix), rt, nil, args...))
}

// start creates and starts c's task with its output in a LineBuffer.
func (e *env) start(ctx context.Context, t *testing.T, c containerd.Container) (containerd.Container, containerd.Task, <-chan containerd.ExitStatus, *harness.LineBuffer) {
	t.Helper()
	out := harness.NewLineBuffer()
	task, err := c.NewTask(ctx, e.d.IO(nil, out, out))
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v\n%s", err, out)
	}
	return c, task, statusC, out
}

// waitExit waits for an exit status on statusC.
func waitExit(t *testing.T, statusC <-chan containerd.ExitStatus, what string) containerd.ExitStatus {
	t.Helper()
	select {
	case st := <-statusC:
		if err := st.Error(); err != nil {
			t.Fatalf("%s: exit status error: %v", what, err)
		}
		return st
	case <-time.After(exitWait):
		t.Fatalf("%s did not exit within %v", what, exitWait)
		return containerd.ExitStatus{}
	}
}

// destroy deletes the task (killing it if it runs) and the container, and
// fails the test on errors.
func destroy(ctx context.Context, t *testing.T, c containerd.Container) {
	t.Helper()
	task, err := c.Task(ctx, nil)
	if err == nil {
		st, serr := task.Status(ctx)
		var opts []containerd.ProcessDeleteOpts
		if serr != nil || st.Status != containerd.Stopped {
			opts = append(opts, containerd.WithProcessKill)
		}
		if _, err := task.Delete(ctx, opts...); err != nil {
			t.Fatalf("delete task of %s: %v", c.ID(), err)
		}
	} else if !errdefs.IsNotFound(err) {
		t.Fatalf("load task of %s: %v", c.ID(), err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container %s: %v", c.ID(), err)
	}
}

// event is one event received from containerd.
type event struct {
	Topic     string
	Namespace string
	Event     any
}

// eventLog collects containerd's events from a subscription.
type eventLog struct {
	mu      sync.Mutex
	events  []event
	err     error
	changed chan struct{}
}

// probeTopic is published by subscribe to learn when its subscription is live.
const probeTopic = "/rcuda-e2e/probe"

// subscribe collects the /tasks/ events of the daemon until the test ends. It
// returns once the subscription receives events: containerd's client returns
// from Subscribe before its stream is established.
func subscribe(t *testing.T, d *harness.Daemon) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l := &eventLog{changed: make(chan struct{})}
	live := make(chan struct{})
	ch, errs := d.Client().Subscribe(ctx, `topic~="^/tasks/"`, `topic==`+strconv.Quote(probeTopic))
	go func() {
		for {
			select {
			case env := <-ch:
				if env.Topic == probeTopic {
					select {
					case <-live:
					default:
						close(live)
					}
					continue
				}
				var ev any
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					ev = fmt.Errorf("unmarshal %s: %w", env.Topic, err)
				} else {
					ev = v
				}
				l.add(event{Topic: env.Topic, Namespace: env.Namespace, Event: ev}, nil)
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					l.add(event{}, err)
				}
				return
			}
		}
	}()
	deadline := time.Now().Add(startWait)
	for {
		if err := d.Client().EventService().Publish(ctx, probeTopic, &eventstypes.TaskIO{}); err != nil {
			t.Fatalf("publish probe event: %v", err)
		}
		select {
		case <-live:
			return l
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("event subscription not live within %v: %s", startWait, l)
		}
	}
}

func (l *eventLog) add(e event, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.err = err
	} else {
		l.events = append(l.events, e)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// String lists the events received so far.
func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.events {
		fmt.Fprintf(&b, "  %s %+v\n", e.Topic, e.Event)
	}
	if l.err != nil {
		fmt.Fprintf(&b, "  subscription error: %v\n", l.err)
	}
	return b.String()
}

// waitFor waits for an event on topic for which match (may be nil) returns true
// and returns it.
func (l *eventLog) waitFor(t *testing.T, topic string, match func(any) bool) any {
	t.Helper()
	deadline := time.NewTimer(exitWait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, e := range l.events {
			if e.Topic == topic && (match == nil || match(e.Event)) {
				l.mu.Unlock()
				return e.Event
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s event matching within %v; received:\n%s", topic, exitWait, l)
			return nil
		}
	}
}

// topics returns the topics of the events received so far that concern
// container id, in order.
func (l *eventLog) topics(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if containerOf(e.Event) == id {
			out = append(out, e.Topic)
		}
	}
	return out
}

// containerOf returns the container id of a task event.
func containerOf(ev any) string {
	switch e := ev.(type) {
	case *eventstypes.TaskCreate:
		return e.ContainerID
	case *eventstypes.TaskStart:
		return e.ContainerID
	case *eventstypes.TaskExit:
		return e.ContainerID
	case *eventstypes.TaskDelete:
		return e.ContainerID
	case *eventstypes.TaskExecAdded:
		return e.ContainerID
	case *eventstypes.TaskExecStarted:
		return e.ContainerID
	case *eventstypes.TaskPaused:
		return e.ContainerID
	case *eventstypes.TaskResumed:
		return e.ContainerID
	case *eventstypes.TaskOOM:
		return e.ContainerID
	case *eventstypes.TaskIO:
		return ""
	}
	return ""
}

// waitNoLeftovers waits until only containerd itself references the daemon's
// directory, nothing is mounted under it, and runsc's state directory (the
// shim's root for namespace ns) holds no container.
func waitNoLeftovers(t *testing.T, d *harness.Daemon, runscRoots ...string) {
	t.Helper()
	if len(runscRoots) == 0 {
		runscRoots = []string{filepath.Join(d.RunscRoot, d.Namespace)}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var problems []string
		procs, err := d.Processes()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if p.PID != d.PID() {
				problems = append(problems, "process "+p.String())
			}
		}
		mounts, err := d.Mounts()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mounts {
			problems = append(problems, "mount "+m)
		}
		for _, root := range runscRoots {
			left, err := harness.RunscLeftovers(root)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range left {
				problems = append(problems, "runsc "+s)
			}
			// The shim removes the namespace's runsc directory, and runsc's
			// null-netns pin in it, with the last sandbox.
			if _, err := os.Stat(root); err == nil {
				problems = append(problems, "runsc directory "+root)
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind:\n  %s", strings.Join(problems, "\n  "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupsOf returns the cgroup directories on this host named for container id
// under the daemon's namespace (containerd's default cgroupsPath is
// /<namespace>/<id>).
func cgroupsOf(d *harness.Daemon, id string) []string {
	var found []string
	for _, pattern := range []string{filepath.Join("/sys/fs/cgroup", "*", d.Namespace, id), filepath.Join("/sys/fs/cgroup", d.Namespace, id)} {
		m, _ := filepath.Glob(pattern)
		found = append(found, m...)
	}
	return found
}

// runscState lists runsc's container state files under root (runsc keeps one
// <id>_sandbox:<id>.state file per container), ignoring its lock files and
// null-netns pin.
func runscState(t *testing.T, root string) []string {
	t.Helper()
	out, err := harness.RunscStates(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shimProcesses returns the daemon's shim processes of our runtime.
func shimProcesses(t *testing.T, d *harness.Daemon) []harness.Process {
	t.Helper()
	procs, err := d.Processes()
	if err != nil {
		t.Fatal(err)
	}
	var shims []harness.Process
	pids := map[int]bool{}
	for _, p := range procs {
		if len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == harness.ShimBinaryName {
			shims = append(shims, p)
			pids[p.PID] = true
		}
	}
	// A child the shim has forked but not yet exec'd (runsc) shows the
	// shim's command line too.
	var out []harness.Process
	for _, p := range shims {
		if !pids[harness.ParentPID(p.PID)] {
			out = append(out, p)
		}
	}
	return out
}

// writeShimConfig writes a shim TOML config into the daemon's directory and
// returns its path.
func writeShimConfig(t *testing.T, d *harness.Daemon, name, body string) string {
	t.Helper()
	path := filepath.Join(d.Dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runtimeWithConfig selects the project's shim with the TOML file at path.
func runtimeWithConfig(d *harness.Daemon, path string) containerd.NewContainerOpts {
	return containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{ConfigPath: path})
}

// tomlConfig is a shim config like the harness's (its runsc, root and debug
// log level) with topLevel's keys added and the given runsc flags.
func tomlConfig(d *harness.Daemon, topLevel string, runscConfig map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "binary_name = %q\n", d.Tools.Runsc)
	fmt.Fprintf(&b, "log_level = \"debug\"\n")
	if !strings.Contains(topLevel, "root =") {
		fmt.Fprintf(&b, "root = %q\n", d.RunscRoot)
	}
	b.WriteString(topLevel)
	b.WriteString("\n[runsc_config]\n")
	for k, v := range runscConfig {
		fmt.Fprintf(&b, "%q = %q\n", k, v)
	}
	return b.String()
}

// mustMatch fails the test unless s matches the regular expression re.
func mustMatch(t *testing.T, what, s, re string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(s) {
		t.Fatalf("%s: %q does not match %q", what, s, re)
	}
}

// killAndWait sends sig and waits for the exit.
func killAndWait(ctx context.Context, t *testing.T, task containerd.Task, statusC <-chan containerd.ExitStatus, sig syscall.Signal) containerd.ExitStatus {
	t.Helper()
	if err := task.Kill(ctx, sig); err != nil {
		t.Fatalf("kill %v: %v", sig, err)
	}
	return waitExit(t, statusC, "task")
}

// forContainer matches the events of container id.
func forContainer(id string) func(any) bool {
	return func(v any) bool { return containerOf(v) == id }
}

// initExit matches the TaskExit of container id's init process.
func initExit(id string) func(any) bool {
	return func(v any) bool {
		e, ok := v.(*eventstypes.TaskExit)
		return ok && e.ContainerID == id && e.ID == id
	}
}
