package shim

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// podSpec returns the spec the CRI gives a pod's container: the sandbox
// (pause) container when name is "", else an application container.
func podSpec(sandbox, name string) *specs.Spec {
	a := map[string]string{annotationSandboxID: sandbox, annotationContainerType: "sandbox"}
	if name != "" {
		a[annotationContainerType] = containerTypeContainer
		a[annotationContainerName] = name
	}
	return &specs.Spec{Annotations: a}
}

// podContainer returns a container in the created state (live) or, with
// exited, the stopped one.
func podContainer(id string, spec *specs.Spec, exited bool) *container {
	c := &container{id: id, spec: spec, init: process.NewInit(process.InitConfig{ID: id})}
	if exited {
		c.init.SetExited(0)
	}
	return c
}

// testPods puts the containers in the sandboxes they belong to.
func testPods(cs ...*container) *sandboxes {
	r := &sandboxes{}
	for _, c := range cs {
		c.sandboxID = sandboxID(c.id, c.spec)
		r.get(c.sandboxID, "/run/test", nil).add(c)
	}
	return r
}

func TestCheckPodCheckpoint(t *testing.T) {
	// Fresh containers for each case: a case puts them in its sandboxes.
	mk := map[string]func() *container{
		"pause":      func() *container { return podContainer("pod", podSpec("pod", ""), false) },
		"app":        func() *container { return podContainer("app", podSpec("pod", "web"), false) },
		"side":       func() *container { return podContainer("side", podSpec("pod", "sidecar"), false) },
		"initDone":   func() *container { return podContainer("init", podSpec("pod", "init"), true) },
		"alone":      func() *container { return podContainer("alone", &specs.Spec{}, false) },
		"otherPause": func() *container { return podContainer("pod2", podSpec("pod2", ""), false) },
		"otherApp":   func() *container { return podContainer("app2", podSpec("pod2", "db"), false) },
	}
	for _, tc := range []struct {
		name       string
		containers []string // the first is checkpointed
		exit       bool
		wantPod    bool
		wantExited []string
		wantErr    string
	}{
		{name: "standalone", containers: []string{"alone", "pause", "app"}},
		{name: "pause alone", containers: []string{"pause"}},
		{name: "pause with an app", containers: []string{"pause", "app"}, wantErr: "checkpoint the pod's application container"},
		{name: "single app", containers: []string{"app", "pause", "otherPause", "otherApp"}, wantPod: true},
		{name: "two apps", containers: []string{"app", "pause", "side"}, wantErr: "sidecar (side)"},
		{name: "exited init container", containers: []string{"app", "pause", "initDone"}, wantPod: true, wantExited: []string{"init"}},
		{name: "exited and live", containers: []string{"app", "pause", "initDone", "side"}, wantErr: "which also runs sidecar (side);"},
		{name: "exit", containers: []string{"app", "pause"}, exit: true, wantErr: "exit checkpoints"},
		{name: "no pause", containers: []string{"app"}, wantErr: "not served by this shim"},
	} {
		var cs []*container
		for _, n := range tc.containers {
			cs = append(cs, mk[n]())
		}
		pods := testPods(cs...)
		c := cs[0]
		t.Run(tc.name, func(t *testing.T) {
			pod, exited, err := pods.lookup(c.sandboxID).podRules(c, tc.exit)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Fatalf("err = %v, want FailedPrecondition containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var exitedIDs []string
			for _, e := range exited {
				exitedIDs = append(exitedIDs, e.id)
			}
			if strings.Join(exitedIDs, ",") != strings.Join(tc.wantExited, ",") {
				t.Fatalf("exited = %v, want %v", exitedIDs, tc.wantExited)
			}
			// The exited containers are named in the image as completed
			// (their CRI names; here the same as their ids).
			if pod != nil && strings.Join(pod.Completed, ",") != strings.Join(tc.wantExited, ",") {
				t.Fatalf("completed = %v, want %v", pod.Completed, tc.wantExited)
			}
			if (pod != nil) != tc.wantPod {
				t.Fatalf("pod = %+v, want one: %t", pod, tc.wantPod)
			}
			if pod != nil {
				want := checkpoint.Pod{SandboxID: "pod", Containers: []checkpoint.PodContainer{
					{ID: "pod", Sandbox: true}, {ID: "app", Name: "web"},
				}}
				if pod.SandboxID != want.SandboxID || len(pod.Containers) != 2 || pod.Containers[0] != want.Containers[0] || pod.Containers[1] != want.Containers[1] {
					t.Fatalf("pod = %+v, want %+v", pod, want)
				}
			}
		})
	}
}

func TestCheckPodRestore(t *testing.T) {
	pod := &checkpoint.Pod{SandboxID: "pod", Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "app", Name: "web"}}}
	twoApps := &checkpoint.Pod{SandboxID: "pod", Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "a", Name: "a"}, {ID: "b", Name: "b"}}}
	for _, tc := range []struct {
		name    string
		pod     *checkpoint.Pod
		spec    *specs.Spec
		wantErr string
	}{
		{name: "standalone into standalone", spec: &specs.Spec{}},
		{name: "standalone into a pod", spec: podSpec("new", "web"), wantErr: "not a pod"},
		{name: "pod into a pod", pod: pod, spec: podSpec("new", "other-name")},
		{name: "pod into standalone", pod: pod, spec: &specs.Spec{}, wantErr: "through the CRI"},
		{name: "pod into a pause container", pod: pod, spec: podSpec("new", ""), wantErr: "through the CRI"},
		{name: "two apps", pod: twoApps, spec: podSpec("new", "a"), wantErr: "2 application containers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPodRestore(&checkpoint.Metadata{Pod: tc.pod}, tc.spec)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRemapName(t *testing.T) {
	meta := &checkpoint.Metadata{Pod: &checkpoint.Pod{Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "app", Name: "web"}}}}

	same := podSpec("new", "web")
	if remapName(meta, same) || gvisorName(same) != "web" {
		t.Fatalf("same name remapped: %v", same.Annotations)
	}
	// containerd 2.3's CRI restore names the container "containerd".
	renamed := podSpec("new", "containerd")
	renamed.Annotations[annotationNameRemapPrefix+"user"] = "containerd=elsewhere"
	if !remapName(meta, renamed) {
		t.Fatal("a renamed container was not remapped")
	}
	if got := gvisorName(renamed); got != "web" {
		t.Fatalf("gvisorName after the remap = %q, want web (annotations %v)", got, renamed.Annotations)
	}
	if _, ok := renamed.Annotations[annotationNameRemapPrefix+"user"]; ok {
		t.Fatal("a conflicting remap of the same name was kept")
	}
	if remapName(meta, renamed) {
		t.Fatal("remapped twice")
	}
	if remapName(&checkpoint.Metadata{}, podSpec("new", "x")) {
		t.Fatal("remapped for a standalone checkpoint")
	}
}

