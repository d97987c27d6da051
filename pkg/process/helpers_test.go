package process

import (
	"context"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process/processtest"
)

// newTestInit returns an init process over f, created (Create ran), whose
// exits arrive on the returned channel.
func newTestInit(t *testing.T, f *processtest.FakeRuntime, restore *RestoreConfig) (*Init, chan Exited) {
	t.Helper()
	exited := make(chan Exited, 8)
	p := NewInit(InitConfig{
		ID:      "c1",
		Bundle:  t.TempDir(),
		Runtime: f,
		Exits:   NewExitHub(),
		Exited:  exited,
		Restore: restore,
	})
	if err := p.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p, exited
}

// recordExits records every exit p reports, as the shim does.
func recordExits(p Process, exited chan Exited) {
	go func() {
		for e := range exited {
			e.Process.SetExited(e.Status)
		}
	}()
}
