//go:build e2e

package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	// startWait bounds waiting for a container to come up and print.
	startWait = time.Minute
	// exitWait bounds waiting for a container to exit.
	exitWait = 30 * time.Second
	// crictlTimeout is crictl's own per-request timeout (--timeout); its default of
	// 2 s is too short for gVisor sandbox starts and checkpoints.
	crictlTimeout = "120s"
	// networkNode is the CRI's NamespaceMode NODE: the pod shares the host network
	// namespace, so the CRI does not attach it to CNI (the harness's loopback
	// conflist then suffices), and runsc gives the sandbox a network namespace of its
	// own with loopback only.
	networkNode = 2
)

// criEnv is a private containerd with the CRI enabled, the test image imported and a
// directory for pod configs and logs.
type criEnv struct {
	d   *harness.Daemon
	ref string
	dir string
}

// newCRIEnv starts a containerd with the CRI (version "" is the default one, or
// $RCUDA_E2E_CONTAINERD) and a loopback-only CNI network: test pods use the host
// network namespace (runPod). $CRI_E2E_SHIMCONFIG, when set, is TOML merged into the
// shim's config (to try runsc options; appended to a test's own shim config, so it
// must not repeat its tables); $CRI_E2E_KEEP_LOGS names a directory that
// keeps containerd's log of each test.
func newCRIEnv(t *testing.T, version, extraConfig string) *criEnv {
	t.Helper()
	return startCRIEnv(t, harness.Options{Version: version, CNI: harness.CNILoopback, ExtraConfig: extraConfig})
}

// newBridgeCRIEnv is newCRIEnv with the daemon's own CNI bridge (harness.CNIBridge):
// pods started with runPodOnNetwork get a network namespace and an address on it
// (podIP) that the test reaches from the host.
func newBridgeCRIEnv(t *testing.T, version string) *criEnv {
	t.Helper()
	return startCRIEnv(t, harness.Options{Version: version, CNI: harness.CNIBridge})
}

