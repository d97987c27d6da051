package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// DefaultRoot is runsc's state directory when none is configured; the
// containerd namespace is appended to it.
const DefaultRoot = "/run/containerd/runsc-cuda"

// Config is the shim's configuration. It is read from a TOML file named by
// containerd's runtime options (runtimeoptions.v1.Options ConfigPath, or
// inline as ConfigBody), so the same file format serves ctr, the containerd
// client, nerdctl and the CRI. Its first keys match gVisor's own runsc.toml.
type Config struct {
	// BinaryName is the runsc binary (path or name on PATH).
	BinaryName string `toml:"binary_name" json:"binary_name,omitempty"`
	// Root is runsc's state directory; the namespace is appended.
	Root string `toml:"root" json:"root,omitempty"`
	// LogLevel is the shim's log level (trace, debug, info, warn, error);
	// empty keeps containerd's (debug when containerd runs with debug
	// logging, else info).
	LogLevel string `toml:"log_level" json:"log_level,omitempty"`
	// IoUID and IoGID own the container's stdio pipes (user namespaces).
	IoUID int `toml:"io_uid" json:"io_uid,omitempty"`
	IoGID int `toml:"io_gid" json:"io_gid,omitempty"`
	// RunscConfig holds runsc global flags, e.g. platform = "systrap",
	// debug = "true", debug-log = "/var/log/runsc/%ID%/".
	RunscConfig map[string]string `toml:"runsc_config" json:"runsc_config,omitempty"`
	// Checkpoint tunes checkpoint and restore.
	Checkpoint CheckpointConfig `toml:"checkpoint" json:"checkpoint"`
	// CUDA configures GPU containers.
	CUDA CUDAConfig `toml:"cuda" json:"cuda"`
}

// CheckpointConfig tunes checkpoint and restore. The defaults are the fastest
// measured settings (see docs/benchmarks/README.md).
type CheckpointConfig struct {
	// Compression of the image: "none" or "flate-best-speed".
	Compression string `toml:"compression" json:"compression,omitempty"`
	// Direct writes the image with O_DIRECT.
	Direct bool `toml:"direct" json:"direct,omitempty"`
	// RestoreDirect reads the image with O_DIRECT.
	RestoreDirect bool `toml:"restore_direct" json:"restore_direct,omitempty"`
	// BackgroundRestore lets the sandbox keep loading memory after restore
	// returns (uncompressed images only). Unset means true.
	BackgroundRestore *bool `toml:"background_restore" json:"background_restore,omitempty"`
	// ExcludeCommittedZeroPages skips zero pages when saving.
	ExcludeCommittedZeroPages bool `toml:"exclude_committed_zero_pages" json:"exclude_committed_zero_pages,omitempty"`
	// Verify records a checksum of every image file at checkpoint and
	// checks them before a restore. It reads the whole image both times
	// (off by default: the page cache makes the checkpoint side cheap, but a
	// verified restore cannot start in the background before the image was
	// read); it catches images corrupted in storage or transit, which runsc
	// does not detect in uncompressed images.
	Verify bool `toml:"verify" json:"verify,omitempty"`
	// RestoreRoots are the directories a restore annotation
	// (io.containerd.runsc-cuda.v1.restore-from) may name checkpoints in;
	// empty means KubeletCheckpointDir and CheckpointDir.
	RestoreRoots []string `toml:"restore_roots" json:"restore_roots,omitempty"`
	// UnpackDir is where checkpoint archives named by a restore annotation
	// are unpacked for the restore (DefaultUnpackDir when empty).
	UnpackDir string `toml:"unpack_dir" json:"unpack_dir,omitempty"`
	// CrossNamespaceRestore lets a restore annotation restore a pod
	// checkpoint into a pod of another Kubernetes namespace. Off, a pod
	// restores only checkpoints of pods of its own namespace: anyone who may
	// create a pod of this runtime could otherwise name another namespace's
	// checkpoint under the restore roots and read the memory it holds.
	CrossNamespaceRestore bool `toml:"cross_namespace_restore" json:"cross_namespace_restore,omitempty"`
}

// The directories restore annotations may name checkpoints in when the
// config names none: the kubelet's checkpoint directory, and one for
// checkpoints of ctr and nerdctl users. DefaultUnpackDir is where checkpoint
// archives are unpacked.
const (
	KubeletCheckpointDir = "/var/lib/kubelet/checkpoints"
	CheckpointDir        = "/var/lib/runsc-cuda/checkpoints"
	DefaultUnpackDir     = "/var/lib/runsc-cuda/restore"
)

func (c CheckpointConfig) restoreRoots() []string {
	if len(c.RestoreRoots) == 0 {
		return []string{KubeletCheckpointDir, CheckpointDir}
	}
	return c.RestoreRoots
}

func (c CheckpointConfig) unpackDir() string {
	if c.UnpackDir == "" {
		return DefaultUnpackDir
	}
	return c.UnpackDir
}

