// goheap.go: Go heap-growth fixtures for leaktracer.
//
// Usage: goheap SCENARIO [-n N] [-rate R] [-mode batch|continuous]
// Scenarios (continuous by default; batch: each "go" inserts N values, default 100):
//   unbounded  map-backed cache that never evicts (the leak)
//   bounded    FIFO/LRU-like cache with LT_CAPACITY entries (default 32), evicts
//   garbage    allocates and drops values at 10x the rate (never retained)
//   both       all three side by side (default for demos)
// Env: LT_RATE (inserts/s, default 20), LT_VALUE_SIZE (bytes, default 65536),
//      LT_CAPACITY, LT_MEMPROFILERATE (if set: runtime.MemProfileRate at start of
//      main; 1 => every allocation is sampled, so the heap profile is exact),
//      LT_GOROUTINE_DUMP / LT_HEAP_DUMP for SIGUSR1 / SIGUSR2.
// Protocol: marker lines, ready, go/done, stop, expect, EOF => exit 0.
//
// expect kinds printed here:
//   expect heap FILE:LINE OBJECTS BYTES   live objects/bytes allocated at that line
//                                         (exact; compare with a heap profile taken
//                                         after two GCs, scaled unless rate==1)
//   expect allocs FILE:LINE OBJECTS BYTES total ever allocated at that line
//   expect memprofilerate runtime N
//
// This program references pprof.Lookup("heap"), so the heap profiler is linked
// and MemProfileRate keeps its default (524288) unless LT_MEMPROFILERATE is set.
package main

