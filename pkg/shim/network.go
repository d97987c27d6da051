package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The sandbox's network namespace. With runsc's network=sandbox (the
// default) the sentry runs its own network stack: at `runsc start` and
// `runsc restore` runsc takes every interface of the namespace that is up
// and has an address, gives its addresses, routes and permanent neighbours
// to the sentry, and removes the addresses from the host's side (which
// flushes the routes too). Two consequences the shim takes care of:
//
//   - An interface that is down is skipped, loopback included. containerd's
//     CRI brings lo up (CNI's loopback plugin), nerdctl does not, and a new
//     namespace's lo is down: the shim brings lo up after `runsc create`,
//     so every container has a loopback, as under runc.
//   - A pod sandbox replaced by a restored one (a pod restore) would find
//     the pod's interface without addresses: the shim records what the
//     namespace held before the first sandbox's start and puts it back
//     before the replacement's restore.

// netnsOf opens a netlink handle in the network namespace of process pid.
func netnsOf(pid int) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("opening the network namespace of the sandbox (pid %d): %w", pid, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in the network namespace of the sandbox (pid %d): %w", pid, err)
	}
	return h, nil
}

// loopbackUp brings lo up in the network namespace of process pid.
func loopbackUp(pid int) error {
	h, err := netnsOf(pid)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo in the sandbox's network namespace: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up in the sandbox's network namespace: %w", err)
	}
	return nil
}

// podNetwork is what a pod's network namespace held for the sandbox: the
// interfaces runsc takes over, with their addresses, routes and permanent
// neighbours.
type podNetwork struct {
	links []podLink
}

type podLink struct {
	name   string
	addrs  []netlink.Addr
	routes []netlink.Route
	neighs []netlink.Neigh
}

// recordNetwork records the interfaces of the network namespace of process
// pid that runsc will take over (up, not loopback, with an address).
func recordNetwork(pid int) (*podNetwork, error) {
	h, err := netnsOf(pid)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing the pod's interfaces: %w", err)
	}
	n := &podNetwork{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing the addresses of %s: %w", a.Name, err)
		}
		if len(addrs) == 0 {
			continue
		}
		routes, err := h.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing the routes of %s: %w", a.Name, err)
		}
		neighs, err := h.NeighList(a.Index, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing the neighbours of %s: %w", a.Name, err)
		}
		neighs = slices.DeleteFunc(neighs, func(nb netlink.Neigh) bool { return nb.State&netlink.NUD_PERMANENT == 0 })
		n.links = append(n.links, podLink{name: a.Name, addrs: addrs, routes: routes, neighs: neighs})
	}
	return n, nil
}

// restore puts the recorded addresses, routes and neighbours back into the
// network namespace of process pid, where a previous sandbox took them.
func (n *podNetwork) restore(ctx context.Context, pid int) error {
	if n == nil || len(n.links) == 0 {
		return nil
	}
	h, err := netnsOf(pid)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, pl := range n.links {
		l, err := h.LinkByName(pl.name)
		if err != nil {
			return fmt.Errorf("the pod's interface %s is gone: %w", pl.name, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up: %w", pl.name, err)
		}
		for _, a := range pl.addrs {
			a.Label = ""
			if err := h.AddrReplace(l, &a); err != nil {
				return fmt.Errorf("giving %s its address %s back: %w", pl.name, a.IPNet, err)
			}
		}
		// Routes on the link first, then those through a gateway.
		routes := slices.Clone(pl.routes)
		slices.SortStableFunc(routes, func(a, b netlink.Route) int {
			return boolInt(a.Gw != nil) - boolInt(b.Gw != nil)
		})
		for _, r := range routes {
			r.LinkIndex = l.Attrs().Index
			if err := h.RouteReplace(&r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("giving %s its route %s back: %w", pl.name, r, err)
			}
		}
		for _, nb := range pl.neighs {
			nb.LinkIndex = l.Attrs().Index
			if err := h.NeighSet(&nb); err != nil {
				return fmt.Errorf("giving %s its neighbour %s back: %w", pl.name, nb.IP, err)
			}
		}
	}
	log.G(ctx).WithField("pid", pid).WithField("links", len(n.links)).Info("pod network given back to the sandbox's namespace for its replacement")
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
