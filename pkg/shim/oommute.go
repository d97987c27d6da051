package shim

import (
	"context"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/log"
)

// oomMuter passes the OOM watcher's events on, except TaskOOM events of
// containers muted for a while. When a pod restore replaces the pod's
// sandbox (pod.go), the new sandbox's cgroup takes the old one's path, so
// the removal of the old cgroup reads to the watcher like an OOM of every
// container registered on it; those events are dropped.
type oomMuter struct {
	events.Publisher

	mu    sync.Mutex
	until map[string]time.Time
}

func newOOMMuter(p events.Publisher) *oomMuter {
	return &oomMuter{Publisher: p, until: make(map[string]time.Time)}
}

// mute drops id's TaskOOM events until d from now.
func (m *oomMuter) mute(id string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.until[id] = time.Now().Add(d)
}

func (m *oomMuter) Publish(ctx context.Context, topic string, event events.Event) error {
	if e, ok := event.(*eventstypes.TaskOOM); ok {
		m.mu.Lock()
		until, muted := m.until[e.ContainerID]
		if muted && time.Now().After(until) {
			delete(m.until, e.ContainerID)
			muted = false
		}
		m.mu.Unlock()
		if muted {
			log.G(ctx).WithField("id", e.ContainerID).Info("dropping the OOM event of a replaced pod sandbox's cgroup")
			return nil
		}
	}
	return m.Publisher.Publish(ctx, topic, event)
}
