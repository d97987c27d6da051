package shim

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// Pods. The CRI runs a pod as a sandbox (pause) container and application
// containers annotated with the sandbox's id; runsc puts them all in one
// sandbox (one gVisor kernel), and the manager groups them in one shim.
//
// gVisor checkpoints a sandbox as a whole and restores it only as a whole,
// into a sandbox that has not started yet. Hence:
//
//   - A checkpoint of a pod's application container saves the pod: it is
//     allowed while that is the pod's one live application container
//     (besides its sandbox container), and refused with FailedPrecondition
//     while others run: their memory would be in the image, and no CRI
//     restore (one container at a time) could bring them back. Containers
//     that have exited (init containers the kubelet keeps for their status)
//     are removed from the sandbox first, as their deletion would.
//   - A checkpoint of a pod's sandbox container is refused while the pod
//     holds application containers; checkpoint the application container.
//   - Exit checkpoints of a pod's application container are refused: after
//     gVisor saved the pod, stopping only that container is not atomic with
//     the save. The CRI only asks for leave-running checkpoints.
//   - A restore of a pod checkpoint into a pod's application container (the
//     CRI's CreateContainer from a checkpoint archive) replaces the pod's
//     running sandbox, which holds only its pause container, with a new one
//     restored from the image: the pod's sandbox container and the restored
//     container then run from the checkpoint, as one sandbox again.

// annotationContainerName is the CRI's container name; gVisor matches the
// containers of a restored sandbox to the checkpointed ones by it.
const annotationContainerName = "io.kubernetes.cri.container-name"

// annotationNameRemap renames a container for gVisor's matching at restore
// ("current=checkpointed"); runsc does not compare it with the checkpoint.
const (
	annotationNameRemapPrefix = "dev.gvisor.container-name-remap."
	annotationNameRemap       = annotationNameRemapPrefix + "runsc-cuda"
)

// gvisorName returns the name gVisor knows a container by: the CRI name,
// renamed by a remap annotation (as runsc's specutils.ContainerName does).
func gvisorName(spec *specs.Spec) string {
	name := spec.Annotations[annotationContainerName]
	if name == "" {
		return ""
	}
	for k, v := range spec.Annotations {
		if !strings.HasPrefix(k, annotationNameRemapPrefix) {
			continue
		}
		if from, to, ok := strings.Cut(v, "="); ok && from == name {
			return to
		}
	}
	return name
}

// sandboxOf returns the id of the runsc sandbox a container runs in: the
// pod's sandbox for a CRI application container, else its own.
func sandboxOf(id string, spec *specs.Spec) string {
	if subcontainer(spec) {
		if sb := spec.Annotations[annotationSandboxID]; sb != "" {
			return sb
		}
	}
	return id
}

// sandboxMembers returns the containers of this shim that run in sandbox sb:
// its root container (nil when not in this shim) and the others, by id.
func (s *Service) sandboxMembers(sb string) (root *container, subs []*container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.containers {
		if sandboxOf(c.id, c.spec) != sb {
			continue
		}
		if c.id == sb {
			root = c
		} else {
			subs = append(subs, c)
		}
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].id < subs[j].id })
	return root, subs
}

// describe names a container for error messages: its CRI name and id.
func describe(c *container) string {
	if n := c.spec.Annotations[annotationContainerName]; n != "" {
		return fmt.Sprintf("%s (%s)", n, c.id)
	}
	return c.id
}

func describeAll(cs []*container) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = describe(c)
	}
	return strings.Join(names, ", ")
}

// preparePodCheckpoint applies the pod rules above to a checkpoint of c,
// removes the pod's exited containers from its sandbox, and returns the pod
// the image will hold (nil for a container outside a pod).
func (s *Service) preparePodCheckpoint(ctx context.Context, c *container, req checkpointRequest) (*checkpoint.Pod, error) {
	pod, exited, err := s.checkPodCheckpoint(ctx, c, req)
	if err != nil {
		return nil, err
	}
	for _, o := range exited {
		// runsc keeps an exited container in the sandbox until it is
		// deleted, and gVisor would save it and wait for it at restore.
		// Its task stays stopped; containerd's Delete of it finds nothing
		// left in runsc, which is fine.
		if err := o.init.Runtime().Delete(ctx, o.id, true); err != nil && !runsc.IsNotExist(err) {
			return nil, fmt.Errorf("removing the exited container %s from the pod's sandbox before the checkpoint: %w", describe(o), err)
		}
		log.G(ctx).WithField("id", o.id).Info("removed an exited container from the pod's sandbox for the checkpoint")
	}
	return pod, nil
}

