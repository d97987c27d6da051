// Command logger is a containerd logging binary for the e2e tests (binary://
// log URIs): it reads the container's stdout from fd 3 and stderr from fd 4,
// signals readiness through fd 5 (containerd's logging.Run does both), and
// appends "<stream> <id> <line>" lines to the file named by its "out" argument.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/containerd/containerd/v2/core/runtime/v2/logging"
)

func main() {
	// containerd passes the URI's query as "key value" argument pairs.
	var out string
	for i := 1; i+1 < len(os.Args); i += 2 {
		if os.Args[i] == "out" {
			out = os.Args[i+1]
		}
	}
	if out == "" {
		fmt.Fprintln(os.Stderr, "logger: no out argument")
		os.Exit(2)
	}
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		var mu sync.Mutex
		var wg sync.WaitGroup
		copyLines := func(name string, r io.Reader) {
			defer wg.Done()
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				mu.Lock()
				fmt.Fprintf(f, "%s %s %s\n", name, cfg.ID, sc.Text())
				mu.Unlock()
			}
		}
		wg.Add(2)
		go copyLines("stdout", cfg.Stdout)
		go copyLines("stderr", cfg.Stderr)
		if err := ready(); err != nil {
			return err
		}
		wg.Wait()
		mu.Lock()
		fmt.Fprintf(f, "closed %s\n", cfg.ID)
		mu.Unlock()
		return nil
	})
}
