package pick

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ringEntry is one point of the hash ring.
type ringEntry struct {
	hash uint64
	ep   *endpoint
}

// newRing builds the ring of eps with weights w as grpc-go's ring_hash
// does: endpoints in order of address, each given entries in proportion to
// its weight, so that the lightest has at least ceil(its share × minSize);
// entry i of an endpoint hashes xxhash64(address + "_" + i).
func newRing(eps []*endpoint, w []float64, minSize uint64) []ringEntry {
	if len(eps) == 0 {
		return nil
	}
	var sum float64
	for _, x := range w {
		sum += x
	}
	idx := make([]int, len(eps))
	minWeight := 1.0
	for i := range eps {
		idx[i] = i
		minWeight = min(minWeight, w[i]/sum)
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(eps[a].Address, eps[b].Address) })
	scale := math.Min(math.Ceil(minWeight*float64(minSize))/minWeight, ringSizeCap)
	ring := make([]ringEntry, 0, int(math.Ceil(scale)))
	var current, target float64
	for _, i := range idx {
		target += scale * w[i] / sum
		for n := 0; current < target; n++ {
			ring = append(ring, ringEntry{hash: xxhash64(eps[i].Address + "_" + strconv.Itoa(n)), ep: eps[i]})
			current++
		}
	}
	slices.SortStableFunc(ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return ring
}

// pickRing returns the endpoint of the first entry at or after hash that is
// not ejected.
func (s *snapshot) pickRing(hash uint64) *endpoint {
	i := sort.Search(len(s.ring), func(i int) bool { return s.ring[i].hash >= hash })
	for range s.ring {
		if i == len(s.ring) {
			i = 0
		}
		if e := s.ring[i].ep; !e.host.Ejected() {
			return e
		}
		i++
	}
	return s.ring[i%len(s.ring)].ep // the priority has a usable endpoint: not reached
}

// XXH64 with seed 0, the hash grpc-go's ring_hash uses. The primes are
// variables so that their sums wrap.
var (
	prime1 uint64 = 11400714785074694791
	prime2 uint64 = 14029467366897019727
	prime3 uint64 = 1609587929392839161
	prime4 uint64 = 9650029242287828579
	prime5 uint64 = 2870177450012600261
)

func xxhash64(s string) uint64 {
	b := []byte(s)
	n := len(b)
	var h uint64
	if n >= 32 {
		v1, v2, v3, v4 := prime1+prime2, prime2, uint64(0), -prime1
		for ; len(b) >= 32; b = b[32:] {
			v1 = xxRound(v1, binary.LittleEndian.Uint64(b[0:]))
			v2 = xxRound(v2, binary.LittleEndian.Uint64(b[8:]))
			v3 = xxRound(v3, binary.LittleEndian.Uint64(b[16:]))
			v4 = xxRound(v4, binary.LittleEndian.Uint64(b[24:]))
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = prime5
	}
	h += uint64(n)
	for ; len(b) >= 8; b = b[8:] {
		h ^= xxRound(0, binary.LittleEndian.Uint64(b))
		h = bits.RotateLeft64(h, 27)*prime1 + prime4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b)) * prime1
		h = bits.RotateLeft64(h, 23)*prime2 + prime3
		b = b[4:]
	}
	for _, c := range b {
		h ^= uint64(c) * prime5
		h = bits.RotateLeft64(h, 11) * prime1
	}
	h ^= h >> 33
	h *= prime2
	h ^= h >> 29
	h *= prime3
	h ^= h >> 32
	return h
}

func xxRound(acc, in uint64) uint64 {
	acc += in * prime2
	return bits.RotateLeft64(acc, 31) * prime1
}

func xxMerge(h, v uint64) uint64 {
	h ^= xxRound(0, v)
	return h*prime1 + prime4
}
