package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness/ctrdconfig"
)

func TestContainerd(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"containerd", "--dir", "/w"}, &out); err != nil {
		t.Fatal(err)
	}
	want, _ := ctrdconfig.InDir("/w").Render()
	if out.String() != string(want) {
		t.Errorf("output\n%s\nwant\n%s", out.String(), want)
	}
}

func TestShimToFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runsc-cuda.toml")
	args := []string{"shim", "--runsc", "/b/runsc", "--root", "/w/runsc", "--runsc-flag", "debug-log=/l/%ID%/",
		"--runsc-flag", "platform=ptrace", "--toggle-tool", "/b/cuda-checkpoint", "--extra", "[runsc_config]\nplatform = \"systrap\"\n",
		"--out", path}
	if err := run(args, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ctrdconfig.Shim{Runsc: "/b/runsc", Root: "/w/runsc", ToggleTool: "/b/cuda-checkpoint",
		RunscFlags: map[string]string{"debug-log": "/l/%ID%/", "platform": "systrap"}}.Render()
	if string(got) != string(want) {
		t.Errorf("file\n%s\nwant\n%s", got, want)
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"other"},
		{"containerd"},
		{"shim", "--runsc", "/b/runsc"},
		{"shim", "--runsc", "/r", "--root", "/w", "--runsc-flag", "novalue"},
		{"containerd", "--dir", "/w", "extra"},
	} {
		if err := run(args, &strings.Builder{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
