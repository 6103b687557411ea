package consul

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a watch or its connections outlive
// Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"))
}
