package shim

import (
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestParseCheckpointOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     *runcoptions.CheckpointOptions
		path     string
		cfg      Config
		wantErr  string
		wantExit bool
		wantDir  string
	}{
		{name: "nil leaves running", path: "/var/ckpt", wantDir: "/var/ckpt"},
		{name: "exit", opts: &runcoptions.CheckpointOptions{Exit: true}, path: "/c", wantExit: true, wantDir: "/c"},
		{name: "ctr container checkpoint defaults", opts: &runcoptions.CheckpointOptions{FileLocks: true}, path: "/c", wantDir: "/c"},
		{name: "terminal and tcp are sentry state", opts: &runcoptions.CheckpointOptions{Terminal: true, OpenTcp: true}, path: "/c", wantDir: "/c"},
		{name: "image path wins", opts: &runcoptions.CheckpointOptions{ImagePath: "/images/a"}, path: "/c", wantDir: "/images/a"},
		{name: "external unix sockets", opts: &runcoptions.CheckpointOptions{ExternalUnixSockets: true}, path: "/c", wantErr: "host Unix sockets"},
		{name: "empty namespaces", opts: &runcoptions.CheckpointOptions{EmptyNamespaces: []string{"network"}}, path: "/c", wantErr: "EmptyNamespaces"},
		{name: "tcp with host network", opts: &runcoptions.CheckpointOptions{OpenTcp: true}, path: "/c", cfg: Config{RunscConfig: map[string]string{"network": "host"}}, wantErr: "network=host"},
		{name: "relative path", path: "ckpt", wantErr: "absolute"},
		{name: "escaping path", opts: &runcoptions.CheckpointOptions{ImagePath: "/images/../etc"}, path: "/c", wantErr: "clean"},
		{name: "no path", wantErr: "no checkpoint path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a = mustAnyOrNil(t, tc.opts)
			req, err := parseCheckpointOptions(a, tc.path, &tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Exit != tc.wantExit || req.Dir != tc.wantDir {
				t.Errorf("got %+v", req)
			}
		})
	}
}

func mustAnyOrNil(t *testing.T, o *runcoptions.CheckpointOptions) *anypb.Any {
	if o == nil {
		return nil
	}
	return mustAny(t, o)
}
