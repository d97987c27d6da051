// Command ckptctl checkpoints and restores containerd tasks with the
// containerd Go client, timing each step, for the GPU scenario and the
// benchmarks.
//
//	ckptctl [global flags] checkpoint [--exit] [--image-path DIR] [--rpc | --steps] ID
//	ckptctl [global flags] restore --log FILE [--wait-output] (REF | --from-path DIR --like ID) NEW_ID
//
// checkpoint: task.Checkpoint with runc's CheckpointOptions; without
// --image-path containerd packs the image into its content store (the ref is
// printed), with it the image stays a flat directory. --rpc makes only the
// task service's Checkpoint call (containerd and the shim; no pause, no
// resume, no rw-layer diff, no image record): the shim's part as containerd
// sees it. --steps does what task.Checkpoint does, step by step, and times
// each step (pause, checkpoint call, rw-layer diff, index, image record,
// resume): where containerd's time goes.
//
// restore: a new container whose task is restored, its output going to a
// log file. From a checkpoint image REF it does what `ctr run --checkpoint`
// would if ctr 2.4 offered that flag on Linux (it reads it but never defines
// it), and what `ctr container restore` cannot (it gives the task ctr's own
// stdio and exits). From a directory (--from-path, as the CRI's
// RestoreFromPath does) it copies the spec and image
// of the container --like.
//
// Each command prints one JSON object of timings in milliseconds.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	goruntime "runtime"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/pkg/rootfs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

type globals struct {
	address, namespace, runtime, configPath string
}

func main() {
	var g globals
	flag.StringVar(&g.address, "address", "/run/containerd/containerd.sock", "containerd address")
	flag.StringVar(&g.namespace, "namespace", "default", "containerd namespace")
	flag.StringVar(&g.runtime, "runtime", "io.containerd.runsc-cuda.v1", "runtime name")
	flag.StringVar(&g.configPath, "runtime-config-path", "", "the shim's TOML config")
	flag.Parse()
	var err error
	switch flag.Arg(0) {
	case "checkpoint":
		err = checkpointCmd(g, flag.Args()[1:])
	case "restore":
		err = restoreCmd(g, flag.Args()[1:])
	default:
		err = errors.New("usage: ckptctl [flags] checkpoint|restore ...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ckptctl:", err)
		os.Exit(1)
	}
}

func connect(g globals) (context.Context, *containerd.Client, error) {
	client, err := containerd.New(g.address)
	if err != nil {
		return nil, nil, err
	}
	return namespaces.WithNamespace(context.Background(), g.namespace), client, nil
}

func printJSON(v any) {
	data, _ := json.Marshal(v)
	fmt.Println(string(data))
}

