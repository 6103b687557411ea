//go:build tools

// Package fortio pins the fortio load generator and echo server that the
// performance harness in bench/ drives. It is a separate module so that
// fortio's dependencies never enter meshd's own go.mod. Newer fortio
// releases need a module the Go module proxy used here does not serve;
// v1.68.2 builds from the proxy alone.
package fortio

import _ "fortio.org/fortio"
