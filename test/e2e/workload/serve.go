package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
)

// serveConfig configures the serve subcommand.
type serveConfig struct {
	addr string
}

func parseServe(args []string) (serveConfig, error) {
	c := serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", ":8080", "TCP address to listen on")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if c.addr == "" {
		return c, usageError{errors.New("--addr must not be empty")}
	}
	return c, nil
}

// runServe listens on TCP and answers each connection with hello n=<k> (k counts the
// connections, in memory only, so a restored checkpoint goes on counting) and closes
// it. It prints listening addr=<address> once it accepts, and served n=<k>
// remote=<address> per connection.
func runServe(ctx context.Context, args []string, s stdio) error {
	c, err := parseServe(args)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	writeLine(s.out, "listening addr=%s", ln.Addr())
	for n := 1; ; n++ {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		_, werr := fmt.Fprintf(conn, "hello n=%d\n", n)
		conn.Close()
		if werr != nil {
			writeLine(s.err, "write to %s: %v", conn.RemoteAddr(), werr)
			continue
		}
		writeLine(s.out, "served n=%d remote=%s", n, conn.RemoteAddr())
	}
}
