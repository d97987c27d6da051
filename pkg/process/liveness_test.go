package process

import (
	"os"
	"os/exec"
	"testing"
)

// TestAlive: a running process is alive; a zombie and a process that is
// gone are not.
func TestAlive(t *testing.T) {
	if !alive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Not yet waited for: once it exits it is a zombie.
	for i := 0; i < 200 && alive(pid); i++ {
		exec.Command("/bin/true").Run()
	}
	if alive(pid) {
		t.Errorf("exited child %d (a zombie) reported alive", pid)
	}
	cmd.Wait()
	if alive(pid) {
		t.Errorf("reaped child %d reported alive", pid)
	}
}
