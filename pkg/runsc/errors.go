package runsc

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Error is a failed runsc invocation.
type Error struct {
	// Args are the verb and its arguments (no global flags).
	Args   []string
	Status int
	// Msg is runsc's own error message (stderr or its JSON log).
	Msg string
}

func (e *Error) Error() string {
	msg := conciseMsg(strings.TrimSpace(e.Msg))
	if msg == "" {
		msg = "no error message"
	}
	return fmt.Sprintf("runsc %s exited with status %d: %s", strings.Join(e.Args, " "), e.Status, msg)
}

// Is classifies runsc's message in containerd's error classes, so callers
// write errors.Is(err, errdefs.ErrNotFound) and errgrpc.ToGRPC maps the
// error to the right gRPC code:
//
//   - ErrNotFound: the container or process is gone ("... does not exist",
//     "sandbox is not running", "no such process", "in state stopped", a
//     state file that cannot be loaded);
//   - ErrAlreadyExists: "... already exists";
//   - ErrFailedPrecondition: the container is in a state that does not allow
//     the verb ("cannot pause container "x" in state paused"), or its id is
//     ambiguous.
func (e *Error) Is(target error) bool {
	m := strings.ToLower(e.Msg)
	switch target {
	case errdefs.ErrNotFound:
		return notFound(m)
	case errdefs.ErrAlreadyExists:
		return strings.Contains(m, "already exists")
	case errdefs.ErrFailedPrecondition:
		return !notFound(m) && (strings.Contains(m, " in state ") || strings.Contains(m, "is ambiguous"))
	}
	return false
}

func notFound(m string) bool {
	for _, s := range []string{"does not exist", "not running", "no such process", "in state stopped"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return strings.Contains(m, "loading container") && strings.Contains(m, "no such file or directory")
}

// conciseMsg drops the Go stack trace runsc appends to some errors (a
// restore of a damaged image fails in the state decoder with one); the
// trace stays in runsc's debug log.
func conciseMsg(msg string) string {
	i := strings.Index(msg, "\ngoroutine ")
	if i < 0 {
		return msg
	}
	return strings.TrimRight(strings.TrimSpace(msg[:i]), ":") + " (stack trace in runsc's debug log)"
}
