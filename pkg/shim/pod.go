package shim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
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
//   - GPU containers run in a pod only when its sandbox started with GPU
//     support: gVisor enables nvproxy per sandbox, when the sandbox starts,
//     and the CRI starts a pod's sandbox before it creates its containers.
//     A pod annotated AnnotationGPU (or gVisor's nvproxy annotation) gets
//     it; a GPU container in a pod without it is refused before runsc is
//     asked (runsc would take the whole sandbox down).
//   - A restore of a pod checkpoint into a pod's application container
//     replaces the pod's running sandbox, which holds only its pause
//     container, with a new one restored from the image (sandbox.replace).

// AnnotationGPU on a pod ("true") starts its sandbox with GPU support
// (nvproxy), so that its containers may use NVIDIA GPUs.
const AnnotationGPU = RuntimeName + ".gpu"

// podGPU gives a pod's sandbox container annotated AnnotationGPU gVisor's
// nvproxy annotation, which starts the sandbox with GPU support (and makes
// it a GPU container for the shim); it reports whether it changed spec.
func podGPU(spec *specs.Spec) bool {
	if spec.Annotations[annotationContainerType] != containerTypeSandbox || spec.Annotations[AnnotationGPU] != "true" || spec.Annotations[cuda.NvproxyAnnotation] == "true" {
		return false
	}
	spec.Annotations[cuda.NvproxyAnnotation] = "true"
	return true
}

// checkGPU refuses a GPU container in a pod whose sandbox was started
// without GPU support.
func (sb *sandbox) checkGPU(id string) error {
	root := sb.rootContainer()
	if root == nil || root.id == id || root.rt.Flags["nvproxy"] == "true" {
		return nil
	}
	return fmt.Errorf("%w: container %s uses NVIDIA GPUs, but its pod sandbox %s was started without GPU support: gVisor enables GPU support (nvproxy) per sandbox when the sandbox starts, before the pod's containers are created. Annotate the pod with %s: \"true\" (the CRI passes it with the handler's pod_annotations), or run GPU pods with a runtime handler whose shim config sets nvproxy = \"true\" under [runsc_config]",
		errdefs.ErrFailedPrecondition, id, sb.id, AnnotationGPU)
}

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

// checkpointPod applies the pod rules above to a checkpoint of c, removes
// the pod's exited containers from its sandbox, and returns the pod the
// image will hold (nil for a container outside a pod).
func (sb *sandbox) checkpointPod(ctx context.Context, c *container, exit bool) (*checkpoint.Pod, error) {
	pod, exited, err := sb.podRules(c, exit)
	if err != nil {
		return nil, err
	}
	if err := sb.removeExited(ctx, exited); err != nil {
		return nil, fmt.Errorf("before the checkpoint: %w", err)
	}
	return pod, nil
}

// podRules applies the pod rules above to a checkpoint of c and returns the
// pod the image will hold (nil for a container outside a pod) and the pod's
// exited containers.
func (sb *sandbox) podRules(c *container, exit bool) (*checkpoint.Pod, []*container, error) {
	root, subs := sb.rootContainer(), sb.others(nil)
	if !subcontainer(c.spec) {
		if len(subs) > 0 {
			return nil, nil, fmt.Errorf("%w: %s is the sandbox container of a pod that runs %s; gVisor saves the whole pod sandbox, so checkpoint the pod's application container instead",
				errdefs.ErrFailedPrecondition, c.id, describeAll(subs))
		}
		return nil, nil, nil
	}
	live, exited := sb.split(c)
	if len(live) > 0 {
		return nil, nil, fmt.Errorf("%w: cannot checkpoint %s alone: gVisor checkpoints the whole pod sandbox %s, which also runs %s; a checkpoint would save those containers too and could not be restored one container at a time. Checkpoint pods that run a single application container (stop and remove the others first)",
			errdefs.ErrFailedPrecondition, describe(c), sb.id, describeAll(live))
	}
	if root == nil {
		return nil, nil, fmt.Errorf("%w: the sandbox container %s of %s's pod is not served by this shim; cannot tell what the pod checkpoint would hold", errdefs.ErrFailedPrecondition, sb.id, c.id)
	}
	if exit {
		return nil, nil, fmt.Errorf("%w: exit checkpoints of a pod's container (%s) are not supported: gVisor saves the whole pod, and stopping only this container after the save is not atomic with it; checkpoint it leaving it running (the CRI's CheckpointContainer does) and stop it through the CRI",
			errdefs.ErrFailedPrecondition, describe(c))
	}
	pod := &checkpoint.Pod{
		SandboxID: sb.id,
		Namespace: c.spec.Annotations[annotationSandboxNamespace],
		Containers: []checkpoint.PodContainer{
			{ID: root.id, Name: gvisorName(root.spec), Sandbox: true},
			{ID: c.id, Name: gvisorName(c.spec)},
		},
	}
	sb.mu.Lock()
	completed := slices.Clone(sb.completed)
	sb.mu.Unlock()
	for _, o := range exited {
		if o.init.ExitStatus() == 0 {
			completed = append(completed, gvisorName(o.spec))
		}
	}
	for _, n := range completed {
		if n != "" && n != gvisorName(c.spec) && !slices.Contains(pod.Completed, n) {
			pod.Completed = append(pod.Completed, n)
		}
	}
	return pod, exited, nil
}

