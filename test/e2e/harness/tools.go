package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ContainerdTools are the binaries of one pinned containerd version.
type ContainerdTools struct {
	Version    string // e.g. "2.4.2"
	Containerd string
	Ctr        string
}

// ToolSet holds the paths of the pinned tools that hack/tools.sh builds. Every path
// exists unless noted.
type ToolSet struct {
	Dir string // the cache, RCUDA_TOOLS

	// Containerd is keyed by version ("2.4.2"); DefaultContainerd is the default key.
	Containerd        map[string]ContainerdTools
	DefaultContainerd string

	ShimRuncV2   string // containerd-shim-runc-v2, for reference runs
	Runsc        string
	RunscVersion string
	Crictl       string
	Nerdctl      string // "" when nerdctl did not build (it is optional)
	CNIBinDir    string
	Busybox      string // Debian's static busybox, for the test image
	Criu         string // containerd 2.4's CRI refuses checkpoints without criu on PATH
}

// Tools returns the pinned tool paths. They come from `hack/tools.sh env`, the single
// source of truth shared with the Makefile (RCUDA_* variables set in the environment
// override its defaults). It fails, saying to run `make tools`, when a required tool is
// missing.
func Tools() (ToolSet, error) {
	root, err := ModuleRoot()
	if err != nil {
		return ToolSet{}, err
	}
	script := filepath.Join(root, "hack", "tools.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Let bash evaluate the exports (they are shell-quoted), then print them NUL-separated.
	cmd := exec.CommandContext(ctx, "bash", "-c", `eval "$("$0" env)" && env -0`, script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ToolSet{}, fmt.Errorf("%s env: %w: %s", script, err, stderr.String())
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "RCUDA_") {
			env[k] = v
		}
	}
	return parseToolEnv(env, fileExists)
}

// parseToolEnv builds a ToolSet from the RCUDA_* variables, checking files with exists.
func parseToolEnv(env map[string]string, exists func(string) bool) (ToolSet, error) {
	ts := ToolSet{
		Dir:          env["RCUDA_TOOLS"],
		Containerd:   map[string]ContainerdTools{},
		ShimRuncV2:   env["RCUDA_SHIM_RUNC_V2"],
		Runsc:        env["RCUDA_RUNSC"],
		RunscVersion: env["RCUDA_RUNSC_VERSION"],
		Crictl:       env["RCUDA_CRICTL"],
		Nerdctl:      env["RCUDA_NERDCTL"],
		CNIBinDir:    env["RCUDA_CNI_BIN_DIR"],
		Busybox:      env["RCUDA_BUSYBOX"],
		Criu:         env["RCUDA_CRIU"],
	}
	var missing []string
	check := func(what, path string) {
		if path == "" || !exists(path) {
			missing = append(missing, fmt.Sprintf("%s (%s)", what, path))
		}
	}
	for _, v := range strings.Fields(env["RCUDA_CONTAINERD_VERSIONS"]) {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			missing = append(missing, fmt.Sprintf("containerd %q (not a major.minor.patch version)", v))
			continue
		}
		key := parts[0] + "_" + parts[1] // hack/tools.sh names variables by major_minor
		ct := ContainerdTools{
			Version:    env["RCUDA_CONTAINERD_"+key+"_VERSION"],
			Containerd: env["RCUDA_CONTAINERD_"+key],
			Ctr:        env["RCUDA_CTR_"+key],
		}
		if ct.Version == "" {
			ct.Version = v
		}
		check("containerd "+v, ct.Containerd)
		check("ctr "+v, ct.Ctr)
		ts.Containerd[ct.Version] = ct
		if ts.DefaultContainerd == "" {
			ts.DefaultContainerd = ct.Version
		}
	}
	if len(ts.Containerd) == 0 {
		missing = append(missing, "containerd (RCUDA_CONTAINERD_VERSIONS is empty)")
	}
	check("containerd-shim-runc-v2", ts.ShimRuncV2)
	check("runsc", ts.Runsc)
	check("crictl", ts.Crictl)
	check("CNI plugins", filepath.Join(ts.CNIBinDir, "loopback"))
	check("busybox (Debian busybox-static)", ts.Busybox)
	check("criu", ts.Criu)
	if ts.Nerdctl != "" && !exists(ts.Nerdctl) {
		ts.Nerdctl = ""
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return ts, fmt.Errorf("e2e tools missing: %s; run `make tools` (hack/tools.sh)", strings.Join(missing, ", "))
	}
	return ts, nil
}

// ContainerdVersion returns the binaries of containerd version v ("" for the
// default: $RCUDA_E2E_CONTAINERD if set, else the first pinned version, so the
// whole suite can run against another daemon version).
func (ts ToolSet) ContainerdVersion(v string) (ContainerdTools, error) {
	if v == "" {
		v = os.Getenv("RCUDA_E2E_CONTAINERD")
	}
	if v == "" {
		v = ts.DefaultContainerd
	}
	ct, ok := ts.Containerd[v]
	if !ok {
		known := make([]string, 0, len(ts.Containerd))
		for k := range ts.Containerd {
			known = append(known, k)
		}
		sort.Strings(known)
		return ContainerdTools{}, fmt.Errorf("containerd %s is not a pinned version (have %s); add it to CONTAINERD_VERSIONS in hack/tools.sh and run `make tools`",
			v, strings.Join(known, ", "))
	}
	return ct, nil
}

// ModuleRoot returns the repository root: the nearest directory at or above the
// working directory that holds go.mod (go test runs in the package directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod at or above " + dir + ": run the e2e tests from inside the repository")
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
