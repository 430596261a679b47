package objectstore

import (
	"testing"
	"time"
)

// TestBackoff: exponential from 100 ms, jittered within [d/2, d], capped.
func TestBackoff(t *testing.T) {
	maxB := 2 * time.Second
	for attempt := 1; attempt <= 40; attempt++ {
		d := min(maxB, retryBaseDelay<<min(attempt-1, 30))
		for i := 0; i < 50; i++ {
			got := backoff(attempt, maxB)
			if got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, got, d/2, d)
			}
		}
	}
}

// TestRetryPolicyDefaults: zero values mean the documented defaults.
func TestRetryPolicyDefaults(t *testing.T) {
	var p RetryPolicy
	if p.deadline() != DefaultRetryDeadline || p.maxBackoff() != DefaultMaxBackoff {
		t.Errorf("defaults %v %v", p.deadline(), p.maxBackoff())
	}
	if r := p.Retryer(); r.MaxAttempts() != retryMaxAttempts {
		t.Errorf("MaxAttempts %d", r.MaxAttempts())
	}
}