func checkpointCmd(g globals, args []string) error {
	fs := flag.NewFlagSet("checkpoint", flag.ContinueOnError)
	exit := fs.Bool("exit", false, "stop the container after the checkpoint")
	imagePath := fs.String("image-path", "", "write the image to this directory instead of the content store")
	rpc := fs.Bool("rpc", false, "only the task service's Checkpoint call (no pause, rw diff, image record, resume)")
	steps := fs.Bool("steps", false, "do what the client's task.Checkpoint does, timing each step")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (*rpc && *steps) {
		return errors.New("usage: checkpoint [--exit] [--image-path DIR] [--rpc | --steps] ID")
	}
	ctx, client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.Close()
	c, err := client.LoadContainer(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	copts := &runcoptions.CheckpointOptions{Exit: *exit, ImagePath: *imagePath}
	if *rpc || *steps {
		out, err := checkpointSteps(ctx, client, c, copts, *rpc)
		if err != nil {
			return err
		}
		printJSON(out)
		return nil
	}
	opts := []containerd.CheckpointTaskOpts{func(i *containerd.CheckpointTaskInfo) error {
		i.Options = copts
		return nil
	}}
	start := time.Now()
	img, err := task.Checkpoint(ctx, opts...)
	if err != nil {
		return err
	}
	out := map[string]any{"checkpoint_ms": time.Since(start).Milliseconds()}
	if *imagePath == "" {
		out["ref"] = img.Name()
	}
	printJSON(out)
	return nil
}

// checkpointSteps does what the containerd client's task.Checkpoint does
// (containerd v2.4), timing each step; with rpcOnly, only the task service
// call. Like the client, it packs the rw layer and records an image even with
// an image path, which containerd skips for the runc runtime only.
func checkpointSteps(ctx context.Context, client *containerd.Client, c containerd.Container, opts *runcoptions.CheckpointOptions, rpcOnly bool) (map[string]any, error) {
	out := map[string]any{}
	start := time.Now()
	lap := func(key string, t0 time.Time) { out[key] = time.Since(t0).Milliseconds() }
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return nil, err
	}
	defer done(ctx)
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	anyOpts, err := typeurl.MarshalAnyToProto(opts)
	if err != nil {
		return nil, err
	}
	req := &tasks.CheckpointTaskRequest{ContainerID: c.ID(), Options: anyOpts}
	if rpcOnly {
		t0 := time.Now()
		if _, err := client.TaskService().Checkpoint(ctx, req); err != nil {
			return nil, err
		}
		lap("rpc_ms", t0)
		lap("checkpoint_ms", start)
		return out, nil
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return nil, err
	}
	paused := false
	if st.Status != containerd.Paused {
		t0 := time.Now()
		if err := task.Pause(ctx); err != nil {
			return nil, err
		}
		lap("pause_ms", t0)
		paused = true
	}
	resume := func() error {
		if !paused {
			return nil
		}
		paused = false
		t0 := time.Now()
		err := task.Resume(ctx)
		lap("resume_ms", t0)
		return err
	}
	defer resume()
	index := ocispec.Index{Versioned: ocispecs.Versioned{SchemaVersion: 2}, Annotations: map[string]string{}}
	t0 := time.Now()
	resp, err := client.TaskService().Checkpoint(ctx, req)
	if err != nil {
		return nil, err
	}
	lap("rpc_ms", t0)
	for _, d := range resp.Descriptors {
		index.Manifests = append(index.Manifests, ocispec.Descriptor{
			MediaType: d.MediaType, Size: d.Size, Digest: digest.Digest(d.Digest), Annotations: d.Annotations,
			Platform: &ocispec.Platform{OS: goruntime.GOOS, Architecture: goruntime.GOARCH},
		})
		if d.MediaType == images.MediaTypeContainerd1Checkpoint {
			out["packed_bytes"] = d.Size
		}
	}
	if info.Image != "" {
		im, err := client.ImageService().Get(ctx, info.Image)
		if err != nil {
			return nil, err
		}
		index.Manifests = append(index.Manifests, im.Target)
		index.Annotations["image.name"] = info.Image
	}
	if info.SnapshotKey != "" {
		t0 := time.Now()
		rw, err := rootfs.CreateDiff(ctx, info.SnapshotKey, client.SnapshotService(info.Snapshotter), client.DiffService(),
			diff.WithReference(fmt.Sprintf("checkpoint-rw-%s", info.SnapshotKey)))
		if err != nil {
			return nil, err
		}
		lap("rw_diff_ms", t0)
		out["rw_diff_bytes"] = rw.Size
		rw.Platform = &ocispec.Platform{OS: goruntime.GOOS, Architecture: goruntime.GOARCH}
		index.Manifests = append(index.Manifests, rw)
	}
	t0 = time.Now()
	labels := map[string]string{}
	for i, m := range index.Manifests {
		labels[fmt.Sprintf("containerd.io/gc.ref.content.%d", i)] = m.Digest.String()
	}
	data, err := json.Marshal(index)
	if err != nil {
		return nil, err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, client.ContentStore(), c.ID(), bytes.NewReader(data), desc, content.WithLabels(labels)); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("containerd.io/checkpoint/%s:%s", c.ID(), time.Now().Format("01-02-2006-15:04:05"))
	if _, err := client.ImageService().Create(ctx, images.Image{Name: name, Target: desc, Labels: map[string]string{"containerd.io/checkpoint": "true"}}); err != nil {
		return nil, err
	}
	lap("image_ms", t0)
	if err := resume(); err != nil {
		return nil, err
	}
	lap("checkpoint_ms", start)
	out["ref"] = name
	return out, nil
}

