package shim

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The examples under deploy/ are what docs/kubernetes.md tells users to install:
// they must parse, and name this runtime and the default config path.
func TestDeployExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy")
	data, err := os.ReadFile(filepath.Join(dir, "runsc-cuda.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeConfig(string(data), "deploy/runsc-cuda.toml"); err != nil {
		t.Fatalf("deploy/runsc-cuda.toml: %v", err)
	}
	// Its commented overlay2 option is valid too.
	uncommented := strings.Replace(string(data), "# overlay2 = ", "overlay2 = ", 1)
	if uncommented == string(data) {
		t.Fatal("deploy/runsc-cuda.toml no longer shows the overlay2 option")
	}
	if _, err := decodeConfig(uncommented, "deploy/runsc-cuda.toml with overlay2"); err != nil {
		t.Fatalf("deploy/runsc-cuda.toml with overlay2: %v", err)
	}

	var cfg struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]struct {
					RuntimeType    string            `toml:"runtime_type"`
					Options        map[string]string `toml:"options"`
					PodAnnotations []string          `toml:"pod_annotations"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if _, err := toml.DecodeFile(filepath.Join(dir, "containerd-config.toml"), &cfg); err != nil {
		t.Fatalf("deploy/containerd-config.toml: %v", err)
	}
	rt, ok := cfg.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes["runsc-cuda"]
	if !ok {
		t.Fatal("deploy/containerd-config.toml has no runsc-cuda runtime handler")
	}
	if rt.RuntimeType != RuntimeName || rt.Options["ConfigPath"] != DefaultConfigPath {
		t.Fatalf("runsc-cuda handler: runtime_type %q, ConfigPath %q; want %q and %q", rt.RuntimeType, rt.Options["ConfigPath"], RuntimeName, DefaultConfigPath)
	}

	// The CRI passes the restore annotation of a pod only through the handler's
	// pod_annotations.
	if !slices.ContainsFunc(rt.PodAnnotations, func(p string) bool { ok, _ := path.Match(p, AnnotationRestoreFrom); return ok }) {
		t.Fatalf("runsc-cuda handler: pod_annotations %q do not pass %s", rt.PodAnnotations, AnnotationRestoreFrom)
	}

	manifests := map[string][]map[string]string{}
	for _, name := range []string{"runtimeclass.yaml", "restore-pod.yaml", "restore-job.yaml", "gpu-pod.yaml"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			v, err := yamlValues(doc)
			if err != nil {
				t.Fatalf("deploy/%s, document %d: %v", name, i+1, err)
			}
			if v["apiVersion"] == "" || v["kind"] == "" || v["metadata/name"] == "" {
				t.Fatalf("deploy/%s, document %d: no apiVersion, kind or metadata.name", name, i+1)
			}
			manifests[name] = append(manifests[name], v)
		}
	}
	rc := manifests["runtimeclass.yaml"]
	if len(rc) != 2 || rc[0]["kind"] != "RuntimeClass" || rc[0]["handler"] != "runsc-cuda" || rc[1]["kind"] != "Pod" {
		t.Fatalf("deploy/runtimeclass.yaml: want RuntimeClass handler runsc-cuda and an example Pod, got %v", rc)
	}
	// The restore examples restore a checkpoint of the example pod: the same
	// container, the archive under the kubelet's checkpoint directory, which is a
	// default restore root.
	example := rc[1]
	for _, m := range []struct {
		file, kind, pod string
	}{{"restore-pod.yaml", "Pod", ""}, {"restore-job.yaml", "Job", "spec/template/"}} {
		v := manifests[m.file][0]
		if len(manifests[m.file]) != 1 || v["kind"] != m.kind {
			t.Fatalf("deploy/%s: want one %s", m.file, m.kind)
		}
		if from := v[m.pod+"metadata/annotations/"+AnnotationRestoreFrom]; !strings.HasPrefix(from, KubeletCheckpointDir+"/checkpoint-") || !strings.HasSuffix(from, ".tar") {
			t.Errorf("deploy/%s: the pod's annotation %s = %q, want a kubelet checkpoint archive in %s", m.file, AnnotationRestoreFrom, from, KubeletCheckpointDir)
		}
		if v[m.pod+"spec/runtimeClassName"] != "runsc-cuda" {
			t.Errorf("deploy/%s: runtimeClassName %q, want runsc-cuda", m.file, v[m.pod+"spec/runtimeClassName"])
		}
		for _, k := range []string{"name", "image", "command"} {
			if got, want := v[m.pod+"spec/containers/-/"+k], example["spec/containers/-/"+k]; got != want {
				t.Errorf("deploy/%s: container %s %q, want the example pod's %q", m.file, k, got, want)
			}
		}
	}
	// The GPU pod example says it uses GPUs (its sandbox starts with nvproxy)
	// and asks the device plugin for one.
	if gp := manifests["gpu-pod.yaml"]; len(gp) != 1 || gp[0]["metadata/annotations/"+AnnotationGPU] != "true" ||
		gp[0]["spec/runtimeClassName"] != "runsc-cuda" || gp[0]["spec/containers/-/resources/limits/nvidia.com/gpu"] == "" {
		t.Errorf("deploy/gpu-pod.yaml: want one Pod annotated %s: \"true\" with runtimeClassName runsc-cuda and an nvidia.com/gpu limit, got %v", AnnotationGPU, gp)
	}
	if !slices.ContainsFunc(rt.PodAnnotations, func(p string) bool { ok, _ := path.Match(p, AnnotationGPU); return ok }) {
		t.Errorf("runsc-cuda handler: pod_annotations %q do not pass %s", rt.PodAnnotations, AnnotationGPU)
	}
	if rp := manifests["restore-job.yaml"][0]["spec/template/spec/restartPolicy"]; rp != "Never" {
		t.Errorf("deploy/restore-job.yaml: restartPolicy %q, want Never (a retry is a new pod, restored again)", rp)
	}
}

// yamlValues reads the block-style YAML the deploy examples use (maps, lists of
// maps, scalars, flow sequences kept as written) into its scalar values by path:
// keys joined by "/", "-" for a list item ("spec/containers/-/name"; of several
// items the first is kept).
func yamlValues(doc string) (map[string]string, error) {
	type level struct {
		indent int
		name   string
	}
	var stack []level
	out := map[string]string{}
	for n, line := range strings.Split(doc, "\n") {
		if strings.Contains(line, "\t") {
			return nil, fmt.Errorf("line %d: tab", n+1)
		}
		text := strings.TrimLeft(line, " ")
		if text == "" || strings.HasPrefix(text, "#") || text == "---" {
			continue
		}
		indent := len(line) - len(text)
		pop := func(i int) {
			for len(stack) > 0 && stack[len(stack)-1].indent >= i {
				stack = stack[:len(stack)-1]
			}
		}
		if rest, ok := strings.CutPrefix(text, "- "); ok {
			pop(indent)
			stack = append(stack, level{indent, "-"})
			indent, text = indent+2, rest
		}
		key, value, ok := strings.Cut(text, ":")
		if !ok || key == "" || strings.ContainsAny(key, " \"'") {
			return nil, fmt.Errorf("line %d: not a key: %q", n+1, line)
		}
		pop(indent)
		value = strings.TrimSpace(value)
		if value == "" {
			stack = append(stack, level{indent, key})
			continue
		}
		names := make([]string, 0, len(stack)+1)
		for _, l := range stack {
			names = append(names, l.name)
		}
		p := strings.Join(append(names, key), "/")
		if _, dup := out[p]; !dup {
			out[p] = strings.Trim(value, `"'`)
		}
	}
	return out, nil
}
