package shim

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process/processtest"
)

// exitsFixture is a running container with one running exec over a fake
// runsc (package processtest), whose exits go through the container's exit
// handling into an event queue the test reads.
type exitsFixture struct {
	c      *container
	f      *processtest.FakeRuntime
	hub    *process.ExitHub
	exec   *process.Exec
	ev     *eventSink
	exited chan process.Exited
}

func newExitsFixture(t *testing.T, grace time.Duration) *exitsFixture {
	t.Helper()
	ctx := context.Background()
	x := &exitsFixture{
		f:      processtest.NewFakeRuntime(t),
		hub:    process.NewExitHub(),
		ev:     &eventSink{ch: make(chan any, 16), done: make(chan struct{})},
		exited: make(chan process.Exited, 8),
	}
	dir := t.TempDir()
	x.c = &container{
		id:     "c1",
		bundle: bundle(dir),
		// A PID namespace of its own: init's exit ends the rest.
		spec:      &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}},
		execs:     map[string]*process.Exec{},
		reserved:  map[string]struct{}{},
		execGrace: grace,
	}
	x.c.init = process.NewInit(process.InitConfig{ID: "c1", Bundle: dir, Runtime: x.f, Exits: x.hub, Exited: x.exited})
	if err := x.c.init.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.c.init.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.c.exec(ctx, process.ExecConfig{ID: "e1"}); err != nil {
		t.Fatal(err)
	}
	p, err := x.c.startExec(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	x.exec = p.(*process.Exec)
	go func() {
		for e := range x.exited {
			x.c.exited(ctx, x.ev, e)
		}
	}()
	return x
}

// execExits makes the exec's `runsc exec` process exit with status.
func (x *exitsFixture) execExits(status int) {
	x.hub.Deliver(runc.Exit{Pid: x.exec.Pid(), Status: status, Timestamp: time.Now()})
}

// exits returns the TaskExit events published, as "id:status": n of them,
// or those published within d.
func (x *exitsFixture) exits(n int, d time.Duration) []string {
	var out []string
	deadline := time.After(d)
	for len(out) < n {
		select {
		case e := <-x.ev.ch:
			if te, ok := e.(*eventstypes.TaskExit); ok {
				out = append(out, fmt.Sprintf("%s:%d", te.ID, te.ExitStatus))
			}
		case <-deadline:
			return out
		}
	}
	return out
}

// Init's exit is published after its exec's, also when the exec's exit
// arrives second (containerd expects init's exit last).
func TestInitExitPublishedAfterExecs(t *testing.T) {
	for i := range 20 {
		x := newExitsFixture(t, 5*time.Second)
		x.f.Exit("c1", 0)
		time.Sleep(time.Duration(i%3) * 10 * time.Millisecond)
		x.execExits(3)
		if got := strings.Join(x.exits(2, 5*time.Second), " "); got != "e1:3 c1:0" {
			t.Fatalf("round %d: published %q, want the exec's exit, then init's", i, got)
		}
	}
}

// An exec still running execGrace after init exited is reported gone with
// the sandbox (137) before init; its real exit later is not published again.
func TestExecExitPublishedOnce(t *testing.T) {
	x := newExitsFixture(t, 100*time.Millisecond)
	x.f.Exit("c1", 0)
	if got := strings.Join(x.exits(2, 5*time.Second), " "); got != "e1:137 c1:0" {
		t.Fatalf("published %q, want the exec as killed, then init", got)
	}
	x.execExits(0)
	if got := x.exits(1, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("the exec's exit was published again: %v", got)
	}
}

// The shim's own facts go out as containerd's ContainerUpdate, which every
// containerd client decodes: the container's id, the rest as labels.
func TestFactEvent(t *testing.T) {
	ev := factEvent(map[string]any{"container_id": "c1", "reason": "the restore failed", "exit_status": 137, "restored": true, "before": map[string]int{"bytes": 5}})
	if ev.ID != "c1" || ev.Labels["reason"] != "the restore failed" || ev.Labels["exit_status"] != "137" || ev.Labels["restored"] != "true" || ev.Labels["before"] != `{"bytes":5}` {
		t.Fatalf("event %+v", ev)
	}
	if _, ok := ev.Labels["container_id"]; ok {
		t.Fatal("container_id is a label too")
	}
}