func TestRepointNamespaces(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
		{Type: specs.PIDNamespace, Path: "/proc/100/ns/pid"},
		{Type: specs.IPCNamespace, Path: "/proc/100/ns/ipc"},
		{Type: specs.UTSNamespace, Path: "/proc/1000/ns/uts"},
		{Type: specs.MountNamespace},
	}}}
	if !repointNamespaces(spec, 100, 200) {
		t.Fatal("nothing repointed")
	}
	want := []string{"/proc/200/ns/pid", "/proc/200/ns/ipc", "/proc/1000/ns/uts", ""}
	for i, ns := range spec.Linux.Namespaces {
		if ns.Path != want[i] {
			t.Errorf("namespace %s: path %q, want %q", ns.Type, ns.Path, want[i])
		}
	}
	if repointNamespaces(spec, 100, 200) || repointNamespaces(spec, 200, 200) || repointNamespaces(&specs.Spec{}, 1, 2) {
		t.Fatal("repointed what needed no change")
	}
}

// TestOOMWatchStop: once a container's watch is stopped, an OOM event its
// cgroup still produces (the removal of a replaced sandbox's cgroup reads as
// one in cgroup v1) is not reported; a new watch of the same id reports again.
func TestOOMWatchStop(t *testing.T) {
	var got []string
	w := &oomWatcher{onOOM: func(id string) { got = append(got, id) }, watchers: map[string]*oomWatch{}}
	watch := func() *oomWatch {
		r, wr, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wr.Close() })
		ow := &oomWatch{fd: r, done: make(chan struct{})}
		go func() {
			defer close(ow.done)
			var b [1]byte
			for {
				if _, err := r.Read(b[:]); err != nil {
					return
				}
			}
		}()
		return ow
	}
	old := watch()
	w.watchers["a"] = old
	w.report("a", old)
	w.Stop("a")
	w.report("a", old)
	w.watchers["a"] = watch()
	w.report("a", w.watchers["a"])
	if strings.Join(got, ",") != "a,a" {
		t.Fatalf("reported %v, want a twice (before the stop and on the new watch)", got)
	}
}

