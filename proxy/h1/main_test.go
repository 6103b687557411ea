package h1

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// connection, watch and timer must end with the tests that started them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
