/*
   Adapted from containerd's cmd/containerd-shim-runc-v2/process/io.go.
   Copyright The containerd Authors. Licensed under the Apache License 2.0.
*/

package process

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/console"
	runcproc "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/fifo"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

var bufPool = sync.Pool{
	New: func() any {
		// 32 KiB copies: fewer syscalls than PIPE_BUF-sized ones for chatty
		// workloads, still small per stream.
		buffer := make([]byte, 32<<10)
		return &buffer
	},
}

// processIO is the IO of one process: the pipes runsc gets, and whether the
// shim copies them to containerd's fifos or files (binary loggers read the
// pipes themselves).
type processIO struct {
	io    runc.IO
	copy  bool
	stdio stdio.Stdio
}

func (p *processIO) Close() error {
	if p.io != nil {
		return p.io.Close()
	}
	return nil
}

// createIO builds the IO for the stdio URIs containerd sends: fifo paths (the
// default), file:// and binary:// (logging binaries), or nothing.
func createIO(ctx context.Context, id string, ioUID, ioGID int, sio stdio.Stdio) (*processIO, error) {
	pio := &processIO{stdio: sio}
	if sio.IsNull() {
		i, err := runc.NewNullIO()
		if err != nil {
			return nil, err
		}
		pio.io = i
		return pio, nil
	}
	u, err := url.Parse(sio.Stdout)
	if err != nil {
		return nil, fmt.Errorf("unable to parse stdout uri %q: %w", sio.Stdout, err)
	}
	if u.Scheme == "" {
		u.Scheme = "fifo"
	}
	switch u.Scheme {
	case "fifo":
		pio.copy = true
		pio.io, err = runc.NewPipeIO(ioUID, ioGID, withConditionalIO(sio))
	case "binary", "binary-v2":
		pio.io, err = runcproc.NewBinaryIO(ctx, id, u)
	case "file":
		path := u.Path
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		f, ferr := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if ferr != nil {
			return nil, ferr
		}
		f.Close()
		pio.stdio.Stdout = path
		pio.stdio.Stderr = path
		pio.copy = true
		pio.io, err = runc.NewPipeIO(ioUID, ioGID, withConditionalIO(sio))
	default:
		return nil, fmt.Errorf("unknown STDIO scheme %q: use a fifo path, file:// or binary://", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return pio, nil
}

func withConditionalIO(c stdio.Stdio) runc.IOOpt {
	return func(o *runc.IOOption) {
		o.OpenStdin = c.Stdin != ""
		o.OpenStdout = c.Stdout != ""
		o.OpenStderr = c.Stderr != ""
	}
}

// copyPipes copies the process's stdout/stderr pipes to containerd's fifos or
// files and containerd's stdin fifo into the process. wg tracks the output
// copies (they end when the process closes its side).
func copyPipes(ctx context.Context, rio runc.IO, stdin, stdout, stderr string, wg *sync.WaitGroup) error {
	var sameFile *countingWriteCloser
	for _, i := range []struct {
		name string
		src  func() io.ReadCloser
	}{
		{name: stdout, src: rio.Stdout},
		{name: stderr, src: rio.Stderr},
	} {
		if i.name == "" {
			continue
		}
		src := i.src()
		dest := func(wc io.WriteCloser, rc io.Closer) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := bufPool.Get().(*[]byte)
				defer bufPool.Put(p)
				if _, err := io.CopyBuffer(wc, src, *p); err != nil {
					log.G(ctx).WithError(err).Warn("error copying process output")
				}
				wc.Close()
				if rc != nil {
					rc.Close()
				}
			}()
		}
		ok, err := fifo.IsFifo(i.name)
		if err != nil {
			return err
		}
		if ok {
			fw, err := fifo.OpenFifo(ctx, i.name, syscall.O_WRONLY, 0)
			if err != nil {
				return fmt.Errorf("opening w/o fifo %q failed: %w", i.name, err)
			}
			fr, err := fifo.OpenFifo(ctx, i.name, syscall.O_RDONLY, 0)
			if err != nil {
				fw.Close()
				return fmt.Errorf("opening r/o fifo %q failed: %w", i.name, err)
			}
			dest(fw, fr)
			continue
		}
		if sameFile != nil {
			sameFile.count.Add(1)
			dest(sameFile, nil)
			continue
		}
		fw, err := os.OpenFile(i.name, syscall.O_WRONLY|syscall.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("opening file %q failed: %w", i.name, err)
		}
		if stdout == stderr {
			sameFile = &countingWriteCloser{WriteCloser: fw}
			sameFile.count.Store(1)
			dest(sameFile, nil)
			continue
		}
		dest(fw, nil)
	}
	if stdin == "" {
		return nil
	}
	f, err := fifo.OpenFifo(context.Background(), stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("opening stdin fifo %s failed: %w", stdin, err)
	}
	go func() {
		p := bufPool.Get().(*[]byte)
		defer bufPool.Put(p)
		io.CopyBuffer(rio.Stdin(), f, *p)
		rio.Stdin().Close()
		f.Close()
	}()
	return nil
}

