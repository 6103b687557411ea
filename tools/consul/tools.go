//go:build tools

// Package consul pins the Consul agent that meshd's discovery tests run
// against. It is a separate module so that the agent's large dependency
// graph never enters meshd's own go.mod.
package consul

import _ "github.com/hashicorp/consul"
