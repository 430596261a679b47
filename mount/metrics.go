package mount

import (
	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/fusefs"
	"github.com/csefs/csefs/keycache"
	"github.com/csefs/csefs/metrics"
	"github.com/csefs/csefs/objectstore"
)

// fsMetrics is m as fusefs.Options.Metrics (nil stays a nil interface).
func fsMetrics(m *metrics.Metrics) fusefs.Metrics {
	if m == nil {
		return nil
	}
	return m
}

// registerGauges registers the families read from counters that exist
// anyway: the key cache's hits and misses, the uploads in flight, the
// staging space and the memory budget.
func registerGauges(m *metrics.Metrics, fsys *fusefs.FS, provider cse.Provider, budget *objectstore.Budget) {
	m.AuthFailureReasons(fusefs.AuthFailureReasons)
	c, _ := provider.(*keycache.Cache)
	stat := func(f func(keycache.Stats) uint64) func() float64 {
		return func() float64 {
			if c == nil {
				return 0
			}
			return float64(f(c.Stats()))
		}
	}
	m.CounterFunc("csefs_keycache_hits_total", "Data key unwraps answered from the key cache.", stat(func(s keycache.Stats) uint64 { return s.Hits }))
	m.CounterFunc("csefs_keycache_misses_total", "Data key unwraps that went to the key service (KMS, keyring, exec program).", stat(func(s keycache.Stats) uint64 { return s.Misses }))
	m.GaugeFunc("csefs_uploads_in_flight", "Files open for writing or still uploading (what unmount waits for).", func() float64 { return float64(fsys.OpenWriters()) })
	m.GaugeFunc("csefs_staging_bytes", "Space the encrypted staging files take (bounded by --staging-limit).", func() float64 { return float64(fsys.StagingBytes()) })
	m.LabeledGaugeFunc("csefs_memory_budget_bytes", "The shared read-ahead and upload buffer budget (--memory-budget): state used or free.", "state", []string{"used", "free"},
		func(state string) float64 {
			if state == "used" {
				return float64(budget.Used())
			}
			return float64(budget.Limit() - budget.Used())
		})
}
