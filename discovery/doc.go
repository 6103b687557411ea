// Package discovery is the seam between the proxy and the sources of
// endpoints (static lists, Consul): endpoints for a service name, and a
// notification when they change. It imports no other meshd package.
package discovery