// checkPodRestore checks, before anything is created, that a checkpoint
// fits the container restoring it: a pod checkpoint restores only into a
// pod's application container, and a standalone container's checkpoint only
// into a standalone container.
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

// replace replaces the sandbox, running with only its root (pause)
// container, by one restored from the pod checkpoint c was created from, in
// which c is then restored. See process/replace.go for the steps. On
// failure the pod's sandbox container has exited (137) and the error says
// why; c is left created.
func (sb *sandbox) replace(ctx context.Context, c *container) (retErr error) {
	root := sb.rootContainer()
	if root == nil {
		return fmt.Errorf("%w: the sandbox container %s of %s's pod is not served by this shim; cannot restore the pod checkpoint", errdefs.ErrFailedPrecondition, sb.id, c.id)
	}
	live, exited := sb.split(c)
	if len(live) > 0 {
		return fmt.Errorf("%w: cannot restore %s into pod sandbox %s, which also runs %s: gVisor restores a pod checkpoint only as a whole sandbox; restore into a new pod whose other containers have exited (init containers) or come after",
			errdefs.ErrFailedPrecondition, describe(c), sb.id, describeAll(live))
	}
	if err := sb.removeExited(ctx, exited); err != nil {
		return err
	}
	log.G(ctx).WithField("id", c.id).WithField("sandbox", sb.id).Info("restoring a pod checkpoint: replacing the pod's sandbox")
	// The new sandbox's cgroup takes the old one's path: the old one's
	// removal is no OOM.
	sb.oom.Stop(root.id)
	sb.oom.Stop(c.id)
	// The restoring container, created in the old sandbox, leaves it first:
	// its cgroup lies in the pod's, which runsc removes with the old sandbox
	// and cannot while a child is left (EBUSY on cgroup v2). Recreate
	// creates it again in the new sandbox.
	if err := c.rt.Delete(ctx, c.id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("restoring pod sandbox %s for %s: removing it from the old sandbox: %w", sb.id, c.id, err)
	}
	if err := root.init.Teardown(ctx); err != nil {
		return fmt.Errorf("restoring pod sandbox %s for %s: %w", sb.id, c.id, err)
	}
	defer func() {
		if retErr != nil {
			// The pod's sandbox container has no usable sandbox: it exits.
			root.init.Destroy(ctx)
			retErr = fmt.Errorf("restoring pod sandbox %s for %s: %w; the pod's sandbox was stopped", sb.id, c.id, retErr)
		}
	}()
	// The old sandbox's overlay filestores stay in the rootfs directories
	// and would make runsc refuse the new containers.
	removeStaleFilestores(ctx, root.bundle.rootfs(root.spec))
	removeStaleFilestores(ctx, c.bundle.rootfs(c.spec))
	if err := root.init.Recreate(ctx); err != nil {
		return err
	}
	// The restoring container's spec, written once for this phase: its
	// namespaces point at the new sandbox, and gVisor matches it to the
	// checkpointed container by name.
	changed := repointNamespaces(c.spec, sb.createdPid, root.init.Pid())
	if remapName(c.restore.meta, c.spec) {
		changed = true
	}
	if changed {
		if err := c.bundle.writeSpec(c.spec); err != nil {
			return err
		}
	}
	if err := c.init.Recreate(ctx); err != nil {
		return err
	}
	if err := sb.network.restore(ctx, root.init.Pid()); err != nil {
		return err
	}
	if err := root.init.RestoreSandbox(ctx, c.restore.config); err != nil {
		return err
	}
	if err := c.init.Start(ctx); err != nil {
		return err
	}
	for _, m := range []*container{root, c} {
		sb.watchOOM(ctx, m)
	}
	sb.mu.Lock()
	sb.restoredFrom, sb.restoredName = c.restore.dir, gvisorName(c.spec)
	if c.source != nil {
		sb.restoredFrom = c.source.name
	}
	sb.mu.Unlock()
	return nil
}