// countingWriteCloser closes the underlying writer only on the last Close,
// for stdout and stderr going to one file.
type countingWriteCloser struct {
	io.WriteCloser
	count atomic.Int64
}

func (c *countingWriteCloser) Close() error {
	if c.count.Add(-1) > 0 {
		return nil
	}
	return c.WriteCloser.Close()
}

// procIO is the IO of a process being started: a console socket when it has
// a terminal, else pipes (or nothing).
type procIO struct {
	sio    stdio.Stdio
	socket *runc.Socket
	pio    *processIO
}

// newProcIO prepares a process's IO before runsc starts it.
func newProcIO(ctx context.Context, id string, ioUID, ioGID int, sio stdio.Stdio) (*procIO, error) {
	p := &procIO{sio: sio}
	if sio.Terminal {
		s, err := runc.NewTempConsoleSocket()
		if err != nil {
			return nil, fmt.Errorf("creating console socket: %w", err)
		}
		p.socket = s
		return p, nil
	}
	pio, err := createIO(ctx, id, ioUID, ioGID, sio)
	if err != nil {
		return nil, fmt.Errorf("creating IO for %s: %w", id, err)
	}
	p.pio = pio
	return p, nil
}

// consoleSocket is what runsc gets as --console-socket (nil without a
// terminal).
func (p *procIO) consoleSocket() runc.ConsoleSocket {
	if p.socket == nil {
		return nil
	}
	return p.socket
}

// pipes is what runsc gets as stdio (nil with a terminal).
func (p *procIO) pipes() runc.IO {
	if p.pio == nil {
		return nil
	}
	return p.pio.io
}

// closeSocket removes the temporary console socket once runsc has used it.
func (p *procIO) closeSocket() {
	if p.socket != nil {
		p.socket.Close()
	}
}

// attach connects a started process's IO with containerd's: the stdin fifo
// (its writer stays open until CloseIO, so the process sees EOF only then)
// and the console or the pipe copies, tracked by wg.
func (p *procIO) attach(ctx context.Context, id string, platform stdio.Platform, wg *sync.WaitGroup) (stdin io.Closer, con console.Console, err error) {
	if p.sio.Stdin != "" {
		sc, err := fifo.OpenFifo(context.Background(), p.sio.Stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("opening stdin fifo %s: %w", p.sio.Stdin, err)
		}
		stdin = sc
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch {
	case p.socket != nil:
		master, err := p.socket.ReceiveMaster()
		if err == nil {
			con, err = platform.CopyConsole(cctx, master, id, p.sio.Stdin, p.sio.Stdout, p.sio.Stderr, wg)
		}
		if err != nil {
			if stdin != nil {
				stdin.Close()
			}
			return nil, nil, fmt.Errorf("setting up the console: %w", err)
		}
	case p.pio.copy:
		// pio.stdio has file:// URIs resolved to paths.
		ps := p.pio.stdio
		if err := copyPipes(cctx, p.pio.io, ps.Stdin, ps.Stdout, ps.Stderr, wg); err != nil {
			if stdin != nil {
				stdin.Close()
			}
			return nil, nil, err
		}
	}
	return stdin, con, nil
}
