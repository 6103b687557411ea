// Package resilience owns what wraps every outbound call: timeouts,
// retries with backoff and a budget, the per-service circuit breaker,
// per-endpoint ejection and overload limits. It reads its policy types
// from config and imports no other meshd package.
package resilience