// checkPodCheckpoint applies the pod rules above to a checkpoint of c and
// returns the pod the image will hold (nil for a container outside a pod)
// and the pod's exited containers.
func (s *Service) checkPodCheckpoint(ctx context.Context, c *container, req checkpointRequest) (*checkpoint.Pod, []*container, error) {
	sb := sandboxOf(c.id, c.spec)
	root, subs := s.sandboxMembers(sb)
	if !subcontainer(c.spec) {
		if len(subs) > 0 {
			return nil, nil, fmt.Errorf("%w: %s is the sandbox container of a pod that runs %s; gVisor saves the whole pod sandbox, so checkpoint the pod's application container instead",
				errdefs.ErrFailedPrecondition, c.id, describeAll(subs))
		}
		return nil, nil, nil
	}
	var live, exited []*container
	for _, o := range subs {
		if o == c {
			continue
		}
		if st, _ := o.init.Status(ctx); st == process.StatusStopped || st == process.StatusDeleted {
			exited = append(exited, o)
		} else {
			live = append(live, o)
		}
	}
	if len(live) > 0 {
		return nil, nil, fmt.Errorf("%w: cannot checkpoint %s alone: gVisor checkpoints the whole pod sandbox %s, which also runs %s; a checkpoint would save those containers too and could not be restored one container at a time. Checkpoint pods that run a single application container (stop and remove the others first)",
			errdefs.ErrFailedPrecondition, describe(c), sb, describeAll(live))
	}
	if root == nil {
		return nil, nil, fmt.Errorf("%w: the sandbox container %s of %s's pod is not served by this shim; cannot tell what the pod checkpoint would hold", errdefs.ErrFailedPrecondition, sb, c.id)
	}
	if req.Exit {
		return nil, nil, fmt.Errorf("%w: exit checkpoints of a pod's container (%s) are not supported: gVisor saves the whole pod, and stopping only this container after the save is not atomic with it; checkpoint it leaving it running (the CRI's CheckpointContainer does) and stop it through the CRI",
			errdefs.ErrFailedPrecondition, describe(c))
	}
	return &checkpoint.Pod{
		SandboxID: sb,
		Containers: []checkpoint.PodContainer{
			{ID: root.id, Name: gvisorName(root.spec), Sandbox: true},
			{ID: c.id, Name: gvisorName(c.spec)},
		},
	}, exited, nil
}

// checkPodRestore checks, before anything is created, that a checkpoint
// fits the container restoring it: a pod checkpoint restores only into a
// pod's application container of the same CRI name, and a standalone
// container's checkpoint only into a standalone container.
func checkPodRestore(meta *checkpoint.Metadata, spec *specs.Spec) error {
	if meta.Pod == nil {
		if subcontainer(spec) {
			return fmt.Errorf("the checkpoint holds a single container, not a pod; gVisor restores a pod sandbox only from a checkpoint of a pod, so restore it as a standalone container (ctr, nerdctl) or checkpoint it inside a pod")
		}
		return nil
	}
	if !subcontainer(spec) {
		return fmt.Errorf("the checkpoint holds pod sandbox %s (%d containers); restore it through the CRI (CreateContainer from the checkpoint archive into a new pod), not as a standalone container", meta.Pod.SandboxID, len(meta.Pod.Containers))
	}
	var apps []checkpoint.PodContainer
	for _, pc := range meta.Pod.Containers {
		if !pc.Sandbox {
			apps = append(apps, pc)
		}
	}
	if len(apps) != 1 {
		return fmt.Errorf("the checkpoint holds %d application containers of pod %s; a CRI restore brings back one", len(apps), meta.Pod.SandboxID)
	}
	return nil
}

// remapName makes gVisor match the restoring container to the checkpointed
// one by name when the names differ: a restore may use another name, and
// containerd 2.3's CRI restore names every restored container "containerd"
// in its spec. It reports whether it changed the spec.
func remapName(meta *checkpoint.Metadata, spec *specs.Spec) bool {
	if meta.Pod == nil {
		return false
	}
	for _, pc := range meta.Pod.Containers {
		name := spec.Annotations[annotationContainerName]
		if pc.Sandbox || pc.Name == "" || name == "" || gvisorName(spec) == pc.Name {
			continue
		}
		for k, v := range spec.Annotations {
			// Only one renaming of this name may apply.
			if from, _, _ := strings.Cut(v, "="); strings.HasPrefix(k, annotationNameRemapPrefix) && from == name {
				delete(spec.Annotations, k)
			}
		}
		spec.Annotations[annotationNameRemap] = name + "=" + pc.Name
		return true
	}
	return false
}

