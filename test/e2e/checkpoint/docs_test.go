//go:build e2e

package checkpoint

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// The command blocks of the documentation that TestCompatDocsCommands runs: a fenced
// sh block right after a line `<!-- e2e -->` (run against the documentation's host) or
// `<!-- e2e: target -->` (a second host, for a migration's "there" half).
var (
	docsWithCommands = []string{"README.md", "docs/checkpoint-restore.md"}
	docsMarkerRE     = regexp.MustCompile(`^<!-- e2e(?:: ([a-z]+))? -->$`)
	docsAbsPathRE    = regexp.MustCompile(`(?:^|[\s=])(/[^\s'"]*)`)
)

const (
	// docsImage is the image the documentation's commands run: the test image under
	// that name (its command sleeps until killed).
	docsImage = "docker.io/library/app:1"
	// docsHostDir is the one host directory the documentation's commands write to.
	docsHostDir = "/var/lib/runsc-cuda/checkpoints"
	docsTarget  = "target"
)

// docBlock is one marked command block of a document.
type docBlock struct {
	line   int    // of the fence
	host   string // "" or docsTarget
	script string
}

// docBlocks returns the marked blocks of the markdown file path, failing on a marker
// that no sh fence follows, on an unknown host, on an absolute path outside
// docsHostDir (the test would not clean it up) and on && or || (bash -e does not stop
// at a failure inside such a list, so the block would not be checked).
func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var blocks []docBlock
	for i := 0; i < len(lines); i++ {
		m := docsMarkerRE.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || (lines[i+1] != "```sh" && lines[i+1] != "```bash") {
			t.Fatalf("%s:%d: an e2e marker must be followed by a ```sh fence", path, i+1)
		}
		if m[1] != "" && m[1] != docsTarget {
			t.Fatalf("%s:%d: unknown e2e host %q (want none or %q)", path, i+1, m[1], docsTarget)
		}
		b := docBlock{line: i + 2, host: m[1]}
		var body []string
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			l := lines[i]
			if strings.Contains(l, "&&") || strings.Contains(l, "||") {
				t.Fatalf("%s:%d: %q: a marked block runs with bash -e, which does not stop at a failure inside && or || lists; one command per line", path, i+1, l)
			}
			for _, p := range docsAbsPathRE.FindAllStringSubmatch(l, -1) {
				if !strings.HasPrefix(p[1], docsHostDir+"/") {
					t.Fatalf("%s:%d: %s is outside %s, which is the only host directory the test cleans up", path, i+1, p[1], docsHostDir)
				}
			}
			body = append(body, l)
		}
		b.script = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	if len(blocks) == 0 {
		t.Fatalf("%s has no command block marked <!-- e2e -->", path)
	}
	return blocks
}

// claimDocsHostDir makes sure docsHostDir does not exist and removes it when the test
// ends, holding its host lock (claimHost).
func claimDocsHostDir(t *testing.T) {
	t.Helper()
	claimHost(t, "docs", func() (string, error) {
		if _, err := os.Lstat(docsHostDir); err == nil {
			return "", fmt.Errorf("%s exists on this host and is not the test's; the documentation's commands write there: move it away or run elsewhere", docsHostDir)
		}
		return docsHostDir, nil
	}, os.RemoveAll)
}

// docsHost is one daemon the documentation's commands run against, with `ctr` and
// `nerdctl` on PATH that only point the tools at it (its address and namespace; for
// nerdctl its nerdctl.toml: data root, CNI paths, snapshotter), and docsImage in it.
type docsHost struct {
	e   *env
	bin string
}

