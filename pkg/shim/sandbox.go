package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// sandbox is one runsc sandbox, one gVisor kernel: a standalone container's,
// or a pod's, holding its sandbox (pause) container and the application
// containers that joined it. It owns runsc's state directory, the OOM
// watches of its members, the pod network it took over, and its replacement
// by a restored sandbox (replace.go).
type sandbox struct {
	id string
	// root is runsc's state directory, <root>/<namespace>/<id>: runsc
	// resolves container ids as prefixes when several could match and then
	// refuses them as ambiguous, so sandboxes do not share one.
	root string
	oom  *oomWatcher
	reg  *sandboxes

	mu      sync.Mutex
	members map[string]*container
	// createdPid is the sandbox pid containerd was told when the root
	// container was created; the CRI points its pod's containers'
	// namespaces at /proc/<createdPid>/ns/..., which a replacement changes.
	createdPid int
	// network is the pod network runsc took over at the sandbox's start.
	network *podNetwork
	// restoredFrom is the checkpoint a pod restore replaced the sandbox
	// with, restoredName the name of the application container it held.
	restoredFrom, restoredName string
	// completed names the pod's containers that ran to completion (exit
	// status 0) and were deleted: its init containers, which a pod
	// checkpoint names (checkpoint.Pod.Completed).
	completed []string
}

// sandboxes are a shim's sandboxes, by id.
type sandboxes struct {
	mu sync.Mutex
	m  map[string]*sandbox
}

// get returns sandbox id, recording it when it is new.
func (r *sandboxes) get(id, root string, oom *oomWatcher) *sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*sandbox{}
	}
	sb, ok := r.m[id]
	if !ok {
		sb = &sandbox{id: id, root: root, oom: oom, reg: r, members: map[string]*container{}}
		r.m[id] = sb
	}
	return sb
}

// lookup returns sandbox id.
func (r *sandboxes) lookup(id string) *sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// add makes c a member.
func (sb *sandbox) add(c *container) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.members[c.id] = c
	if c.id == sb.id {
		sb.createdPid = c.init.Pid()
	}
}

// leave ends c's membership; the last member takes the sandbox's runsc
// directory and record with it.
func (sb *sandbox) leave(ctx context.Context, c *container) {
	sb.oom.Stop(c.id)
	sb.mu.Lock()
	delete(sb.members, c.id)
	sb.mu.Unlock()
	sb.reg.discard(ctx, sb)
}

// discard forgets sb, and removes its runsc directory, when it has no
// members (the last one left, or the first one's create failed).
func (r *sandboxes) discard(ctx context.Context, sb *sandbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb.mu.Lock()
	empty := len(sb.members) == 0
	sb.mu.Unlock()
	if !empty || r.m[sb.id] != sb {
		return
	}
	delete(r.m, sb.id)
	removeRunscRoot(ctx, sb.root)
	removeNamespaceRoot(ctx, filepath.Dir(sb.root))
}

// removeRunscRoot removes a sandbox's runsc state directory once runsc
// holds nothing in it.
func removeRunscRoot(ctx context.Context, root string) {
	if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		log.G(ctx).WithError(err).WithField("root", root).Warn("removing the sandbox's runsc state directory")
	}
}

// rootContainer returns the sandbox's root container, nil when this shim
// does not serve it.
func (sb *sandbox) rootContainer() *container {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.members[sb.id]
}

// others returns the members but the root container and c, by id.
func (sb *sandbox) others(c *container) []*container {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	var out []*container
	for id, m := range sb.members {
		if id != sb.id && m != c {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// watchOOM reports OOM kills in the sandbox's cgroup as TaskOOM of c.
func (sb *sandbox) watchOOM(ctx context.Context, c *container) {
	pid := c.init.Pid()
	if pid <= 0 {
		return
	}
	if err := sb.oom.Add(c.id, pid); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("OOM events will not be reported for this container")
	}
}

// repoint points a new pod container's namespaces at the pod's current
// sandbox when a restore replaced it (the CRI still names the sandbox pid it
// was told at create). It reports whether it changed the spec.
func (sb *sandbox) repoint(spec *specs.Spec) bool {
	root := sb.rootContainer()
	if root == nil || !subcontainer(spec) {
		return false
	}
	sb.mu.Lock()
	created := sb.createdPid
	sb.mu.Unlock()
	return repointNamespaces(spec, created, root.init.Pid())
}

// repointNamespaces makes the spec's namespace paths that name process
// oldPid (/proc/<oldPid>/ns/<type>) name newPid instead. It reports whether
// it changed anything.
func repointNamespaces(spec *specs.Spec, oldPid, newPid int) bool {
	if spec.Linux == nil || oldPid <= 0 || newPid <= 0 || oldPid == newPid {
		return false
	}
	oldPrefix := fmt.Sprintf("/proc/%d/ns/", oldPid)
	changed := false
	for i, ns := range spec.Linux.Namespaces {
		if rest, ok := strings.CutPrefix(ns.Path, oldPrefix); ok {
			spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/%s", newPid, rest)
			changed = true
		}
	}
	return changed
}

// starting runs before a container's fresh start. A pod's sandbox container
// is about to hand the pod's network over to runsc: what the namespace holds
// is recorded, for a replacement of the sandbox by a restored one.
func (sb *sandbox) starting(ctx context.Context, c *container) error {
	if c.id != sb.id || c.spec.Annotations[annotationContainerType] != containerTypeSandbox || !c.config.netstack() {
		return nil
	}
	n, err := recordNetwork(c.init.Pid())
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("the pod's network was not recorded; a restore into this pod would come back without it")
		return nil
	}
	sb.mu.Lock()
	sb.network = n
	sb.mu.Unlock()
	return nil
}
