package runsc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
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
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
}

func TestErrorDropsStackTrace(t *testing.T) {
	err := &Error{Args: []string{"restore"}, Status: 128, Msg: "restoring container \"c1\": failed to load kernel: error decoding from 0xc4: unreachable:\ngoroutine 33 [running]:\ngvisor.dev/gvisor/pkg/state.safely.func1()\n\tstate.go:309 +0x19e"}
	want := `runsc restore exited with status 128: restoring container "c1": failed to load kernel: error decoding from 0xc4: unreachable (stack trace in runsc's debug log)`
	if got := err.Error(); got != want {
		t.Fatalf("got %q, want %q", got, want)
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

// Version runs runsc once per binary file: a checkpoint records it, and a
// replaced binary is asked again.
func TestVersionIsCachedPerBinaryFile(t *testing.T) {
	r, args := fakeRunsc(t, `echo "runsc version one"`)
	for range 3 {
		if v, err := r.Version(context.Background()); err != nil || v != "one" {
			t.Fatalf("version = %q, %v", v, err)
		}
	}
	data, err := os.ReadFile(args)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "--version"); n != 1 {
		t.Fatalf("runsc --version ran %d times, want 1", n)
	}
	script := "#!/bin/sh\necho \"$@\" >> " + args + "\necho \"runsc version two, longer\"\n"
	if err := os.WriteFile(r.Binary+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(r.Binary+".new", r.Binary); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Version(context.Background()); err != nil || v != "two, longer" {
		t.Fatalf("version after replacing the binary = %q, %v", v, err)
	}
}

// runsc writes its JSON log objects back to back, without newlines; the
// sandbox's and gofer's errors (the cause) come before runsc's own, and
// errors of earlier commands are not this command's.
func TestIOCommandErrorsComeFromThisCommandsLog(t *testing.T) {
	r, _ := fakeRunsc(t, `log=$(echo "$@" | sed 's/.*--log=\([^ ]*\).*/\1/')
printf '%s' '{"msg":"error setting up FS: open /src: no such file or directory","level":"error"}{"msg":"noise","level":"debug"}{"msg":"creating container: waiting for sandbox to start: EOF","level":"error"}' >> "$log"
exit 128`)
	if err := os.WriteFile(r.Log, []byte(`{"msg":"an earlier failure","level":"error"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nullIO, err := runc.NewNullIO()
	if err != nil {
		t.Fatal(err)
	}
	defer nullIO.Close()
	err = r.Create(context.Background(), "c1", "/bundle", CreateOpts{PidFile: "/p", IO: nullIO})
	want := "runsc create exited with status 128: error setting up FS: open /src: no such file or directory; creating container: waiting for sandbox to start: EOF"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// A misspelled flag is reported on stderr only, before runsc opens its log.
func TestIOCommandFlagError(t *testing.T) {
	r, _ := fakeRunsc(t, `case "$*" in *--version*) echo 'flag provided but not defined: -bogus' >&2; echo 'Usage: runsc <flags>' >&2;; esac
exit 2`)
	nullIO, err := runc.NewNullIO()
	if err != nil {
		t.Fatal(err)
	}
	defer nullIO.Close()
	err = r.Create(context.Background(), "c1", "/bundle", CreateOpts{PidFile: "/p", IO: nullIO})
	want := "runsc create exited with status 2: flag provided but not defined: -bogus"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// runsc's messages map to containerd's error classes once, here; callers
// test errors.Is and errgrpc gives containerd the matching code.
func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want error
	}{
		{`loading container "c1": file does not exist`, errdefs.ErrNotFound},
		{`loading container: open /run/r/c1_sandbox:c1.state: no such file or directory`, errdefs.ErrNotFound},
		{`sandbox is not running`, errdefs.ErrNotFound},
		{`cannot signal container "c1" in state stopped`, errdefs.ErrNotFound},
		{`signal: no such process`, errdefs.ErrNotFound},
		{`container with id "c1" already exists`, errdefs.ErrAlreadyExists},
		{`cannot pause container "c1" in state paused`, errdefs.ErrFailedPrecondition},
		{`id "web" is ambiguous and could refer to multiple containers: "web", "web2"`, errdefs.ErrFailedPrecondition},
		{`error setting up FS: open /src: no such file or directory`, nil},
		{`executable file not found in $PATH`, nil},
	} {
		err := error(&Error{Args: []string{"x"}, Status: 128, Msg: tc.msg})
		for _, class := range []error{errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrFailedPrecondition} {
			if got := errors.Is(err, class); got != (class == tc.want) {
				t.Errorf("%q: errors.Is(%v) = %v", tc.msg, class, got)
			}
		}
	}
}

// On cgroup v2 runsc fails a delete that removed the container when a cgroup
// it created above it is still in use (EBUSY): that delete succeeds; the same
// error while runsc still has the container does not.
func TestDeleteLeavesBusySharedCgroup(t *testing.T) {
	busy := `echo 'destroying container: stopping container: removing cgroup path "/sys/fs/cgroup/k8s.io": device or resource busy' >&2; exit 128`
	for _, tc := range []struct {
		name, state string
		wantErr     bool
	}{
		{"container gone", `echo 'loading container "c1": file does not exist' >&2; exit 128`, false},
		{"container still there", `echo '{"id":"c1","status":"stopped"}'`, true},
	} {
		r, _ := fakeRunsc(t, `case "$*" in *delete*) `+busy+`;; *state*) `+tc.state+`;; esac`)
		err := r.Delete(context.Background(), "c1")
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: Delete = %v, want error %t", tc.name, err, tc.wantErr)
		}
	}
}

// A failure runsc explains only in a warning carries the warning.
func TestErrorFromLoggedWarning(t *testing.T) {
	r, _ := fakeRunsc(t, `printf '%s' '{"msg":"cannot get events for container \"c1\" in state stopped","level":"warning"}' > "$(echo "$@" | sed 's/.*--log=\([^ ]*\).*/\1/')"; exit 128`)
	_, err := r.Stats(context.Background(), "c1")
	if err == nil || !strings.Contains(err.Error(), "in state stopped") || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v, want runsc's warning, NotFound", err)
	}
}
