package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// restoreRequest is the checkpoint a created container restores at Start.
type restoreRequest struct {
	dir    string
	meta   *checkpoint.Metadata
	config process.RestoreConfig
}

// container is one containerd container: its init process and exec'd
// processes, the sandbox it runs in, and what the shim decided for it at
// create.
type container struct {
	id     string
	bundle bundle
	spec   *specs.Spec
	config *Config
	rt     *runsc.Runsc
	init   *process.Init
	// sandboxID is the sandbox the container runs in (the service's
	// sandboxes hold it).
	sandboxID string
	gpu       gpuHook
	// restore is the checkpoint Start restores; nil for a fresh start.
	restore *restoreRequest
	// source is the checkpoint a restore annotation names, nil without one.
	source *restoreSource

	mu    sync.Mutex
	execs map[string]*process.Exec
	// reserved holds exec ids between Exec and their registration.
	reserved map[string]struct{}
	// initDone is set once the init process exited: no new execs.
	initDone bool
	// running counts the execs that started and whose exit is not
	// published yet; init's exit is published after theirs, or after
	// execGrace.
	running   counter
	execGrace time.Duration
}

// newRunsc returns the runsc wrapper of a container whose sandbox keeps its
// state in root: the config's flags, nvproxy for GPU containers, and the
// overlay2 flag the shim picked ("" for runsc's default).
func newRunsc(cfg *Config, namespace, root string, b bundle, gpu bool, overlay2 string) *runsc.Runsc {
	flags := make(map[string]string, len(cfg.RunscConfig)+3)
	for k, v := range cfg.RunscConfig {
		flags[k] = v
	}
	if gpu {
		flags["nvproxy"] = "true"
	}
	if overlay2 != "" {
		flags["overlay2"] = overlay2
	}
	// What runsc shares across sandboxes (the gofers' pinned empty network
	// namespace) stays in the namespace's directory, not in each sandbox's.
	if _, ok := flags["shared-root"]; !ok {
		flags["shared-root"] = filepath.Join(cfg.RunscBase(), namespace)
	}
	return &runsc.Runsc{
		Binary:  cfg.BinaryName,
		Root:    root,
		Log:     b.path(runscLogFile),
		Flags:   flags,
		Monitor: reaper.Default,
	}
}

// hasExited tells whether the container's init process has exited.
func (c *container) hasExited() bool {
	c.mu.Lock()
	done := c.initDone
	c.mu.Unlock()
	if done {
		return true
	}
	st, _ := c.init.Status(context.Background())
	return st == process.StatusStopped || st == process.StatusDeleted
}

// restoreName names the checkpoint the container was restored from: what
// its restore annotation said, else the checkpoint directory.
func (c *container) restoreName() string {
	if c.source != nil {
		return c.source.name
	}
	if c.restore != nil {
		return c.restore.dir
	}
	return ""
}

// removeUnpacked removes the checkpoint archive unpacked for the
// container's restore (after its deletion: runsc may read pages of a
// restored image until then).
func (c *container) removeUnpacked(ctx context.Context) {
	if c.source == nil || !c.source.unpacked {
		return
	}
	if err := os.RemoveAll(c.source.dir); err != nil {
		log.G(ctx).WithError(err).WithField("dir", c.source.dir).Warn("removing the unpacked checkpoint")
	}
}

func (c *container) process(execID string) (process.Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %s of container %s: %w", execID, c.id, errdefs.ErrNotFound)
	}
	return p, nil
}

// exec creates an exec'd process (startExec runs it).
func (c *container) exec(ctx context.Context, cfg process.ExecConfig) error {
	if !c.reserve(cfg.ID) {
		return fmt.Errorf("exec %s already exists in container %s: %w", cfg.ID, c.id, errdefs.ErrAlreadyExists)
	}
	defer c.release(cfg.ID)
	e, err := c.init.Exec(ctx, c.bundle.path(""), cfg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.execs[cfg.ID] = e
	c.mu.Unlock()
	return nil
}

// reserve claims an exec id until release.
func (c *container) reserve(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[id]; ok {
		return false
	}
	if _, ok := c.reserved[id]; ok {
		return false
	}
	c.reserved[id] = struct{}{}
	return true
}

func (c *container) release(id string) {
	c.mu.Lock()
	delete(c.reserved, id)
	c.mu.Unlock()
}

// startExec starts an exec'd process; the container's init must not have
// exited.
func (c *container) startExec(ctx context.Context, id string) (process.Process, error) {
	p, err := c.process(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.initDone {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: container %s is not running", errdefs.ErrFailedPrecondition, c.id)
	}
	c.running.add()
	c.mu.Unlock()
	if err := p.Start(ctx); err != nil {
		c.running.done()
		return nil, err
	}
	return p, nil
}

// deleteExec deletes an exec'd process.
func (c *container) deleteExec(ctx context.Context, id string) (process.Process, error) {
	p, err := c.process(id)
	if err != nil {
		return nil, err
	}
	if err := p.Delete(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	delete(c.execs, id)
	c.mu.Unlock()
	return p, nil
}

func (c *container) execList() []*process.Exec {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*process.Exec, 0, len(c.execs))
	for _, e := range c.execs {
		out = append(out, e)
	}
	return out
}

// killAllOnExit reports whether the init's exit leaves processes of the
// container behind (as containerd's runc shim decides): unless the
// container has a PID namespace of its own, whose init's exit ends it, its
// other processes outlive the init (a pod sharing one PID namespace).
func (c *container) killAllOnExit() bool {
	if c.spec.Linux == nil {
		return true
	}
	for _, ns := range c.spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace && ns.Path == "" {
			return false
		}
	}
	return true
}

// counter counts the running execs of a container.
type counter struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (r *counter) add() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.zero = make(chan struct{})
	}
	r.n++
}

func (r *counter) done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n--
	if r.n == 0 {
		close(r.zero)
	}
}

// wait waits until the count is zero; false when ctx ended first.
func (r *counter) wait(ctx context.Context) bool {
	r.mu.Lock()
	if r.n == 0 {
		r.mu.Unlock()
		return true
	}
	zero := r.zero
	r.mu.Unlock()
	select {
	case <-zero:
		return true
	case <-ctx.Done():
		return false
	}
}
