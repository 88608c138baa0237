package telemetry

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// maxCachedSets bounds each attrCache: the attribute sets of a mesh's
// calls are few (methods × peers × status codes), but a key built from
// what callers send must not grow memory without end. Past the bound,
// sets are built per call.
const maxCachedSets = 4096

// measure is a prebuilt attribute set in the forms the instruments take,
// so that recording a measurement allocates nothing.
type measure struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func newMeasure(kv []attribute.KeyValue) *measure {
	o := metric.WithAttributeSet(attribute.NewSet(kv...))
	return &measure{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// attrCache maps what decides a call's attributes (method, status,
// peer, ...) to its prebuilt measure: building an attribute.Set sorts,
// deduplicates and hashes its attributes, which costs more than the rest
// of a measurement. Safe for concurrent use.
type attrCache[K comparable] struct {
	m sync.Map // K → *measure
	n atomic.Int64
}

// get returns the measure of k, built by build on first use.
func (c *attrCache[K]) get(k K, build func() []attribute.KeyValue) *measure {
	if v, ok := c.m.Load(k); ok {
		return v.(*measure)
	}
	m := newMeasure(build())
	if c.n.Load() >= maxCachedSets {
		return m
	}
	if v, loaded := c.m.LoadOrStore(k, m); loaded {
		return v.(*measure)
	}
	c.n.Add(1)
	return m
}
