// Package harness runs the project's end-to-end tests against real daemons: a private
// containerd per test (its own root, state, sockets, log and namespace under
// BaseDir()/<8 hex digits>), the pinned tools from hack/tools.sh, the shim built once
// per test binary, and a cleanup that leaves no task, process, mount or directory
// behind even when a test fails or panics.
//
// A typical test:
//
//	d := harness.StartContainerd(t, harness.Options{})
//	ref := d.ImportTestImage(t)
//	image, _ := d.Client().GetImage(ctx, ref)
//	c, _ := d.Client().NewContainer(ctx, id, containerd.WithNewSnapshot(id, image),
//		d.RuntimeOpts(), containerd.WithNewSpec(oci.WithImageConfig(image),
//			oci.WithProcessArgs("/workload", "counter")))
//	out := harness.NewLineBuffer()
//	task, _ := c.NewTask(ctx, d.IO(nil, out, out))
//	_ = task.Start(ctx)
//	out.WaitFor(t, `^count=\d+$`, time.Minute)
//
// or the same through ctr: d.Ctr(ctx, append([]string{"run", "-d"}, d.CtrRuntimeArgs()...)...).
//
// Host facts the harness accounts for: tests run as root without CAP_SYS_RESOURCE on
// cgroup v1 (hybrid), so runsc cannot lower oom_score_adj (the CRI config sets
// restrict_oom_score_adj); nothing runsc executes or keeps may live under /tmp, which
// its sandbox covers with a tmpfs; ctr forwards signals to tasks, so it is stopped with
// SIGKILL; and runsc keeps a bind mount of an empty network namespace at
// <runsc root>/null-netns for the life of its root directory.
//
// Host-global state a daemon adds and its cleanup removes: with Options.CNI = CNIBridge,
// its bridge (rcbr-<id>), the pods' veth pairs, libcni's cache entries of its pods
// (/var/lib/cni/results) and a claim on one /24 of 10.88.0.0/16 (a flock under
// /run/rcuda-e2e/cni-bridge).
package harness
