// Command restoretask starts a new container from a containerd checkpoint
// image and restores its task, with the task's output going to a log file:
// what `ctr run --checkpoint` would do if ctr 2.4 offered that flag on Linux
// (it reads it, but never defines it), and what `ctr container restore`
// cannot (it gives the restored task ctr's own stdio and exits).
//
// It takes both kinds of checkpoint images: `ctr container checkpoint --task
// --image` and `ctr task checkpoint [--exit]` (which records the image name
// under "image.name" and no snapshotter).
//
//	restoretask --address /run/containerd/containerd.sock --namespace default \
//	  --runtime io.containerd.runsc-cuda.v1 --runtime-config-path /etc/containerd/runsc-cuda.toml \
//	  --log /var/log/clone1.log CHECKPOINT_REF clone1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "restoretask:", err)
		os.Exit(1)
	}
}

func run() error {
	address := flag.String("address", "/run/containerd/containerd.sock", "containerd address")
	ns := flag.String("namespace", "default", "containerd namespace")
	runtime := flag.String("runtime", "io.containerd.runsc-cuda.v1", "runtime name")
	configPath := flag.String("runtime-config-path", "", "the shim's TOML config")
	logPath := flag.String("log", "", "file for the task's stdout and stderr (required)")
	flag.Parse()
	if flag.NArg() != 2 || *logPath == "" {
		return errors.New("usage: restoretask [flags] --log FILE CHECKPOINT_REF ID")
	}
	ref, id := flag.Arg(0), flag.Arg(1)
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	client, err := containerd.New(*address)
	if err != nil {
		return err
	}
	defer client.Close()

	start := time.Now()
	ckpt, err := client.GetImage(ctx, ref)
	if err != nil {
		return err
	}
	var index ocispec.Index
	data, err := content.ReadBlob(ctx, client.ContentStore(), ckpt.Target())
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return fmt.Errorf("%s is not a checkpoint index: %w", ref, err)
	}
	imageName := index.Annotations[ocispec.AnnotationRefName]
	if imageName == "" {
		imageName = index.Annotations["image.name"]
	}
	if imageName == "" {
		return fmt.Errorf("checkpoint %s names no image", ref)
	}
	img, err := client.GetImage(ctx, imageName)
	if err != nil {
		return fmt.Errorf("image of the checkpoint: %w", err)
	}
	spec, err := checkpointSpec(ctx, client, &index)
	if err != nil {
		return err
	}
	var ropts any
	if *configPath != "" {
		ropts = &runtimeoptions.Options{ConfigPath: *configPath}
	}
	opts := []containerd.NewContainerOpts{
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id+"-snapshot", img),
		containerd.WithSpec(spec),
		containerd.WithRuntime(*runtime, ropts),
	}
	if sn := index.Annotations["io.containerd.checkpoint.snapshotter"]; sn != "" {
		opts = append([]containerd.NewContainerOpts{containerd.WithSnapshotter(sn)}, opts...)
	}
	c, err := client.NewContainer(ctx, id, opts...)
	if err != nil {
		return err
	}
	task, err := c.NewTask(ctx, cio.LogFile(*logPath), containerd.WithTaskCheckpoint(ckpt))
	if err != nil {
		c.Delete(ctx, containerd.WithSnapshotCleanup)
		return err
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(ctx)
		c.Delete(ctx, containerd.WithSnapshotCleanup)
		return err
	}
	fmt.Printf("%s restored from %s in %d ms (pid %d)\n", id, ref, time.Since(start).Milliseconds(), task.Pid())
	return nil
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