func restoreCmd(g globals, args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	logPath := fs.String("log", "", "file for the task's stdout and stderr (required)")
	fromPath := fs.String("from-path", "", "restore from this checkpoint directory instead of an image")
	like := fs.String("like", "", "with --from-path: the container whose image and spec to use")
	waitOutput := fs.Bool("wait-output", false, "also wait for the task's first line of output and time it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *logPath == "" || (*fromPath == "" && fs.NArg() != 2) || (*fromPath != "" && (fs.NArg() != 1 || *like == "")) {
		return errors.New("usage: restore --log FILE [--wait-output] (REF | --from-path DIR --like ID) NEW_ID")
	}
	id := fs.Arg(fs.NArg() - 1)
	ctx, client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.Close()

	start := time.Now()
	var (
		img      containerd.Image
		spec     *oci.Spec
		taskOpts []containerd.NewTaskOpts
		snapshot string
	)
	if *fromPath != "" {
		src, err := client.LoadContainer(ctx, *like)
		if err != nil {
			return err
		}
		info, err := src.Info(ctx)
		if err != nil {
			return err
		}
		// A container made from a directory (`ctr run --rootfs`) has no
		// image: the clone uses the same directory, through the spec.
		if info.Image != "" {
			if img, err = src.Image(ctx); err != nil {
				return err
			}
		}
		if spec, err = src.Spec(ctx); err != nil {
			return err
		}
	} else {
		ckpt, err := client.GetImage(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		var index ocispec.Index
		data, err := content.ReadBlob(ctx, client.ContentStore(), ckpt.Target())
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &index); err != nil {
			return fmt.Errorf("%s is not a checkpoint index: %w", fs.Arg(0), err)
		}
		name := index.Annotations[ocispec.AnnotationRefName]
		if name == "" {
			name = index.Annotations["image.name"] // `ctr task checkpoint` images
		}
		if img, err = client.GetImage(ctx, name); err != nil {
			return fmt.Errorf("image %q of the checkpoint: %w", name, err)
		}
		if spec, err = checkpointSpec(ctx, client, &index); err != nil {
			return err
		}
		snapshot = index.Annotations["io.containerd.checkpoint.snapshotter"]
		taskOpts = append(taskOpts, containerd.WithTaskCheckpoint(ckpt))
	}
	var ropts any
	if g.configPath != "" {
		ropts = &runtimeoptions.Options{ConfigPath: g.configPath}
	}
	var opts []containerd.NewContainerOpts
	if img != nil {
		opts = append(opts, containerd.WithImage(img), containerd.WithNewSnapshot(id+"-snapshot", img))
	}
	opts = append(opts, containerd.WithSpec(spec), containerd.WithRuntime(g.runtime, ropts))
	if snapshot != "" {
		opts = append([]containerd.NewContainerOpts{containerd.WithSnapshotter(snapshot)}, opts...)
	}
	c, err := client.NewContainer(ctx, id, opts...)
	if err != nil {
		return err
	}
	created := time.Now()
	var taskCreated, started time.Time
	if *fromPath != "" {
		// containerd's RestoreFromPath (what the CRI uses): create and start
		// in one call, with the runtime's own options (runc's CriuImagePath
		// task option would replace them).
		if _, err := c.Restore(ctx, cio.LogFile(*logPath), *fromPath); err != nil {
			c.Delete(ctx, containerd.WithSnapshotCleanup)
			return err
		}
		taskCreated = time.Now()
		started = taskCreated
	} else {
		task, err := c.NewTask(ctx, cio.LogFile(*logPath), taskOpts...)
		if err != nil {
			c.Delete(ctx, containerd.WithSnapshotCleanup)
			return err
		}
		taskCreated = time.Now()
		if err := task.Start(ctx); err != nil {
			task.Delete(ctx)
			c.Delete(ctx, containerd.WithSnapshotCleanup)
			return err
		}
		started = time.Now()
	}
	out := map[string]any{
		"container_ms":   created.Sub(start).Milliseconds(),
		"task_create_ms": taskCreated.Sub(created).Milliseconds(),
		"start_ms":       started.Sub(taskCreated).Milliseconds(),
		"restore_ms":     started.Sub(start).Milliseconds(),
	}
	if *waitOutput {
		if err := waitForLine(*logPath, 5*time.Minute); err != nil {
			return err
		}
		out["first_output_ms"] = time.Since(start).Milliseconds()
	}
	printJSON(out)
	return nil
}

// waitForLine waits until path holds a complete line.
func waitForLine(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			ok := sc.Scan()
			f.Close()
			if ok {
				return nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("no output in %s within %s", path, timeout)
}

// checkpointSpec reads the container spec a checkpoint image carries.
func checkpointSpec(ctx context.Context, client *containerd.Client, index *ocispec.Index) (*oci.Spec, error) {
	for _, m := range index.Manifests {
		if m.MediaType != images.MediaTypeContainerd1CheckpointConfig {
			continue
		}
		data, err := content.ReadBlob(ctx, client.ContentStore(), m)
		if err != nil {
			return nil, err
		}
		var a anypb.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return nil, err
		}
		v, err := typeurl.UnmarshalAny(&a)
		if err != nil {
			return nil, err
		}
		s, ok := v.(*specs.Spec)
		if !ok {
			return nil, fmt.Errorf("checkpoint config is a %T, not an OCI spec", v)
		}
		return s, nil
	}
	return nil, errors.New("checkpoint carries no container spec")
}
