package shim

import (
	"context"
	"encoding/json"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/runtime"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/log"
)

// gpuTopic is the shim's own event topic for host-side GPU facts (`ctr
// events` shows it).
const gpuTopic = "/runsc-cuda/gpu"

// exitTopic is the shim's own event topic for exits that were not the
// container's own doing (a restore that failed after the container started,
// a checkpoint that had to stop it), with the reason: TaskExit has none.
// `ctr events` shows it.
const exitTopic = "/runsc-cuda/exit"

// restoreTopic is the shim's own event topic for restores: a container
// restored from a checkpoint says so there (the CRI has no status field a
// runtime could set), with the checkpoint and how long the restore took.
const restoreTopic = "/runsc-cuda/restore"

// eventSink publishes the shim's events to containerd in the order they were
// sent, from one goroutine, and delivers those still queued when the shim
// shuts down.
type eventSink struct {
	ch        chan any
	publisher cdshim.Publisher
	done      <-chan struct{}
}

// newEvents starts forwarding; the shutdown service's callback flushes the
// queue (the shim library exits as soon as its callbacks return, and
// containerd calls Shutdown right after the Delete that queued TaskDelete).
func newEvents(ctx context.Context, publisher cdshim.Publisher, sd shutdown.Service) *eventSink {
	e := &eventSink{ch: make(chan any, 128), publisher: publisher, done: sd.Done()}
	flush, flushed := make(chan struct{}), make(chan struct{})
	go e.forward(context.WithoutCancel(ctx), flush, flushed)
	sd.RegisterCallback(func(cctx context.Context) error {
		close(flush)
		select {
		case <-flushed:
		case <-cctx.Done():
		}
		return nil
	})
	return e
}

// send queues a task event (one of containerd's api/events types).
func (e *eventSink) send(evt any) {
	select {
	case e.ch <- evt:
	case <-e.done:
	}
}

func (e *eventSink) forward(ctx context.Context, flush <-chan struct{}, flushed chan<- struct{}) {
	defer close(flushed)
	defer e.publisher.Close()
	publish := func(evt any) {
		if err := e.publisher.Publish(ctx, runtime.GetTopic(evt), evt); err != nil {
			log.G(ctx).WithError(err).Error("publishing event")
		}
	}
	for {
		select {
		case evt := <-e.ch:
			publish(evt)
		case <-flush:
			for {
				select {
				case evt := <-e.ch:
					publish(evt)
				default:
					return
				}
			}
		}
	}
}

// gpu publishes a GPU fact on gpuTopic.
func (e *eventSink) gpu(ctx context.Context, fact map[string]any) { e.publish(ctx, gpuTopic, fact) }

// publish publishes fact on a topic of the shim's own (fact holds the
// container's "container_id").
func (e *eventSink) publish(ctx context.Context, topic string, fact map[string]any) {
	if err := e.publisher.Publish(ctx, topic, factEvent(fact)); err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Warn("publishing event")
	}
}

// factEvent carries a fact as containerd's own ContainerUpdate event: the
// container's id, and the fact's other fields as labels (strings as they
// are, other values as JSON). ctr events, nerdctl events and every
// containerd client decode containerd's event types; a type of the shim's
// own (or google.protobuf.StringValue, which ctr does not link) is "cannot
// unmarshal an event from Any" to them. The topic tells it from containerd's
// /containers/update.
func factEvent(fact map[string]any) *eventstypes.ContainerUpdate {
	ev := &eventstypes.ContainerUpdate{Labels: make(map[string]string, len(fact))}
	for k, v := range fact {
		switch v := v.(type) {
		case string:
			if k == "container_id" {
				ev.ID = v
				continue
			}
			ev.Labels[k] = v
		default:
			data, err := json.Marshal(v)
			if err != nil {
				data = []byte(fmt.Sprint(v))
			}
			ev.Labels[k] = string(data)
		}
	}
	return ev
}
