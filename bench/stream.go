package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// The opaque-TCP figure: a stream of N bytes sent to a sink, straight or
// through one or more CONNECT tunnels. The sender writes an 8-byte length,
// then the bytes; the sink reads exactly that many and answers with the
// same 8-byte length. The time runs from the first byte of the stream (after
// the CONNECT handshakes) to the sink's answer, so it is the time to
// deliver the whole stream. No half-close is needed, so every proxy carries
// it the same way.

const streamChunk = 256 << 10

// sinkMain is `bench sink -addr 127.0.0.1:PORT`: it serves until killed,
// or for -max-life at most.
func sinkMain(args []string) int {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "loopback address to listen on")
	maxLife := fs.Duration("max-life", 2*time.Hour, "exit after this long whatever happens")
	_ = fs.Parse(args)
	if !isLoopbackAddr(*addr) {
		fmt.Fprintln(os.Stderr, "sink: address must be on 127.0.0.1")
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		return 1
	}
	time.AfterFunc(*maxLife, func() { os.Exit(0) })
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sink:", err)
			return 1
		}
		go sinkConn(c)
	}
}

func sinkConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := binary.BigEndian.Uint64(hdr[:])
	buf := make([]byte, streamChunk)
	var got uint64
	for got < n {
		want := min(uint64(len(buf)), n-got)
		k, err := c.Read(buf[:want])
		got += uint64(k)
		if err != nil {
			return
		}
	}
	_, _ = c.Write(hdr[:])
}

type streamResult struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// streamMain is `bench stream -addr A -hops H -authority sink:443 -bytes N`:
// it prints a streamResult as JSON.
func streamMain(args []string) int {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	addr := fs.String("addr", "", "loopback address to connect to")
	hops := fs.Int("hops", 0, "CONNECT handshakes to make before the stream (one per proxy)")
	authority := fs.String("authority", "sink:443", "CONNECT target")
	n := fs.Int64("bytes", 1<<30, "stream length")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	res, err := runStream(*addr, *hops, *authority, *n, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stream:", err)
		return 1
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func runStream(addr string, hops int, authority string, n int64, timeout time.Duration) (streamResult, error) {
	if !isLoopbackAddr(addr) {
		return streamResult{}, errors.New("address must be on 127.0.0.1")
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return streamResult{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(c)
	for i := range hops {
		req := "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			return streamResult{}, err
		}
		status, err := br.ReadString('\n')
		if err != nil {
			return streamResult{}, fmt.Errorf("CONNECT %d: %w", i+1, err)
		}
		if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
			return streamResult{}, fmt.Errorf("CONNECT %d: %q", i+1, strings.TrimSpace(status))
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return streamResult{}, fmt.Errorf("CONNECT %d: %w", i+1, err)
			}
			if line == "\r\n" || line == "\n" {
				break
			}
		}
	}
	buf := make([]byte, streamChunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return streamResult{}, err
	}
	for left := n; left > 0; {
		k := min(int64(len(buf)), left)
		if _, err := c.Write(buf[:k]); err != nil {
			return streamResult{}, err
		}
		left -= k
	}
	var ack [8]byte
	if _, err := io.ReadFull(br, ack[:]); err != nil {
		return streamResult{}, fmt.Errorf("waiting for the sink: %w", err)
	}
	el := time.Since(start)
	if binary.BigEndian.Uint64(ack[:]) != uint64(n) {
		return streamResult{}, errors.New("sink acknowledged a different length")
	}
	return streamResult{Bytes: n, Seconds: el.Seconds()}, nil
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && host == "127.0.0.1"
}
