package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// listener, connection and timer the proxy starts must end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