func (e *env) newDocsHost() *docsHost {
	e.T.Helper()
	n := e.newNerdctl()
	h := &docsHost{e: e, bin: filepath.Join(e.D.Dir, "docs-bin")}
	wrappers := map[string]string{
		"ctr":     fmt.Sprintf("exec %s --address %s --namespace %s \"$@\"\n", e.D.Containerd.Ctr, e.D.Address, e.D.Namespace),
		"nerdctl": fmt.Sprintf("NERDCTL_TOML=%s exec %s \"$@\"\n", n.toml, n.bin),
		// Not pointed at the test's daemon (it has no CRI): a marked block must not reach
		// a crictl of the host.
		"crictl": "echo 'crictl: not available to the documentation test (unmark the block)' >&2\nexit 1\n",
	}
	if err := os.MkdirAll(h.bin, 0o755); err != nil {
		e.T.Fatal(err)
	}
	for name, body := range wrappers {
		if err := os.WriteFile(filepath.Join(h.bin, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			e.T.Fatal(err)
		}
	}
	if _, err := e.Client.ImageService().Create(e.Ctx, images.Image{Name: docsImage, Target: e.Image.Target()}); err != nil {
		e.T.Fatalf("tag the test image as %s: %v", docsImage, err)
	}
	e.T.Cleanup(h.removeCtrFIFOs) // before the daemon's cleanup, which deletes the tasks without IO
	return h
}

// ctrFIFODir is where ctr creates the FIFOs of the tasks it runs without --log-uri
// (`ctr run -d`, `ctr container restore`). ctr removes them when it deletes the task
// itself (`ctr task rm`); for the tasks that still exist at the end, the test does.
const ctrFIFODir = "/run/containerd/fifo"

// removeCtrFIFOs removes the FIFO directories in ctrFIFODir whose FIFOs all belong to
// containers of the host's daemon (<container id>-stdin, -stdout, -stderr).
func (h *docsHost) removeCtrFIFOs() {
	cs, err := h.e.Client.Containers(h.e.Ctx)
	if err != nil {
		h.e.T.Errorf("cleanup: list containers: %v", err)
		return
	}
	dirs, _ := os.ReadDir(ctrFIFODir)
	for _, d := range dirs {
		fifos := ckenv.DirNames(h.e.T, filepath.Join(ctrFIFODir, d.Name()))
		ours := len(fifos) > 0
		for _, f := range fifos {
			ours = ours && slices.ContainsFunc(cs, func(c containerd.Container) bool { return strings.HasPrefix(f, c.ID()+"-std") })
		}
		if ours {
			if err := os.RemoveAll(filepath.Join(ctrFIFODir, d.Name())); err != nil {
				h.e.T.Errorf("cleanup: %v", err)
			}
		}
	}
}

// run runs a block with bash -e in dir, with the host's tools first on PATH, and
// returns its output (commands traced).
func (h *docsHost) run(dir, script string) (string, error) {
	ctx, cancel := context.WithTimeout(h.e.Ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-x", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+h.bin+":"+os.Getenv("PATH"))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCompatDocsCommands runs the checkpoint and restore commands of README.md and
// docs/checkpoint-restore.md as they are written: the fenced sh blocks marked with
// an HTML comment `<!-- e2e -->` (invisible when rendered) are extracted from the
// markdown at test time, so the documentation cannot drift from what works, and run in
// order, each with bash -e, against a private containerd with the shim (per document:
// the blocks of one document share its containers and directories). `ctr` and
// `nerdctl` on PATH are wrappers that only add the daemon's address and namespace (for
// nerdctl its own nerdctl.toml); the image the documentation runs, docker.io/library/app:1,
// is the test image imported under that name. A block marked `<!-- e2e: target -->`
// runs against a second daemon, the "other host" of a migration, in the same working
// directory (the exported tar is there).
//
// Not marked, so not run: the Kubernetes commands (kubelet's checkpoint API and
// `crictl checkpoint <container-id>`), which need a pod created by the kubelet or
// through the CRI with a container ID that a document cannot name in advance
// (test/e2e/cri covers crictl checkpoint), and the command sketches with placeholders.
//
// The documentation writes to /var/lib/runsc-cuda/checkpoints and runs nerdctl on its default
// network (the bridge nerdctl0): the test holds host locks for both and removes or
// restores what they leave (claimDocsHostDir, useDefaultNetwork).
func TestCompatDocsCommands(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range docsWithCommands {
		t.Run(doc, func(t *testing.T) {
			blocks := docBlocks(t, filepath.Join(root, doc))
			claimDocsHostDir(t)
			useDefaultNetwork(t)
			hosts := map[string]*docsHost{"": setup(t, harness.Options{}).newDocsHost()}
			if slices.ContainsFunc(blocks, func(b docBlock) bool { return b.host == docsTarget }) {
				hosts[docsTarget] = setup(t, harness.Options{}).newDocsHost()
			}
			work := filepath.Join(hosts[""].e.D.Dir, "docs-work")
			if err := os.MkdirAll(work, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, b := range blocks {
				start := time.Now()
				out, err := hosts[b.host].run(work, b.script)
				t.Logf("%s:%d (host %q, %.1f s):\n%s", doc, b.line, b.host, time.Since(start).Seconds(), out)
				if err != nil {
					t.Fatalf("%s:%d: the block failed: %v", doc, b.line, err)
				}
			}
		})
	}
}