// CUDAConfig configures GPU containers.
type CUDAConfig struct {
	// ToggleTool is the host path of the CUDA checkpoint tool mounted
	// read-only into GPU containers. Empty means "cuda-checkpoint" next to
	// the shim binary. It may point at NVIDIA's cuda-checkpoint.
	ToggleTool string `toml:"toggle_tool" json:"toggle_tool,omitempty"`
	// Sequential toggles CUDA processes one at a time instead of in parallel.
	Sequential bool `toml:"sequential" json:"sequential,omitempty"`
	// LockTimeout bounds how long the toggle waits for running CUDA work
	// ("10s"); empty leaves the driver's default.
	LockTimeout string `toml:"lock_timeout" json:"lock_timeout,omitempty"`
	// VerifyExitCheckpoint makes an exit checkpoint of a GPU container
	// resume the sandbox after the save, so that its CUDA state is known to
	// come back onto the GPUs, before it stops it. The application then
	// runs for the moment of the CUDA restore after the image was taken,
	// and what it does in that moment (output, writes, messages) is not in
	// the image: a restore repeats it. Off (the default) the sandbox is
	// stopped right after the save, as runc stops a container after CRIU's
	// dump, and the image's metadata says its CUDA restore is unverified.
	VerifyExitCheckpoint bool `toml:"verify_exit_checkpoint" json:"verify_exit_checkpoint,omitempty"`
	// DriverLibDir is a host directory holding the NVIDIA user-space driver
	// libraries (libcuda.so.1, ...), mounted read-only into GPU containers
	// whose spec does not already provide them (CDI or the NVIDIA toolkit).
	DriverLibDir string `toml:"driver_lib_dir" json:"driver_lib_dir,omitempty"`
}

// BackgroundRestoreEnabled resolves the default of BackgroundRestore.
func (c CheckpointConfig) BackgroundRestoreEnabled() bool {
	return c.BackgroundRestore == nil || *c.BackgroundRestore
}

// compression is the image compression runsc is asked for.
func (c CheckpointConfig) compression() string {
	if c.Compression == "" {
		return "none"
	}
	return c.Compression
}

// LockTimeoutDuration parses LockTimeout.
func (c CUDAConfig) LockTimeoutDuration() (time.Duration, error) {
	if c.LockTimeout == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.LockTimeout)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("cuda.lock_timeout %q is not a duration such as \"10s\"", c.LockTimeout)
	}
	return d, nil
}