// A pod's containers that ran to completion and were deleted (the CRI deletes
// an exited container's task at once; the kubelet keeps only its record) are
// named in a checkpoint of the pod as completed; a container that failed is
// not, nor the checkpointed container's own name.
func TestPodCompletedContainers(t *testing.T) {
	pause, app := podContainer("pod", podSpec("pod", ""), false), podContainer("app", podSpec("pod", "web"), false)
	initc, failed := podContainer("init", podSpec("pod", "init"), true), podContainer("bad", podSpec("pod", "migrate"), false)
	failed.init.SetExited(1)
	pods := testPods(pause, app, initc, failed)
	sb := pods.lookup("pod")
	sb.leavePod(context.Background(), initc)
	sb.leavePod(context.Background(), failed)
	pod, _, err := sb.podRules(app, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pod.Completed, ","); got != "init" {
		t.Fatalf("completed = %q, want init", got)
	}
}

// A pod annotated for GPUs has its sandbox container started with nvproxy
// (gVisor's annotation); a GPU container in a pod whose sandbox lacks it is
// refused, one in a pod whose sandbox has it (or outside a pod) is not.
func TestPodGPU(t *testing.T) {
	pause := podSpec("pod", "")
	pause.Annotations[AnnotationGPU] = "true"
	if !podGPU(pause) || pause.Annotations[cuda.NvproxyAnnotation] != "true" || !cuda.IsGPUSpec(pause) {
		t.Fatalf("annotated sandbox: %v", pause.Annotations)
	}
	if podGPU(pause) {
		t.Fatal("changed twice")
	}
	if app := podSpec("pod", "web"); podGPU(app) {
		t.Fatal("an application container's spec was changed")
	}
	if plain := podSpec("pod", ""); podGPU(plain) {
		t.Fatal("a sandbox without the annotation was changed")
	}
	for _, tc := range []struct {
		name     string
		nvproxy  bool
		wantFail bool
	}{{"sandbox without GPU support", false, true}, {"sandbox with GPU support", true, false}} {
		root := podContainer("pod", podSpec("pod", ""), false)
		root.rt = &runsc.Runsc{Flags: map[string]string{}}
		if tc.nvproxy {
			root.rt.Flags["nvproxy"] = "true"
		}
		sb := testPods(root).lookup("pod")
		err := sb.checkGPU("app")
		if tc.wantFail != (err != nil) || (err != nil && (!errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), AnnotationGPU))) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err := sb.checkGPU("pod"); err != nil {
			t.Errorf("%s: the sandbox container itself: %v", tc.name, err)
		}
	}
	if err := (&sandbox{id: "alone", members: map[string]*container{}}).checkGPU("alone"); err != nil {
		t.Errorf("standalone: %v", err)
	}
}
