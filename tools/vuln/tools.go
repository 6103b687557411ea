//go:build tools

// Package tools pins govulncheck and the Go vulnerability database that
// `make lint` checks meshd against. The database comes as a Go module
// (golang.org/x/vulndb, its OSV files), so the check needs only the Go
// module proxy, not vuln.go.dev.
package tools

import (
	_ "golang.org/x/vuln/cmd/govulncheck"
	_ "golang.org/x/vulndb/cmd/indexdb"
)