// Validate checks values that runsc would otherwise reject late.
func (c *Config) Validate() error {
	switch c.Checkpoint.Compression {
	case "", "none", "flate-best-speed":
	default:
		return fmt.Errorf("checkpoint.compression %q is not supported: use \"none\" or \"flate-best-speed\"", c.Checkpoint.Compression)
	}
	if _, err := c.CUDA.LockTimeoutDuration(); err != nil {
		return err
	}
	// Paths are absolute and without "..": the shim runs in the task's
	// bundle, next to the container's rootfs, so a relative path would
	// resolve there.
	paths := []struct{ key, val string }{{"root", c.Root}, {"cuda.toggle_tool", c.CUDA.ToggleTool}, {"cuda.driver_lib_dir", c.CUDA.DriverLibDir}, {"checkpoint.unpack_dir", c.Checkpoint.UnpackDir}}
	for _, r := range c.Checkpoint.RestoreRoots {
		if r == "" || r == "/" {
			return fmt.Errorf("checkpoint.restore_roots entry %q would allow restores from anywhere; name the directories that hold checkpoints", r)
		}
		paths = append(paths, struct{ key, val string }{"checkpoint.restore_roots", r})
	}
	for _, p := range paths {
		if p.val != "" && (!filepath.IsAbs(p.val) || hasDotDot(p.val)) {
			return fmt.Errorf("%s %q must be an absolute path without \"..\"", p.key, p.val)
		}
	}
	if b := c.BinaryName; strings.Contains(b, "/") && (!filepath.IsAbs(b) || hasDotDot(b)) {
		return fmt.Errorf("binary_name %q must be an absolute path without \"..\", or a bare name looked up on PATH", b)
	}
	for k := range c.RunscConfig {
		if k == "" || strings.HasPrefix(k, "-") || strings.ContainsAny(k, "= ") {
			return fmt.Errorf("runsc_config key %q is not a runsc flag name (write platform = \"systrap\", not --platform)", k)
		}
		switch k {
		case "root", "log", "log-format":
			return fmt.Errorf("runsc_config key %q is managed by the shim: set the top-level key instead", k)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "trace", "debug", "info", "warn", "warning", "error":
	default:
		return fmt.Errorf("log_level %q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	return nil
}

// netstack reports whether the sandbox runs gVisor's own network stack
// (runsc's network=sandbox, the default), which takes over the interfaces of
// its network namespace.
func (c *Config) netstack() bool {
	n := c.RunscConfig["network"]
	return n == "" || n == "sandbox"
}

// RunscBase returns the configured runsc state directory (Root or
// DefaultRoot).
func (c *Config) RunscBase() string {
	if c.Root == "" {
		return DefaultRoot
	}
	return c.Root
}

// RunscRoot returns the runsc state directory of one sandbox:
// <root>/<namespace>/<sandbox id>. Each sandbox has a directory of its own
// because runsc resolves the container id it is given as a prefix when
// several are possible and then refuses it as ambiguous: with one shared
// directory, `runsc kill web` fails while a container "web2" exists.
func (c *Config) RunscRoot(namespace, sandbox string) string {
	return filepath.Join(c.RunscBase(), namespace, sandbox)
}

// decodeConfig parses a TOML config strictly: unknown keys are errors.
func decodeConfig(body, source string) (*Config, error) {
	var c Config
	md, err := toml.Decode(body, &c)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing shim config %s: %v", errdefs.ErrInvalidArgument, source, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: shim config %s has unknown keys %s; see docs/configuration.md", errdefs.ErrInvalidArgument, source, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: shim config %s: %v", errdefs.ErrInvalidArgument, source, err)
	}
	return &c, nil
}

// DefaultConfigPath is read when containerd sends no runtime options (ctr
// without --runtime-config-path, nerdctl). ConfigEnv, in containerd's
// environment, names another file.
const (
	DefaultConfigPath = "/etc/containerd/runsc-cuda.toml"
	ConfigEnv         = "RUNSC_CUDA_CONFIG"
)

// defaultConfig reads the default config file, if there is one.
func defaultConfig() (*Config, error) {
	path, explicit := os.LookupEnv(ConfigEnv)
	if !explicit || path == "" {
		path = DefaultConfigPath
	}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) && !explicit {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading shim config: %v", errdefs.ErrInvalidArgument, err)
	}
	return decodeConfig(string(data), path)
}

// ParseOptions turns the options containerd sends with CreateTaskRequest into
// a Config. Accepted:
//   - nil: the default config file (DefaultConfigPath or $RUNSC_CUDA_CONFIG),
//     else defaults;
//   - runtimeoptions.v1.Options with ConfigPath or ConfigBody (TOML): what
//     the CRI sends for non-runc runtimes, and `ctr --runtime-config-path`;
//   - runc's options.Options: the default config file, with BinaryName, Root
//     and the IO owner taken from the options when set (runsc is a
//     runc-compatible binary); SystemdCgroup is refused (it has a runsc
//     flag), the other runc settings have nothing to act on under runsc.
func ParseOptions(opts *anypb.Any) (*Config, error) {
	c, _, err := parseOptions(opts)
	return c, err
}

// parseOptions is ParseOptions that also returns runc's options when those
// were sent (their CriuImagePath names a checkpoint to restore).
func parseOptions(opts *anypb.Any) (*Config, *runcoptions.Options, error) {
	if opts == nil || opts.GetValue() == nil && opts.GetTypeUrl() == "" {
		c, err := defaultConfig()
		return c, nil, err
	}
	v, err := typeurl.UnmarshalAny(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: runtime options of type %q cannot be read by this shim: %v; use runtimeoptions.v1.Options with ConfigPath pointing at a TOML file", errdefs.ErrInvalidArgument, opts.GetTypeUrl(), err)
	}
	switch o := v.(type) {
	case *runtimeoptions.Options:
		c, err := configOf(o)
		return c, nil, err
	case *runcoptions.Options:
		c, err := configFromRunc(o)
		return c, o, err
	default:
		return nil, nil, fmt.Errorf("%w: runtime options of type %T are not supported by io.containerd.runsc-cuda.v1; use runtimeoptions.v1.Options{ConfigPath: \"/etc/containerd/runsc-cuda.toml\"}", errdefs.ErrInvalidArgument, v)
	}
}

func configOf(o *runtimeoptions.Options) (*Config, error) {
	if len(o.ConfigBody) > 0 {
		return decodeConfig(string(o.ConfigBody), "(inline ConfigBody)")
	}
	if o.ConfigPath == "" {
		return defaultConfig()
	}
	data, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("%w: reading shim config: %v", errdefs.ErrInvalidArgument, err)
	}
	return decodeConfig(string(data), o.ConfigPath)
}

func configFromRunc(o *runcoptions.Options) (*Config, error) {
	if o.SystemdCgroup {
		return nil, fmt.Errorf("%w: runc option SystemdCgroup is not supported by runsc-cuda; set runsc_config systemd-cgroup = \"true\" in the shim config instead", errdefs.ErrInvalidArgument)
	}
	// containerd sends runc options as task options (CriuImagePath for a
	// restore from a path), and then does not forward the runtime's own
	// options: start from the default config file.
	c, err := defaultConfig()
	if err != nil {
		return nil, err
	}
	if o.BinaryName != "" {
		c.BinaryName = o.BinaryName
	}
	if o.Root != "" {
		c.Root = o.Root
	}
	if o.IoUid != 0 || o.IoGid != 0 {
		c.IoUID, c.IoGID = int(o.IoUid), int(o.IoGid)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	return c, nil
}

// hasDotDot reports whether path has a ".." element.
func hasDotDot(path string) bool {
	for _, e := range strings.Split(path, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}
