package harness

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// RandomID returns prefix-<8 random hex digits>, for container, task and namespace IDs.
func RandomID(prefix string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// LineBuffer is an io.Writer that collects lines and can be queried while written
// to, e.g. as a task's stdout through cio.WithStreams(nil, lb, lb).
type LineBuffer struct {
	mu      sync.Mutex
	lines   []string
	partial strings.Builder
	changed chan struct{} // closed and replaced on every write
}

// NewLineBuffer returns an empty LineBuffer.
func NewLineBuffer() *LineBuffer {
	return &LineBuffer{changed: make(chan struct{})}
}

// Write implements io.Writer.
func (b *LineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := string(p)
	for {
		line, after, ok := strings.Cut(rest, "\n")
		if !ok {
			b.partial.WriteString(rest)
			break
		}
		b.partial.WriteString(line)
		b.lines = append(b.lines, strings.TrimSuffix(b.partial.String(), "\r"))
		b.partial.Reset()
		rest = after
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

// Lines returns the complete lines written so far, without line endings.
func (b *LineBuffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

// Len returns the number of complete lines written so far.
func (b *LineBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines)
}

// String returns everything written so far.
func (b *LineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.Join(b.lines, "\n")
	if len(b.lines) > 0 {
		s += "\n"
	}
	return s + b.partial.String()
}

// WaitFor waits for a complete line matching pattern and returns it; it fails the test
// after timeout.
func (b *LineBuffer) WaitFor(t testing.TB, pattern string, timeout time.Duration) string {
	t.Helper()
	line, _ := b.WaitForFrom(t, 0, pattern, timeout)
	return line
}

// WaitForFrom waits for a complete line with index >= from that matches pattern and
// returns it with its index; it fails the test after timeout. Pass Len() as from to
// wait for output that has not been written yet.
func (b *LineBuffer) WaitForFrom(t testing.TB, from int, pattern string, timeout time.Duration) (string, int) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for i := max(from, 0); i < len(b.lines); i++ {
			if re.MatchString(b.lines[i]) {
				line := b.lines[i]
				b.mu.Unlock()
				return line, i
			}
		}
		from = max(from, len(b.lines))
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no line matching %q within %v; output so far:\n%s", pattern, timeout, tail(b.String(), 40))
			return "", -1
		}
	}
}

// WaitForLine reads r line by line until a line matches pattern and returns it; it
// fails the test after timeout or when r ends first. On timeout the reading goroutine
// stays blocked until r is closed.
func WaitForLine(t testing.TB, r io.Reader, pattern string, timeout time.Duration) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	type result struct {
		line string
		ok   bool
		seen []string
	}
	done := make(chan result, 1)
	go func() {
		var seen []string
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSuffix(sc.Text(), "\r")
			if re.MatchString(line) {
				done <- result{line: line, ok: true}
				return
			}
			seen = append(seen[max(0, len(seen)-39):], line)
		}
		done <- result{seen: seen}
	}()
	select {
	case res := <-done:
		if !res.ok {
			t.Fatalf("output ended without a line matching %q; last lines:\n%s", pattern, strings.Join(res.seen, "\n"))
		}
		return res.line
	case <-time.After(timeout):
		t.Fatalf("no line matching %q within %v", pattern, timeout)
		return ""
	}
}

// WaitForFileLine polls the file at path until one of its lines matches pattern and
// returns that line; it fails the test after timeout. The file may not exist yet.
func WaitForFileLine(t testing.TB, path, pattern string, timeout time.Duration) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			lines := strings.Split(string(data), "\n")
			for _, line := range lines[:len(lines)-1] { // the last one is incomplete or empty
				if re.MatchString(line) {
					return line
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %q in %s within %v (read error: %v); content:\n%s", pattern, path, timeout, err, tail(string(data), 40))
			return ""
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
