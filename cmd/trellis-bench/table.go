package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// How a row compares mesh with plain.
const (
	ratio = iota + 1 // mesh / plain
	delta            // mesh - plain
	value            // mesh alone
)

// row is one line of the table. plain is NaN where there is no plain
// variant; a zero limit means the row has no target.
type row struct {
	name        string
	plain, mesh float64
	kind        int
	limit       float64
	atLeast     bool // the target is a minimum, not a maximum
	target      string
}

// score is what the target is checked against.
func (r row) score() float64 {
	switch r.kind {
	case ratio:
		return r.mesh / r.plain
	case delta:
		return r.mesh - r.plain
	default:
		return r.mesh
	}
}

func (r row) compare() string {
	switch r.kind {
	case ratio:
		return fmt.Sprintf("%.3fx", r.score())
	case delta:
		return fmt.Sprintf("%+.4g", r.score())
	default:
		return ""
	}
}

func (r row) verdict() string {
	if r.target == "" {
		return ""
	}
	s := r.score()
	if math.IsNaN(s) {
		return "n/a"
	}
	if (r.atLeast && s >= r.limit) || (!r.atLeast && s <= r.limit) {
		return "met"
	}
	return "MISSED"
}

func num(f float64) string {
	switch {
	case math.IsNaN(f):
		return "-"
	case f == 0:
		return "0"
	case math.Abs(f) >= 1000:
		return fmt.Sprintf("%.0f", f)
	case math.Abs(f) >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.3g", f)
	}
}

// median of xs; NaN if empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile of sorted durations, nearest rank; 0 if empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// samples collects one figure per repetition for the plain and mesh
// variants of a row.
type samples struct {
	plain, mesh []float64
}

func (s *samples) add(mesh bool, v float64) {
	if mesh {
		s.mesh = append(s.mesh, v)
	} else {
		s.plain = append(s.plain, v)
	}
}
