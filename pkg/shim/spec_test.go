package shim

import (
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckTerminal(t *testing.T) {
	for _, tc := range []struct {
		io   bool
		p    *specs.Process
		fail bool
	}{
		{io: false, p: nil},
		{io: false, p: &specs.Process{}},
		{io: true, p: &specs.Process{Terminal: true}},
		{io: true, p: &specs.Process{}, fail: true},
		{io: true, p: nil, fail: true},
		{io: false, p: &specs.Process{Terminal: true}, fail: true}, // runsc loses the output
	} {
		err := checkTerminal(tc.io, tc.p)
		if (err != nil) != tc.fail || (err != nil && !errdefs.IsInvalidArgument(err)) {
			t.Errorf("checkTerminal(%t, %+v) = %v, want failure %t (invalid argument)", tc.io, tc.p, err, tc.fail)
		}
	}
}
