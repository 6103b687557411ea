package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// clientFakeConn is a net.Conn that reads from a byte slice.
type clientFakeConn struct {
	r *bytes.Reader
}

func (c *clientFakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *clientFakeConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *clientFakeConn) Close() error                     { return nil }
func (c *clientFakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *clientFakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *clientFakeConn) SetDeadline(time.Time) error      { return nil }
func (c *clientFakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *clientFakeConn) SetWriteDeadline(time.Time) error { return nil }

// clientParsed is a response reduced to what both parsers must agree on.
type clientParsed struct {
	code    int
	length  int64
	header  http.Header
	body    []byte
	trailer http.Header
}

func (p *clientParsed) String() string {
	return fmt.Sprintf("%d length=%d header=%v body=%q trailer=%v", p.code, p.length, p.header, p.body, p.trailer)
}

// clientParseOurs reads a response from data with this package's reader.
func clientParseOurs(data []byte, method string) (*clientParsed, error) {
	tr := &Transport{MaxIdleConnsPerHost: -1, IdleConnTimeout: -1, MaxResponseHeaderBytes: 64 << 10}
	p := &clientPool{t: tr, addr: "fuzz", conns: 1}
	cc := clientNewConn(p, &clientFakeConn{r: bytes.NewReader(data)})
	req := &http.Request{Method: method, Header: http.Header{}}
	resp, err := cc.readResponse(req, req, &clientPlan{}, nil, nil)
	if err != nil {
		cc.close(true, true)
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, fmt.Errorf("101")
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	return &clientParsed{code: resp.StatusCode, length: resp.ContentLength, header: resp.Header, body: body, trailer: resp.Trailer}, nil
}

// clientParseStd reads a response from data as http.Transport does:
// http.ReadResponse, skipping 1xx responses other than 101.
func clientParseStd(data []byte, method string) (*clientParsed, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	req := &http.Request{Method: method, Header: http.Header{}}
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		return &clientParsed{code: resp.StatusCode, length: resp.ContentLength, header: resp.Header, body: body, trailer: resp.Trailer}, nil
	}
}

// FuzzClientResponse checks that whatever response this package's reader
// accepts, net/http's reads the same way: same status, framing, header
// fields, body and trailers. (The reverse need not hold: this reader is
// the stricter one.)
func FuzzClientResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n6;a=b\r\n world\r\n0\r\nX-T: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nset-cookie: a\nSet-Cookie: b\nContent-Length: 0\n\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 404 Not Found\r\nX-A:  b  \r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 \nTrAnsfer-EnCoding:Chunked\n\n0\n\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		ours, err := clientParseOurs(data, method)
		if err != nil {
			return
		}
		std, err := clientParseStd(data, method)
		if err != nil {
			t.Fatalf("accepted %q as %v; net/http rejects it: %v", data, ours, err)
		}
		// net/http drops "Connection: close" from a response's header.
		delete(ours.header, "Connection")
		delete(std.header, "Connection")
		if ours.code != std.code || ours.length != std.length || !bytes.Equal(ours.body, std.body) ||
			!clientSameHeader(ours.header, std.header) || !clientSameHeader(ours.trailer, std.trailer) {
			t.Fatalf("%q:\n ours     %v\n net/http %v", data, ours, std)
		}
	})
}

func clientSameHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