import (
	"bufio"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const srcFile = "goheap.go"

//go:embed goheap.go
var selfSource string

// ---------------------------------------------------------------- output / markers

var outMu sync.Mutex

func say(format string, a ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", a...)
}

var markers = map[string]int{}

func parseMarkers() {
	tag := "//" + " @"
	for i, line := range strings.Split(selfSource, "\n") {
		line = strings.TrimRight(line, " \t\r")
		idx := strings.LastIndex(line, tag)
		if idx < 0 {
			continue
		}
		name := line[idx+len(tag):]
		if name == "" || strings.ContainsAny(name, " \t\"`") {
			continue
		}
		if _, dup := markers[name]; dup {
			panic("duplicate marker " + name)
		}
		markers[name] = i + 1
	}
}

func at(name string) string {
	l, ok := markers[name]
	if !ok {
		panic("unknown marker " + name)
	}
	return srcFile + ":" + strconv.Itoa(l)
}

func printMarkers() {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range markers {
		all = append(all, kv{k, v})
	}
	for i := 1; i < len(all); i++ {
		for j := i; j > 0 && all[j].v < all[j-1].v; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	for _, e := range all {
		say("marker %s %s:%d", e.k, srcFile, e.v)
	}
}

// ---------------------------------------------------------------- dumps

func writeAtomically(path string, write func(f *os.File) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func dumpGoroutines() {
	path := os.Getenv("LT_GOROUTINE_DUMP")
	if path == "" {
		say("error LT_GOROUTINE_DUMP not set")
		return
	}
	if err := writeAtomically(path, func(f *os.File) error { return pprof.Lookup("goroutine").WriteTo(f, 2) }); err != nil {
		say("error %v", err)
		return
	}
	say("dumped goroutines")
}

func dumpHeap() {
	path := os.Getenv("LT_HEAP_DUMP")
	if path == "" {
		say("error LT_HEAP_DUMP not set")
		return
	}
	mu.Lock() // no insertion while the profile is published
	defer mu.Unlock()
	runtime.GC()
	runtime.GC()
	if err := writeAtomically(path, func(f *os.File) error { return pprof.Lookup("heap").WriteTo(f, 1) }); err != nil {
		say("error %v", err)
		return
	}
	say("dumped heap")
}

//go:noinline
func handleSignals(c <-chan os.Signal) {
	for s := range c {
		switch s {
		case syscall.SIGUSR1:
			dumpGoroutines()
		case syscall.SIGUSR2:
			dumpHeap()
		}
	}
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return def
}

// ---------------------------------------------------------------- caches

var (
	valueSize = 65536
	capacity  = 32
	mu        sync.Mutex // serialises inserts with dumps and expects
)

// UnboundedCache never evicts: the leak.
type UnboundedCache struct {
	m map[int][]byte
}

// Put stores v under k.
//
//go:noinline
func (c *UnboundedCache) Put(k int, v []byte) {
	c.m[k] = v // @unbounded-mapassign
}

// BoundedCache keeps at most cap entries, evicting the oldest (FIFO ring of keys).
type BoundedCache struct {
	m    map[int][]byte
	ring []int
	head int
	n    int
}

//go:noinline
func (c *BoundedCache) Put(k int, v []byte) {
	if c.n == len(c.ring) { // full: evict the oldest entry
		delete(c.m, c.ring[c.head])
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
	c.ring[(c.head+c.n)%len(c.ring)] = k
	c.n++
	c.m[k] = v // @bounded-mapassign
}

// fill writes a deterministic pattern so the pages are really touched.
//
//go:noinline
func fill(v []byte, k int) {
	for i := 0; i < len(v); i += 512 {
		v[i] = byte(k + i)
	}
}

var (
	unbounded = &UnboundedCache{m: map[int][]byte{}}
	bounded   *BoundedCache
	unbN      int64 // values inserted into the unbounded cache
	bndN      int64 // values inserted into the bounded cache
	garbN     int64 // garbage values allocated
	garbSink  int64
)

//go:noinline
func loadUnbounded(k int) {
	v := make([]byte, valueSize) // @unbounded-alloc
	fill(v, k)
	unbounded.Put(k, v)
	unbN++
}

//go:noinline
func loadBounded(k int) {
	v := make([]byte, valueSize) // @bounded-alloc
	fill(v, k)
	bounded.Put(k, v)
	bndN++
}

//go:noinline
func makeGarbage(k int) {
	v := make([]byte, valueSize) // @garbage-alloc
	fill(v, k)
	garbSink += int64(v[0])
	garbN++
}

func newBounded(capacity int) *BoundedCache {
	return &BoundedCache{m: map[int][]byte{}, ring: make([]int, capacity)}
}

var key = 0

func step(scen string) {
	mu.Lock()
	defer mu.Unlock()
	key++
	switch scen {
	case "unbounded":
		loadUnbounded(key)
	case "bounded":
		loadBounded(key)
	case "garbage":
		for i := 0; i < 10; i++ {
			makeGarbage(key)
		}
	case "both":
		loadUnbounded(key)
		loadBounded(key)
		for i := 0; i < 10; i++ {
			makeGarbage(key)
		}
	}
}

func expectAll() {
	mu.Lock()
	defer mu.Unlock()
	sz := int64(valueSize)
	live := bndN
	if live > int64(capacity) {
		live = int64(capacity)
	}
	say("expect heap %s %d %d", at("unbounded-alloc"), unbN, unbN*sz)
	say("expect allocs %s %d %d", at("unbounded-alloc"), unbN, unbN*sz)
	say("expect heap %s %d %d", at("bounded-alloc"), live, live*sz)
	say("expect allocs %s %d %d", at("bounded-alloc"), bndN, bndN*sz)
	say("expect heap %s 0 0", at("garbage-alloc"))
	say("expect allocs %s %d %d", at("garbage-alloc"), garbN, garbN*sz)
	say("expect heap-func main.loadUnbounded %d %d", unbN, unbN*sz)
	say("expect heap-func main.loadBounded %d %d", live, live*sz)
	say("expect heap-func main.makeGarbage 0 0")
	say("expect entries main.UnboundedCache %d", len(unbounded.m))
	n := 0
	if bounded != nil {
		n = len(bounded.m)
	}
	say("expect entries main.BoundedCache %d", n)
}

type pacer struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	on    bool
}

func (p *pacer) run(r float64, fn func()) {
	if p.on {
		return
	}
	p.on = true
	p.stopc = make(chan struct{})
	p.wg.Add(1)
	go func() { // @go-driver
		defer p.wg.Done()
		interval := time.Duration(float64(time.Second) / r)
		next := time.Now()
		for {
			select {
			case <-p.stopc:
				return
			default:
			}
			fn()
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-p.stopc:
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
	}()
}

func (p *pacer) halt() {
	if p.on {
		close(p.stopc)
		p.wg.Wait()
		p.on = false
	}
}

func main() {
	if v := os.Getenv("LT_MEMPROFILERATE"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			runtime.MemProfileRate = n // must happen before the allocations of interest
		}
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goheap SCENARIO [flags]")
		os.Exit(2)
	}
	scen := os.Args[1]
	flagN := flag.Int("n", 0, "inserts per 'go' in batch mode (default 100)")
	flagRate := flag.Float64("rate", 0, "inserts/s in continuous mode (default $LT_RATE or 20)")
	flagMode := flag.String("mode", "continuous", "batch|continuous")
	flag.CommandLine.Parse(os.Args[2:])
	parseMarkers()
	switch scen {
	case "unbounded", "bounded", "garbage", "both":
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", scen)
		os.Exit(2)
	}
	valueSize = envInt("LT_VALUE_SIZE", 65536)
	capacity = envInt("LT_CAPACITY", 32)
	bounded = newBounded(capacity)
	r := envFloat("LT_RATE", 20)
	if *flagRate > 0 {
		r = *flagRate
	}
	n := envInt("LT_N", 100)
	if *flagN > 0 {
		n = *flagN
	}
	continuous := *flagMode != "batch"

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2)
	go handleSignals(sigc) // @go-signals

	printMarkers()
	say("expect version runtime %s", runtime.Version())
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
	say("expect valuesize runtime %d", valueSize)
	say("ready")

	var drv pacer
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := strings.TrimSpace(in.Text()); cmd {
		case "go":
			if continuous {
				drv.run(r, func() { step(scen) })
			} else {
				for i := 0; i < n; i++ {
					step(scen)
				}
				expectAll()
			}
			say("done")
		case "stop":
			drv.halt()
			expectAll()
			say("done")
		case "expect":
			expectAll()
			say("done")
		case "":
		default:
			say("error unknown command %q", cmd)
		}
	}
	drv.halt()
	os.Exit(0)
}
