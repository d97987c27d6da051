package shim

import (
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDefaultOverlay2(t *testing.T) {
	snap := t.TempDir()
	upper := filepath.Join(snap, "fs")
	overlay := []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off", "workdir=" + filepath.Join(snap, "work"), "upperdir=" + upper, "lowerdir=/l1:/l2"}}}
	plain := &specs.Spec{}
	cri := &specs.Spec{Annotations: map[string]string{annotationContainerType: "container"}}
	for _, tc := range []struct {
		name   string
		cfg    *Config
		spec   *specs.Spec
		rootfs []*types.Mount
		want   string
	}{
		{"overlay rootfs: filestore beside the rw layer", &Config{}, plain, overlay, "root:dir=" + snap},
		{"configured overlay2 wins", &Config{RunscConfig: map[string]string{"overlay2": "root:self"}}, plain, overlay, ""},
		{"configured overlay wins", &Config{RunscConfig: map[string]string{"overlay": "true"}}, plain, overlay, ""},
		{"CRI keeps runsc's default", &Config{}, cri, overlay, ""},
		{"flag annotation wins", &Config{}, &specs.Spec{Annotations: map[string]string{"dev.gvisor.flag.overlay2": "none"}}, overlay, ""},
		{"bind rootfs", &Config{}, plain, []*types.Mount{{Type: "bind", Source: snap, Options: []string{"rbind"}}}, ""},
		{"no rootfs mounts", &Config{}, plain, nil, ""},
		{"upperdir missing", &Config{}, plain, []*types.Mount{{Type: "overlay", Options: []string{"upperdir=/nonexistent/x/fs", "lowerdir=/l"}}}, ""},
		{"read-only overlay", &Config{}, plain, []*types.Mount{{Type: "overlay", Options: []string{"lowerdir=/l1:/l2"}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := defaultOverlay2(tc.cfg, tc.spec, tc.rootfs); got != tc.want {
				t.Fatalf("defaultOverlay2 = %q, want %q", got, tc.want)
			}
		})
	}
}
