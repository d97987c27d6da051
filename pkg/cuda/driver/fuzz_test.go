package driver

import (
	"slices"
	"testing"
)

// FuzzParseDeviceMap feeds arbitrary text to the --device-map parser (the
// shim passes its result through the container's environment, and users type
// it). It must never panic; what it accepts names each GPU at most once on
// either side and survives FormatDeviceMap unchanged. Seeds are in
// testdata/fuzz/FuzzParseDeviceMap.
func FuzzParseDeviceMap(f *testing.F) {
	f.Add("GPU-00000000-0000-0000-0000-00000000000a=GPU-00000000-0000-0000-0000-00000000000b")
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := ParseDeviceMap(s)
		if err != nil {
			if pairs != nil {
				t.Fatalf("pairs returned with error %v", err)
			}
			return
		}
		if pairs == nil {
			return // empty map
		}
		olds, news := map[UUID]bool{}, map[UUID]bool{}
		for _, p := range pairs {
			if olds[p.Old] || news[p.New] {
				t.Fatalf("accepted a map naming a GPU twice: %q", s)
			}
			olds[p.Old], news[p.New] = true, true
		}
		again, err := ParseDeviceMap(FormatDeviceMap(pairs))
		if err != nil || !slices.Equal(again, pairs) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}

// FuzzParseUUID: never a panic; an accepted UUID prints in nvidia-smi's form
// and parses back to itself.
func FuzzParseUUID(f *testing.F) {
	f.Add("GPU-00000000-0000-0000-0000-00000000000a")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUUID(s)
		if err != nil {
			return
		}
		back, err := ParseUUID(u.String())
		if err != nil || back != u {
			t.Fatalf("%q parsed to %s, which parses to %s, %v", s, u, back, err)
		}
	})
}