// split returns the pod's containers but its root and c: those that live,
// and those that exited (init containers the kubelet keeps for their
// status).
func (sb *sandbox) split(c *container) (live, exited []*container) {
	for _, o := range sb.others(c) {
		if st, _ := o.init.Status(context.Background()); st == process.StatusStopped || st == process.StatusDeleted {
			exited = append(exited, o)
		} else {
			live = append(live, o)
		}
	}
	return live, exited
}

// removeExited removes exited containers from the pod's sandbox: runsc
// keeps an exited container in the sandbox until it is deleted, and gVisor
// would save it and wait for it at restore. Their tasks stay stopped;
// containerd's Delete of them finds nothing left in runsc, which is fine.
func (sb *sandbox) removeExited(ctx context.Context, exited []*container) error {
	for _, o := range exited {
		if err := o.rt.Delete(ctx, o.id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("removing the exited container %s from the pod's sandbox: %w", describe(o), err)
		}
		log.G(ctx).WithField("id", o.id).Info("removed an exited container from the pod's sandbox")
	}
	return nil
}

// leavePod takes a deleted container out of its sandbox (leave), and
// remembers a pod's container that ran to completion (exit status 0: an
// init container) for the pod's checkpoints (checkpoint.Pod.Completed).
func (sb *sandbox) leavePod(ctx context.Context, c *container) {
	if n := gvisorName(c.spec); n != "" && c.hasExited() && c.init.ExitStatus() == 0 {
		sb.mu.Lock()
		if !slices.Contains(sb.completed, n) {
			sb.completed = append(sb.completed, n)
		}
		sb.mu.Unlock()
	}
	sb.leave(ctx, c)
}

// restoresFrom decides whether a container whose restore annotation names
// src restores. A standalone container always does. In a pod (the kubelet
// gives every container of the pod the pod's annotations):
//
//   - before the restore, the container of the checkpointed name restores,
//     and gVisor restores the whole pod with it; a container that had run
//     to completion in the checkpointed pod (an init container) runs again,
//     fresh, before it; any other container is refused;
//   - after the restore, the restored container started again by the
//     kubelet starts fresh, and any other container is refused: the
//     checkpoint holds one application container.
func (sb *sandbox) restoresFrom(ctx context.Context, spec *specs.Spec, src *restoreSource) (bool, error) {
	if !subcontainer(spec) {
		return true, nil
	}
	name := gvisorName(spec)
	sb.mu.Lock()
	from, restored := sb.restoredFrom, sb.restoredName
	sb.mu.Unlock()
	if from != "" {
		if name == restored {
			log.G(ctx).WithField("checkpoint", src.name).Info("the pod was restored from this checkpoint already; the container starts fresh")
			return false, nil
		}
		return false, fmt.Errorf("%w: pod sandbox %s was restored from %s, which holds one application container (%s); gVisor restores a pod as a whole, so the pod cannot also run %s: restore pods that run a single application container",
			errdefs.ErrFailedPrecondition, sb.id, from, restored, spec.Annotations[annotationContainerName])
	}
	meta, err := src.metadata()
	switch {
	case err != nil && src.archive != nil:
		return false, err
	case err != nil || meta.Pod == nil:
		// The restore's checks say what is wrong with it.
		return true, nil
	}
	if ns := spec.Annotations[annotationSandboxNamespace]; meta.Pod.Namespace != "" && ns != meta.Pod.Namespace && !src.crossNamespace {
		return false, fmt.Errorf("%w: the checkpoint %s is of a pod in namespace %q, and this pod is in %q: a checkpoint holds its pod's memory, so a pod restores only checkpoints of pods of its own namespace; restore it in %q, or allow restores across namespaces with checkpoint.cross_namespace_restore in the shim's config",
			errdefs.ErrPermissionDenied, src.name, meta.Pod.Namespace, ns, meta.Pod.Namespace)
	}
	switch app := meta.Pod.App(); {
	case app == "" || name == app:
		return true, nil
	case slices.Contains(meta.Pod.Completed, name):
		log.G(ctx).WithField("checkpoint", src.name).Info("this container had run to completion in the checkpointed pod (an init container): it runs again, fresh, before the pod restores")
		return false, nil
	default:
		return false, fmt.Errorf("%w: the checkpoint %s holds application container %s, but this container is %s: gVisor restores a pod as a whole, so only a container of the checkpointed name restores it, and only containers that had run to completion in the checkpointed pod (init containers) may run before it; give the pod's container that name (and no other application containers)",
			errdefs.ErrFailedPrecondition, src.name, app, spec.Annotations[annotationContainerName])
	}
}
