// Package e2e holds meshd's end-to-end tests. They build the real binary
// once per test run and drive it as users do: transparently, with
// "meshd iptables apply" and "meshd run" inside throwaway network
// namespaces (internal/netnstest), or explicitly on loopback ports. The
// package has no code outside its tests.
package e2e
