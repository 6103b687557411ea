// Package h1 is meshd's own HTTP/1.1 wire layer: a strict server connection
// loop and a lean upstream client transport, both built on net/http's types
// (http.Request, http.Response, http.Handler, http.RoundTripper) but not on
// its connection handling.
//
// The server side (Server) reads requests off a connection that meshd has
// already accepted and classified, hands them to an http.Handler and writes
// the responses back. It parses request heads strictly after RFC 9112: what
// net/http would tolerate and reframe (bare LF line endings, obs-fold,
// Content-Length next to Transfer-Encoding, ...) is answered with 400 Bad
// Request and the connection is closed, so that no two parsers on a
// request's path can disagree on where it ends. It costs no goroutine per
// request: the one that called ServeConn reads, serves and writes.
//
// The client side (Transport) sends requests to upstreams over pooled
// connections.
package h1