// startCRIEnv starts a daemon with the CRI and opts, and imports the test image.
func startCRIEnv(t *testing.T, opts harness.Options) *criEnv {
	t.Helper()
	opts.CRI = true
	if extra := os.Getenv("CRI_E2E_SHIMCONFIG"); extra != "" {
		opts.ShimConfig += "\n" + extra
	}
	d := harness.StartContainerd(t, opts)
	if dir := os.Getenv("CRI_E2E_KEEP_LOGS"); dir != "" {
		// Debugging aid: keep containerd's log after the test.
		t.Cleanup(func() {
			b, _ := os.ReadFile(d.LogPath)
			_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log"), b, 0o644)
		})
	}
	ref := d.ImportTestImage(t)
	dir := filepath.Join(d.Dir, "cri-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &criEnv{d: d, ref: ref, dir: dir}
	// The CRI learns about imported images from containerd's events; wait until
	// it lists the test image.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := e.d.Crictl(context.Background(), "images", "-q", ref)
		if err == nil && strings.TrimSpace(out) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CRI does not list the test image %s: %v %s", ref, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return e
}

// testCtx returns a context bounded by limit and cancelled at the end of the test.
func testCtx(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// crictlE runs crictl with a long request timeout and returns its trimmed stdout.
func (e *criEnv) crictlE(ctx context.Context, args ...string) (string, error) {
	out, _, err := e.d.Crictl(ctx, append([]string{"--timeout", crictlTimeout}, args...)...)
	return strings.TrimSpace(out), err
}

// crictl runs crictl and fails the test when it fails.
func (e *criEnv) crictl(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.crictlE(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeJSON writes v as JSON to a file in the env's directory and returns its path.
func (e *criEnv) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pod is a running pod sandbox.
type pod struct {
	ID     string
	Name   string
	Config string // path of its pod config, which crictl create needs again
}

// runPod runs a pod sandbox in the host network namespace with the runsc-cuda runtime
// handler.
func (e *criEnv) runPod(ctx context.Context, t *testing.T, name string) pod {
	t.Helper()
	return e.startPod(ctx, t, name, podOpts{})
}

// runPodOnNetwork runs a pod sandbox with the runsc-cuda runtime handler in a network
// namespace of its own, which the CRI attaches to the daemon's CNI network (an
// environment from newBridgeCRIEnv); podIP gives its address.
func (e *criEnv) runPodOnNetwork(ctx context.Context, t *testing.T, name string) pod {
	t.Helper()
	return e.startPod(ctx, t, name, podOpts{onNetwork: true})
}

// podOpts say how startPod runs a pod.
type podOpts struct {
	// onNetwork: on the daemon's CNI network (as runPodOnNetwork), else in the host
	// network namespace (as runPod).
	onNetwork bool
	// annotations are the pod's annotations.
	annotations map[string]string
	// pid is the pod's namespace_options.pid: pidPod (0, crictl's default when
	// unset, the kubelet's with shareProcessNamespace) or pidContainer (the
	// kubelet's default).
	pid int
	// namespace is the pod's Kubernetes namespace (podNamespace when empty).
	namespace string
}

// podNamespace is the Kubernetes namespace of the tests' pods.
const podNamespace = "rcuda-e2e"

// The CRI's NamespaceMode for a pod's PID namespace.
const (
	pidPod       = 0
	pidContainer = 1
)

// startPod runs a pod sandbox named name with the runsc-cuda runtime handler, as opts
// say.
func (e *criEnv) startPod(ctx context.Context, t *testing.T, name string, opts podOpts) pod {
	t.Helper()
	nsOpts := map[string]any{"pid": opts.pid}
	if !opts.onNetwork {
		nsOpts["network"] = networkNode
	}
	linux := map[string]any{"security_context": map[string]any{"namespace_options": nsOpts}}
	logDir := filepath.Join(e.dir, "logs", name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ns := opts.namespace
	if ns == "" {
		ns = podNamespace
	}
	cfg := e.writeJSON(t, "pod-"+name+".json", map[string]any{
		"metadata": map[string]any{
			"name":      name,
			"namespace": ns,
			"uid":       harness.RandomID("uid"),
			"attempt":   0,
		},
		"hostname":      name,
		"log_directory": logDir,
		"linux":         linux,
		"annotations":   opts.annotations,
	})
	id := e.crictl(ctx, t, "runp", "--runtime", harness.CRIRuntimeHandler, cfg)
	t.Logf("pod %s: %s", name, id)
	return pod{ID: id, Name: name, Config: cfg}
}

// podIP returns the pod's address (.status.network.ip of `crictl inspectp -o json`);
// it fails the test when the pod has none (a pod in the host network namespace).
func (e *criEnv) podIP(ctx context.Context, t *testing.T, id string) string {
	t.Helper()
	var st struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	out := e.crictl(ctx, t, "inspectp", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("parsing crictl inspectp %s: %v\n%s", id, err, out)
	}
	if net.ParseIP(st.Status.Network.IP) == nil {
		t.Fatalf("pod %s has no IP address (%q)", id, st.Status.Network.IP)
	}
	return st.Status.Network.IP
}

// dialLine connects to addr (host:port) from the test process, retrying until timeout
// (a pod's listener may come up after its log says so), and returns what the peer
// sent before closing, trimmed.
func dialLine(t *testing.T, addr string, timeout time.Duration) string {
	t.Helper()
	read := func() (string, error) {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(conn)
		return strings.TrimSpace(string(b)), err
	}
	deadline := time.Now().Add(timeout)
	for {
		line, err := read()
		if err == nil {
			return line
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from %s within %v: %v", addr, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containerConfig is the CRI container config of a test container.
func (e *criEnv) containerConfig(name, image string, command ...string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"command":  command,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
}

// createContainer creates a container of the test image running command in p.
func (e *criEnv) createContainer(ctx context.Context, t *testing.T, p pod, name string, command ...string) string {
	t.Helper()
	cfg := e.writeJSON(t, "ctr-"+p.Name+"-"+name+".json", e.containerConfig(name, e.ref, command...))
	id := e.crictl(ctx, t, "create", "--no-pull", p.ID, cfg, p.Config)
	t.Logf("container %s in pod %s: %s", name, p.Name, id)
	return id
}

// startContainer creates and starts a container.
func (e *criEnv) startContainer(ctx context.Context, t *testing.T, p pod, name string, command ...string) string {
	t.Helper()
	id := e.createContainer(ctx, t, p, name, command...)
	e.crictl(ctx, t, "start", id)
	return id
}

// containerStatus is the part of `crictl inspect -o json` the tests read.
type containerStatus struct {
	Status struct {
		ID       string            `json:"id"`
		State    string            `json:"state"`
		ExitCode int               `json:"exitCode"`
		Reason   string            `json:"reason"`
		Message  string            `json:"message"`
		LogPath  string            `json:"logPath"`
		Labels   map[string]string `json:"labels"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Annotations map[string]string `json:"annotations"`
	} `json:"status"`
	Info struct {
		Pid         int    `json:"pid"`
		SandboxID   string `json:"sandboxID"`
		RuntimeType string `json:"runtimeType"`
	} `json:"info"`
}

func (e *criEnv) inspect(ctx context.Context, t *testing.T, id string) containerStatus {
	t.Helper()
	var st containerStatus
	out := e.crictl(ctx, t, "inspect", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("parsing crictl inspect %s: %v\n%s", id, err, out)
	}
	return st
}

// podState returns the pod's state (SANDBOX_READY or SANDBOX_NOTREADY).
func (e *criEnv) podState(ctx context.Context, t *testing.T, id string) string {
	t.Helper()
	var st struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	out := e.crictl(ctx, t, "inspectp", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("parsing crictl inspectp %s: %v\n%s", id, err, out)
	}
	return st.Status.State
}

// waitState waits until the container is in state (CONTAINER_RUNNING,
// CONTAINER_EXITED, ...) and returns its status.
func (e *criEnv) waitState(ctx context.Context, t *testing.T, id, state string, timeout time.Duration) containerStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := e.inspect(ctx, t, id)
		if st.Status.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %s after %v, want %s", id, st.Status.State, timeout, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logs returns the container's log (crictl logs), stdout and stderr together.
func (e *criEnv) logs(ctx context.Context, t *testing.T, id string) string {
	t.Helper()
	out, stderr, err := e.d.Crictl(ctx, "logs", id)
	if err != nil {
		t.Fatal(err)
	}
	return out + stderr
}

// waitLog waits until a line of the container's log matches pattern and returns the
// last such line.
func (e *criEnv) waitLog(ctx context.Context, t *testing.T, id, pattern string, timeout time.Duration) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(timeout)
	for {
		var last string
		for _, l := range strings.Split(e.logs(ctx, t, id), "\n") {
			if re.MatchString(strings.TrimSpace(l)) {
				last = strings.TrimSpace(l)
			}
		}
		if last != "" {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line of %s matches %q within %v; log:\n%s", id, pattern, timeout, e.logs(ctx, t, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var countRE = regexp.MustCompile(`count=(\d+)`)

// lastCount returns the highest count=N the container logged, or -1.
func (e *criEnv) lastCount(ctx context.Context, t *testing.T, id string) int {
	t.Helper()
	n := -1
	for _, m := range countRE.FindAllStringSubmatch(e.logs(ctx, t, id), -1) {
		v, _ := strconv.Atoi(m[1])
		n = max(n, v)
	}
	return n
}

// waitCountAbove waits until the container logged a count above n and returns it.
func (e *criEnv) waitCountAbove(ctx context.Context, t *testing.T, id string, n int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if c := e.lastCount(ctx, t, id); c > n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not count past %d within %v; log:\n%s", id, n, timeout, e.logs(ctx, t, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// processes returns this daemon's processes whose argv[0] ends in name (our shim is
// "containerd-shim-runsc-cuda-v1", a sandbox "runsc-sandbox").
func (e *criEnv) processes(t *testing.T, name string) []harness.Process {
	t.Helper()
	all, err := e.d.Processes()
	if err != nil {
		t.Fatal(err)
	}
	var out []harness.Process
	for _, p := range all {
		if len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == name {
			out = append(out, p)
		}
	}
	return out
}

// sandboxes returns the running runsc sandboxes of the daemon.
func (e *criEnv) sandboxes(t *testing.T) []harness.Process {
	t.Helper()
	return e.processes(t, "runsc-sandbox")
}

// shims returns the running shims of the daemon.
func (e *criEnv) shims(t *testing.T) []harness.Process {
	t.Helper()
	return e.processes(t, harness.ShimBinaryName)
}

// removePod stops and removes a pod and checks that nothing of it is left running.
func (e *criEnv) removePod(ctx context.Context, t *testing.T, p pod) {
	t.Helper()
	e.crictl(ctx, t, "stopp", p.ID)
	e.crictl(ctx, t, "rmp", p.ID)
}

// waitNoSandboxProcesses waits until the daemon runs no shim and no sandbox.
func (e *criEnv) waitNoSandboxProcesses(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		shims, sandboxes := e.shims(t), e.sandboxes(t)
		if len(shims) == 0 && len(sandboxes) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the pods were removed, still running: shims %v, sandboxes %v", shims, sandboxes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fmtProcs(ps []harness.Process) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p.PID)
	}
	return strings.Join(s, ",")
}
