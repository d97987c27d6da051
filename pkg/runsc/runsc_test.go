package runsc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRunsc writes a shell script standing in for runsc: it records its
// arguments and answers per verb. It is a fake because these tests check the
// wrapper's argument building and error handling; real runsc runs in e2e.
func fakeRunsc(t *testing.T, body string) (*Runsc, string) {
	t.Helper()
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$@\" >> " + argsFile + "\n" + body + "\n"
	bin := filepath.Join(dir, "runsc")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Runsc{Binary: bin, Root: "/run/r", Log: filepath.Join(dir, "log.json"), Flags: map[string]string{"platform": "systrap", "debug": "true"}}, argsFile
}

func lastArgs(t *testing.T, f string) string {
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

func TestGlobalArgsAreStable(t *testing.T) {
	r := &Runsc{Root: "/r", Log: "/l", Flags: map[string]string{"z": "1", "a": "2", "nvproxy": "true"}}
	got := strings.Join(r.GlobalArgs(), " ")
	want := "--root=/r --log=/l --log-format=json --a=2 --nvproxy=true --z=1"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestCheckpointArgs(t *testing.T) {
	r, args := fakeRunsc(t, "exit 0")
	err := r.Checkpoint(context.Background(), "c1", CheckpointOpts{
		ImagePath: "/img", LeaveRunning: true, Compression: "none", Direct: true,
		CudaCheckpointPath: "/.runsc-cuda/cuda-checkpoint", CudaCheckpointSequential: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "--root=/run/r --log=" + r.Log + " --log-format=json --debug=true --platform=systrap checkpoint --image-path /img --leave-running --compression=none --direct --cuda-checkpoint-path=/.runsc-cuda/cuda-checkpoint --cuda-checkpoint-sequential c1"
	if got := lastArgs(t, args); got != want {
		t.Fatalf("args:\n got %q\nwant %q", got, want)
	}
}

func TestErrorsCarryRunscMessage(t *testing.T) {
	r, _ := fakeRunsc(t, `echo 'loading container: file does not exist' >&2; exit 128`)
	err := r.Kill(context.Background(), "c1", 9, KillOpts{All: true})
	if err == nil || !strings.Contains(err.Error(), "runsc kill exited with status 128: loading container: file does not exist") {
		t.Fatalf("err = %v", err)
	}
	if !IsNotExist(err) {
		t.Errorf("IsNotExist(%v) = false", err)
	}
}

func TestIOCommandErrorComesFromLog(t *testing.T) {
	r, _ := fakeRunsc(t, `echo '{"msg":"creating container: bad spec","level":"error"}' > "$(echo "$@" | sed 's/.*--log=\([^ ]*\).*/\1/')"; exit 128`)
	err := r.Create(context.Background(), "c1", "/bundle", CreateOpts{PidFile: "/p"})
	if err == nil || !strings.Contains(err.Error(), "creating container: bad spec") {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitAndPsParse(t *testing.T) {
	r, _ := fakeRunsc(t, `case "$*" in *wait*) echo '{"id":"c1","exitStatus":137}';; *ps*) echo '[1,5,9]';; esac`)
	st, err := r.Wait(context.Background(), "c1")
	if err != nil || st != 137 {
		t.Fatalf("wait = %d, %v", st, err)
	}
	pids, err := r.Ps(context.Background(), "c1")
	if err != nil || len(pids) != 3 || pids[2] != 9 {
		t.Fatalf("ps = %v, %v", pids, err)
	}
}

func TestVersion(t *testing.T) {
	r, _ := fakeRunsc(t, `echo "runsc version release-20260905.0"; echo "spec: 1.2.1"`)
	v, err := r.Version(context.Background())
	if err != nil || v != "release-20260905.0" {
		t.Fatalf("version = %q, %v", v, err)
	}
}
