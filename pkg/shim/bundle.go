package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// bundle is a container's bundle directory: containerd's config.json and
// rootfs, and the files the shim keeps there for a later `shim delete`
// (which runs when the shim died) and for runsc.
type bundle string

// The files of a bundle.
const (
	specFile = "config.json"
	// shimConfigFile is the shim's resolved config; legacyShimConfigFile is
	// its name in the first release (too close to the checkpoint metadata's).
	shimConfigFile       = "shim-config.json"
	legacyShimConfigFile = "runsc-cuda.json"
	exitStatusFile       = "exit-status"
	// addressFile holds the shim's socket address, as containerd's runc shim
	// keeps it: the shim removes that socket when it shuts down, `shim
	// delete` when the shim was killed.
	addressFile = "address"
	// checkpointMarkerFile names the image directory of the checkpoint in
	// progress.
	checkpointMarkerFile = "checkpoint-in-progress"
	runscLogFile         = "log.json"
	rootfsDir            = "rootfs"
)

func (b bundle) path(name string) string { return filepath.Join(string(b), name) }

// readSpec reads the OCI spec.
func (b bundle) readSpec() (*specs.Spec, error) {
	data, err := os.ReadFile(b.path(specFile))
	if err != nil {
		return nil, fmt.Errorf("reading OCI spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: parsing OCI spec %s: %v", errdefs.ErrInvalidArgument, b.path(specFile), err)
	}
	return &s, nil
}

// writeSpec writes the OCI spec runsc reads. The shim writes it once per
// phase (create; the replacement of a pod's sandbox), after every change of
// that phase.
func (b bundle) writeSpec(s *specs.Spec) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.path(specFile), data, 0o600); err != nil {
		return fmt.Errorf("writing the OCI spec: %w", err)
	}
	return nil
}

// rootfs is the directory the spec names as the container's root.
func (b bundle) rootfs(s *specs.Spec) string {
	p := rootfsDir
	if s.Root != nil && s.Root.Path != "" {
		p = s.Root.Path
	}
	if !filepath.IsAbs(p) {
		p = b.path(p)
	}
	return p
}

// writeConfig persists the resolved config, so that `shim delete` finds
// runsc and its root.
func (b bundle) writeConfig(c *Config) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(b.path(shimConfigFile), data, 0o600)
}

// readConfig reads what writeConfig wrote (or the first release's file); a
// missing file gives the defaults.
func (b bundle) readConfig() (*Config, error) {
	data, err := os.ReadFile(b.path(shimConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		data, err = os.ReadFile(b.path(legacyShimConfigFile))
	}
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", shimConfigFile, err)
	}
	return &c, nil
}

// writeExitStatus records init's exit for `shim delete`.
func (b bundle) writeExitStatus(pid, status int, at time.Time) error {
	data := fmt.Sprintf("%d %d %d", pid, status, at.UnixNano())
	return os.WriteFile(b.path(exitStatusFile), []byte(data), 0o600)
}

func (b bundle) readExitStatus() (pid, status int, at time.Time, err error) {
	data, err := os.ReadFile(b.path(exitStatusFile))
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	var ns int64
	if _, err := fmt.Sscanf(string(data), "%d %d %d", &pid, &status, &ns); err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("parsing %s: %w", exitStatusFile, err)
	}
	return pid, status, time.Unix(0, ns), nil
}

// markCheckpoint records the image directory of a checkpoint in progress: a
// shim that dies during the checkpoint cannot remove what runsc wrote, and
// `shim delete` then does (interruptedCheckpoint).
func (b bundle) markCheckpoint(dir string) error {
	if err := os.WriteFile(b.path(checkpointMarkerFile), []byte(dir), 0o600); err != nil {
		return fmt.Errorf("recording the checkpoint in progress: %w", err)
	}
	return nil
}

func (b bundle) unmarkCheckpoint(ctx context.Context) {
	if err := os.Remove(b.path(checkpointMarkerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("removing the checkpoint marker")
	}
}

// interruptedCheckpoint returns, and forgets, the image directory of the
// checkpoint the shim was writing when it died.
func (b bundle) interruptedCheckpoint() (string, bool) {
	data, err := os.ReadFile(b.path(checkpointMarkerFile))
	if err != nil {
		return "", false
	}
	_ = os.Remove(b.path(checkpointMarkerFile))
	dir := string(data)
	if !filepath.IsAbs(dir) || hasDotDot(dir) {
		return "", false
	}
	return dir, true
}

// writeAddress records the shim's address in the bundle (start runs in the
// bundle directory) atomically.
func writeAddress(address string) error {
	tmp := addressFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(address), 0o600); err != nil {
		return fmt.Errorf("recording the shim address: %w", err)
	}
	if err := os.Rename(tmp, addressFile); err != nil {
		return fmt.Errorf("recording the shim address: %w", err)
	}
	return nil
}
