//go:build e2e

// Package task holds the end-to-end tests of the shim's task API: real
// containerd (the pinned 2.4.2, and 2.3.7 for the tests named *Compat*), real
// runsc and the shim binary, driven by ctr and the containerd Go client.
// Checkpoint and restore are tested in test/e2e/checkpoint.
package task

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := buildLoggerOnce(); err == nil && bin != "" {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}