// restoreIntoPod restores the pod checkpoint c was created from: the pod's
// running sandbox, which must hold no other application container, is
// replaced by a new one restored from the image (see ReplaceSandbox), with c
// created in it and then restored.
func (s *Service) restoreIntoPod(ctx context.Context, c *container) error {
	r := c.init.RestoreConfig()
	if r == nil {
		return fmt.Errorf("%w: %s is not being restored", errdefs.ErrFailedPrecondition, c.id)
	}
	sb := sandboxOf(c.id, c.spec)
	root, subs := s.sandboxMembers(sb)
	if root == nil {
		return fmt.Errorf("%w: the sandbox container %s of %s's pod is not served by this shim; cannot restore the pod checkpoint", errdefs.ErrFailedPrecondition, sb, c.id)
	}
	var others []*container
	for _, o := range subs {
		if o != c {
			others = append(others, o)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("%w: cannot restore %s into pod sandbox %s, which also runs %s: gVisor restores a pod checkpoint only as a whole sandbox; restore into a new pod",
			errdefs.ErrFailedPrecondition, describe(c), sb, describeAll(others))
	}
	log.G(ctx).WithField("id", c.id).WithField("sandbox", sb).Info("restoring a pod checkpoint: replacing the pod's sandbox")
	// The old sandbox's cgroup goes and the new one takes its path: its
	// removal reads as an OOM to the watcher (oommute.go).
	for _, id := range []string{root.id, c.id} {
		s.oomMuter.mute(id, oomMuteDuring)
	}
	if c.restored != nil && remapName(c.restored, c.spec) {
		// runsc reads it again when Recreate creates the container.
		if err := writeSpec(c.bundle, c.spec); err != nil {
			return fmt.Errorf("writing the restoring container's spec: %w", err)
		}
	}
	// Out of the sandbox that is about to go.
	if err := c.init.Runtime().Delete(ctx, c.id, true); err != nil && !runsc.IsNotExist(err) {
		return fmt.Errorf("removing %s from the pod's running sandbox: %w", c.id, err)
	}
	prepare := func(ctx context.Context) error {
		// The old sandbox's overlay filestores stay in the rootfs
		// directories and would make runsc refuse the new containers.
		removeStaleFilestores(ctx, rootfsDir(root))
		removeStaleFilestores(ctx, rootfsDir(c))
		return nil
	}
	oldPid := root.init.Pid()
	join := func(ctx context.Context) error {
		// The CRI pointed the container's namespaces at the old sandbox
		// (/proc/<pid>/ns/...); runsc recognizes the pod's own pid
		// namespace by the sandbox's pid.
		if repointNamespaces(c.spec, oldPid, root.init.Pid()) {
			if err := writeSpec(c.bundle, c.spec); err != nil {
				return fmt.Errorf("writing the restoring container's spec: %w", err)
			}
		}
		return c.init.Recreate(ctx)
	}
	if err := root.init.ReplaceSandbox(ctx, *r, prepare, join); err != nil {
		return fmt.Errorf("restoring pod sandbox %s for %s: %w", sb, c.id, err)
	}
	if err := c.init.Start(ctx); err != nil {
		// The new sandbox waits for this container: end it; the pod's
		// sandbox container reports its exit.
		if derr := root.init.Runtime().Delete(context.WithoutCancel(ctx), root.id, true); derr != nil && !runsc.IsNotExist(derr) {
			log.G(ctx).WithError(derr).WithField("id", root.id).Warn("removing the pod's half-restored sandbox")
		}
		return err
	}
	// Watch the new sandbox's cgroup.
	for _, pc := range []*container{root, c} {
		s.oomMuter.mute(pc.id, oomMuteAfter)
		s.watchOOM(ctx, pc)
	}
	return nil
}

// How long the OOM events of a pod whose sandbox is being replaced are
// dropped: during the replacement, and a little after it for the old
// cgroup's last event.
const (
	oomMuteDuring = time.Minute
	oomMuteAfter  = 2 * time.Second
)

// repointPodNamespaces points a new pod container's namespaces at its pod's
// current sandbox when a pod restore replaced it: the CRI still names the
// sandbox pid it was told at create.
func (s *Service) repointPodNamespaces(bundle string, spec *specs.Spec) error {
	if !subcontainer(spec) {
		return nil
	}
	s.mu.Lock()
	root := s.containers[spec.Annotations[annotationSandboxID]]
	s.mu.Unlock()
	if root == nil || !repointNamespaces(spec, root.createdPid, root.init.Pid()) {
		return nil
	}
	return writeSpec(bundle, spec)
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

// rootfsDir is the directory the container's spec names as its root.
func rootfsDir(c *container) string {
	p := "rootfs"
	if c.spec.Root != nil && c.spec.Root.Path != "" {
		p = c.spec.Root.Path
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.bundle, p)
	}
	return p
}
