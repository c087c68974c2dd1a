// goroutines.go: goroutine-leak fixtures for leaktracer.
//
// Usage: goroutines SCENARIO [-n N] [-rate R] [-mode batch|continuous] [-timeout D]
// Scenarios: blocked-send range-unclosed pool churn nil-chan stack-growth deep-block
//            preexisting mutex waitgroup sleep cond misc-waits all-waits
//
// Protocol (stdin/stdout, one line each):
//   out "marker NAME FILE:LINE"  once per // @marker in this file (before ready)
//   out "ready"                  steady-state machinery started
//   in  "go"                     do the scenario work (batch) / start it (continuous)
//   out "expect KIND ID VALUE.." exact figures (a later line with the same KIND ID supersedes)
//   out "done"                   requested work complete (continuous: at once)
//   in  "stop"                   stop continuous work, print exact expects, "done"
//   in  "leakcheck"              Go 1.26(exp)/1.27: write the goroutineleak profile (debug=2)
//                                to $LT_LEAK_DUMP, print "dumped goroutineleak" (or "... unsupported")
//   stdin EOF                    stop continuous work, exit 0
//   SIGUSR1 -> goroutine dump (debug=2) to $LT_GOROUTINE_DUMP, "dumped goroutines"
//   SIGUSR2 -> GC x2 + heap profile (debug=1) to $LT_HEAP_DUMP, "dumped heap"
//
// Because this program references pprof.Lookup("heap"), the linker keeps the
// heap profiler and runtime.MemProfileRate stays at its default (512 KiB).
// See tests/go/noheap for a program that does not (MemProfileRate == 0).
//
// Markers: a comment "// @name" at the end of a line. Line numbers are
// computed at run time from the embedded copy of this file.
package main

import (
	"bufio"
	"context"
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
	"sync/atomic"
	"syscall"
	"time"
)

const srcFile = "goroutines.go"

//go:embed goroutines.go
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

// at returns "goroutines.go:LINE" for a marker.
func at(name string) string {
	l, ok := markers[name]
	if !ok {
		panic("unknown marker " + name)
	}
	return srcFile + ":" + strconv.Itoa(l)
}

func printMarkers() {
	// deterministic order: by line
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

// goMinor returns the minor version of the running toolchain (19 for go1.19.8).
func goMinor() int {
	v := runtime.Version()
	if strings.HasPrefix(v, "go1.") {
		rest := v[4:]
		end := 0
		for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		if n, err := strconv.Atoi(rest[:end]); err == nil {
			return n
		}
	}
	return 99 // devel: assume newest
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
	err := writeAtomically(path, func(f *os.File) error { return pprof.Lookup("goroutine").WriteTo(f, 2) })
	if err != nil {
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
	runtime.GC()
	runtime.GC()
	err := writeAtomically(path, func(f *os.File) error { return pprof.Lookup("heap").WriteTo(f, 1) })
	if err != nil {
		say("error %v", err)
		return
	}
	say("dumped heap")
}

// dumpLeakProfile runs the runtime's goroutine leak detector (a special GC
// cycle that moves goroutines blocked on unreachable channels / sync objects to
// _Gleaked, status 10; they stay in that status) and writes the profile at
// debug=2 (a full goroutine dump where leaked ones show " (leaked)").
func dumpLeakProfile(sc *scenario) {
	p := pprof.Lookup("goroutineleak") // nil before Go 1.26 (1.26 only with GOEXPERIMENT)
	path := os.Getenv("LT_LEAK_DUMP")
	if p == nil || path == "" {
		say("dumped goroutineleak unsupported")
		return
	}
	if sc.expect != nil {
		sc.expect() // settle first
	}
	if err := writeAtomically(path, func(f *os.File) error { return p.WriteTo(f, 2) }); err != nil {
		say("error %v", err)
		return
	}
	if sc.gcleak != nil {
		sc.gcleak()
	}
	say("dumped goroutineleak")
}

//go:noinline
func handleSignals(c <-chan os.Signal) {
	for s := range c { // @signal-loop
		switch s {
		case syscall.SIGUSR1:
			dumpGoroutines()
		case syscall.SIGUSR2:
			dumpHeap()
		}
	}
}

// ---------------------------------------------------------------- scenario plumbing

type scenario struct {
	setup      func()        // before "ready"
	batch      func(n int)   // one "go" in batch mode
	start      func()        // "go" in continuous mode
	stop       func()        // stop continuous work, wait until quiescent
	expect     func()        // print exact expects
	gcleak     func()        // expects for the goroutineleak profile (Go 1.27, 1.26+exp)
	continuous bool          // default mode
}

var (
	flagN       = flag.Int("n", 0, "goroutines per 'go' in batch mode (0 = scenario default)")
	flagRate    = flag.Float64("rate", 0, "per-second rate in continuous mode (0 = scenario default)")
	flagMode    = flag.String("mode", "", "batch|continuous (default depends on scenario)")
	flagTimeout = flag.Duration("timeout", time.Millisecond, "blocked-send: fetch timeout")
)

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

func countN(def int) int {
	if *flagN > 0 {
		return *flagN
	}
	return envInt("LT_N", def)
}

func rate(def float64) float64 {
	if *flagRate > 0 {
		return *flagRate
	}
	return envFloat("LT_RATE", def)
}

// pacer runs fn at r calls/s until stop is closed.
func pace(r float64, stop <-chan struct{}, fn func()) {
	interval := time.Duration(float64(time.Second) / r)
	next := time.Now()
	for {
		select {
		case <-stop:
			return
		default:
		}
		fn()
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
			}
		} else if d < -time.Second {
			next = time.Now() // fell far behind: do not burst
		}
	}
}

// settle waits until cnt reaches want, then gives the goroutines a moment to
// park (they increment the counter immediately before the blocking operation).
func settle(cnt *int64, want int64) {
	for atomic.LoadInt64(cnt) < want {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		runtime.Gosched()
	}
	time.Sleep(30 * time.Millisecond)
}

// continuous helper: a driver goroutine running fn at a rate until stop.
type driver struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	on    bool
}

func (d *driver) run(r float64, fn func()) {
	if d.on {
		return
	}
	d.on = true
	d.stopc = make(chan struct{})
	d.wg.Add(1)
	go func() { // @go-driver
		defer d.wg.Done()
		pace(r, d.stopc, fn)
	}()
}

func (d *driver) halt() {
	if !d.on {
		return
	}
	close(d.stopc)
	d.wg.Wait()
	d.on = false
}

var drv driver

func driverExpect() {
	n := 0
	if drv.on {
		n = 1
	}
	say("expect site %s %d main.(*driver).run main.(*driver).run.func1", at("go-driver"), n)
}

// ---------------------------------------------------------------- blocked-send

var (
	fetchCalls    int64 // fetch calls that timed out (each leaks one sender)
	sendersParked int64 // senders that reached the blocking send
)

//go:noinline
func slowLookup(id int, gaveUp <-chan struct{}) int {
	<-gaveUp // the upstream is always slower than the caller's patience
	return id * 7
}

// fetch starts a worker to compute the result and gives up after timeout.
// The worker then blocks forever on the unbuffered send.
//
//go:noinline
func fetch(id int, timeout time.Duration) (int, bool) {
	ch := make(chan int)
	gaveUp := make(chan struct{})
	go func() { // @go-fetch
		v := slowLookup(id, gaveUp)
		atomic.AddInt64(&sendersParked, 1)
		ch <- v // @fetch-send
	}()
	t := time.NewTimer(timeout)
	select {
	case v := <-ch:
		t.Stop()
		return v, true
	case <-t.C:
		close(gaveUp)
		atomic.AddInt64(&fetchCalls, 1)
		return 0, false
	}
}

func blockedSend() *scenario {
	id := 0
	return &scenario{
		batch: func(n int) {
			for i := 0; i < n; i++ {
				id++
				fetch(id, *flagTimeout)
			}
		},
		start: func() {
			drv.run(rate(50), func() { id++; fetch(id, *flagTimeout) })
		},
		stop: func() { drv.halt() },
		expect: func() {
			n := atomic.LoadInt64(&fetchCalls)
			settle(&sendersParked, n)
			say("expect goroutines main.fetch.func1 %d", n)
			say("expect site %s %d main.fetch main.fetch.func1", at("go-fetch"), n)
			say("expect wait main.fetch.func1 %d chan send", n)
			say("expect block %s %d chan send", at("fetch-send"), n)
		},
		gcleak: func() {
			// ch is referenced only by the blocked sender: unreachable => leaked
			say("expect gcleak main.fetch.func1 %d", atomic.LoadInt64(&fetchCalls))
		},
		continuous: true,
	}
}

// ---------------------------------------------------------------- range-unclosed

var (
	consumersStarted int64
	consumersIdle    int64
)

//go:noinline
func sink(v int) {}

// startConsumer hands items to a consumer goroutine and forgets to close the channel.
//
//go:noinline
func startConsumer(items int) {
	ch := make(chan int)
	atomic.AddInt64(&consumersStarted, 1)
	go func() { // @go-consumer
		sum, got := 0, 0
		for v := range ch { // @range-recv
			sum += v
			got++
			if got == items {
				atomic.AddInt64(&consumersIdle, 1)
			}
		}
		sink(sum)
	}()
	for i := 0; i < items; i++ {
		ch <- i
	}
	// missing: close(ch)
}

func rangeUnclosed() *scenario {
	return &scenario{
		batch: func(n int) {
			for i := 0; i < n; i++ {
				startConsumer(3)
			}
		},
		start: func() { drv.run(rate(50), func() { startConsumer(3) }) },
		stop:  func() { drv.halt() },
		expect: func() {
			n := atomic.LoadInt64(&consumersStarted)
			settle(&consumersIdle, n)
			say("expect goroutines main.startConsumer.func1 %d", n)
			say("expect site %s %d main.startConsumer main.startConsumer.func1", at("go-consumer"), n)
			say("expect wait main.startConsumer.func1 %d chan receive", n)
			say("expect block %s %d chan receive", at("range-recv"), n)
		},
		gcleak: func() {
			say("expect gcleak main.startConsumer.func1 %d", atomic.LoadInt64(&consumersStarted))
		},
		continuous: true,
	}
}

// ---------------------------------------------------------------- pool (not a leak)

const poolSize = 8

var (
	poolJobs    chan int
	poolResults int64
	poolJobsIn  int64
	poolStarted bool
)

//go:noinline
func crunch(v int) int {
	h := uint32(2166136261)
	for i := 0; i < 2000; i++ {
		h ^= uint32(v + i)
		h *= 16777619
	}
	return int(h & 0xff)
}

// poolWorker is started by name (no wrapper closure); it runs with pprof labels
// so Go 1.27 prints "{pool: workers}" in goroutine headers.
//
//go:noinline
func poolWorker() {
	pprof.Do(context.Background(), pprof.Labels("pool", "workers"), func(context.Context) {
		for j := range poolJobs { // @pool-recv
			atomic.AddInt64(&poolResults, int64(crunch(j)))
		}
	})
}

//go:noinline
func startPool() {
	poolJobs = make(chan int, 64)
	for i := 0; i < poolSize; i++ {
		go poolWorker() // @go-pool
	}
	poolStarted = true
}

func pool() *scenario {
	return &scenario{
		batch: func(n int) {
			if !poolStarted {
				startPool()
			}
			for i := 0; i < n; i++ {
				poolJobs <- i
				atomic.AddInt64(&poolJobsIn, 1)
			}
		},
		start: func() {
			if !poolStarted {
				startPool()
			}
			// feed jobs in bursts of 20 at rate/20 bursts per second
			drv.run(rate(2000)/20, func() {
				for i := 0; i < 20; i++ {
					poolJobs <- i
					atomic.AddInt64(&poolJobsIn, 1)
				}
			})
		},
		stop: func() { drv.halt() },
		expect: func() {
			n := 0
			if poolStarted {
				n = poolSize
			}
			say("expect goroutines main.poolWorker %d", n)
			say("expect site %s %d main.startPool main.poolWorker", at("go-pool"), n)
			say("expect jobs main.poolWorker %d", atomic.LoadInt64(&poolJobsIn))
		},
		continuous: true,
	}
}

// ---------------------------------------------------------------- churn (not a leak)

var churnCreated int64

//go:noinline
func churnBatch(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		v := i
		go func() { // @go-churn
			crunchSmall(v)
			wg.Done()
		}()
	}
	wg.Wait()
	atomic.AddInt64(&churnCreated, int64(n))
}

var churnSink int64

//go:noinline
func crunchSmall(v int) {
	h := v
	for i := 0; i < 50; i++ {
		h = h*31 + i
	}
	atomic.AddInt64(&churnSink, int64(h&1))
}

func churn() *scenario {
	return &scenario{
		batch: func(n int) { churnBatch(n) },
		start: func() {
			// batches of 100 goroutines; default 5000 goroutines/s
			drv.run(rate(5000)/100, func() { churnBatch(100) })
		},
		stop: func() { drv.halt() },
		expect: func() {
			say("expect goroutines main.churnBatch.func1 0")
			say("expect site %s 0 main.churnBatch main.churnBatch.func1", at("go-churn"))
			say("expect created %s %d", at("go-churn"), atomic.LoadInt64(&churnCreated))
		},
		continuous: true,
	}
}

// ---------------------------------------------------------------- nil-chan / select forever

var nilParked int64

//go:noinline
func nilChan() chan int { return nil }

//go:noinline
func nilSend() {
	c := nilChan()
	atomic.AddInt64(&nilParked, 1)
	c <- 1 // @nil-send
}

//go:noinline
func nilRecv() {
	c := nilChan()
	atomic.AddInt64(&nilParked, 1)
	<-c // @nil-recv
}

//go:noinline
func selectNoCases() {
	atomic.AddInt64(&nilParked, 1)
	select {} // @select-nocases
}

//go:noinline
func selectAllNil() {
	a, b := nilChan(), nilChan()
	atomic.AddInt64(&nilParked, 1)
	select { // @select-allnil
	case <-a:
	case b <- 1:
	}
}

var liveA, liveB = make(chan int), make(chan int) // never used by anyone else: a live (non-nil) select

//go:noinline
func selectLive() {
	atomic.AddInt64(&nilParked, 1)
	select { // @select-live
	case <-liveA:
	case liveB <- 1:
	}
}

var nilCount int

//go:noinline
func startNilWaiters(n int) {
	for i := 0; i < n; i++ {
		go nilSend()       // @go-nilsend
		go nilRecv()       // @go-nilrecv
		go selectNoCases() // @go-nocases
		go selectAllNil()  // @go-allnil
		go selectLive()    // @go-selectlive
	}
	nilCount += n
}

func nilChanScenario() *scenario {
	return &scenario{
		batch: func(n int) { startNilWaiters(n) },
		expect: func() {
			n := nilCount
			settle(&nilParked, int64(5*n))
			for _, e := range []struct{ fn, site, state string }{
				{"main.nilSend", "go-nilsend", "chan send (nil chan)"},
				{"main.nilRecv", "go-nilrecv", "chan receive (nil chan)"},
				{"main.selectNoCases", "go-nocases", "select (no cases)"},
				{"main.selectAllNil", "go-allnil", "select"},
				{"main.selectLive", "go-selectlive", "select"},
			} {
				say("expect goroutines %s %d", e.fn, n)
				say("expect site %s %d main.startNilWaiters %s", at(e.site), n, e.fn)
				say("expect wait %s %d %s", e.fn, n, e.state)
			}
			// blocked forever: nil-chan send/recv, select{}, select with only nil channels (g.waiting == nil)
			say("expect forever main.nilSend %d", n)
			say("expect forever main.nilRecv %d", n)
			say("expect forever main.selectNoCases %d", n)
			say("expect forever main.selectAllNil %d", n)
			say("expect forever main.selectLive 0")
		},
		gcleak: func() {
			for _, fn := range []string{"main.nilSend", "main.nilRecv", "main.selectNoCases", "main.selectAllNil"} {
				say("expect gcleak %s %d", fn, nilCount)
			}
			say("expect gcleak main.selectLive 0") // liveA/liveB are globals: reachable
		},
		continuous: false,
	}
}

// ---------------------------------------------------------------- stack-growth

var (
	sgWorkers = 4
	sgDepth   = 8000
	sgRound   = make([]chan int, 0)
	sgDone    = make(chan struct{}, 64)
	sgRounds  int
	sgXor     uint64
	sgMu      sync.Mutex
)

// grow recurses depth frames; each frame keeps a 32-word array live across the
// call so a depth of 8000 needs > 2 MiB of stack.
//
//go:noinline
func grow(depth int, acc uint64) uint64 {
	var pad [32]uint64
	for i := range pad {
		pad[i] = acc + uint64(i*depth)
	}
	var r uint64
	if depth == 0 {
		r = leaf(acc) // @grow-leaf
	} else {
		r = grow(depth-1, acc*6364136223846793005+uint64(depth)) // @grow-recurse
	}
	for i := range pad {
		r ^= pad[i] * uint64(i+1)
	}
	return r
}

// leaf runs at the bottom of a deep stack and does things the tracer probes:
// a goroutine creation, a park (channel receive), heap defers and an allocation.
//
//go:noinline
func leaf(acc uint64) uint64 {
	ch := make(chan uint64)
	go func() { // @go-leafhelper
		ch <- acc * 3
	}()
	v := <-ch // @leaf-recv
	v ^= deferLoop(acc)
	buf := make([]byte, 4096+int(acc%4096)) // @leaf-alloc
	buf[len(buf)-1] = byte(acc)
	return v + uint64(buf[len(buf)-1])
}

//go:noinline
func deferLoop(acc uint64) (r uint64) {
	for i := 0; i < 3; i++ {
		k := uint64(i)
		defer func() { r = r*131 + acc + k }() // @leaf-defer
	}
	return 1
}

func sgWorker(idx int, rounds <-chan int) {
	for round := range rounds { // @sg-wait
		v := grow(sgDepth, uint64(idx*1000003+round))
		say("checksum g=%d round=%d depth=%d value=%016x", idx, round, sgDepth, v)
		sgMu.Lock()
		sgXor ^= v
		sgMu.Unlock()
		sgDone <- struct{}{}
	}
}

var sgStarted bool

//go:noinline
func startStackWorkers() {
	for i := 0; i < sgWorkers; i++ {
		c := make(chan int)
		sgRound = append(sgRound, c)
		idx := i
		go func() { // @go-sgworker
			sgWorker(idx, c)
		}()
	}
	sgStarted = true
}

func sgDoRound() {
	r := sgRounds
	sgRounds++
	for _, c := range sgRound {
		c <- r
	}
	for range sgRound {
		<-sgDone
	}
	// shrink the stacks again (GC halves an idle goroutine's stack when it uses < 1/4)
	runtime.GC()
	runtime.GC()
}

func stackGrowth() *scenario {
	return &scenario{
		setup: func() {
			sgWorkers = envInt("LT_SG_WORKERS", 4)
			sgDepth = envInt("LT_SG_DEPTH", 8000)
			startStackWorkers()
		},
		batch: func(n int) {
			for i := 0; i < n; i++ {
				sgDoRound()
			}
		},
		start: func() { drv.run(rate(10), sgDoRound) },
		stop:  func() { drv.halt() },
		expect: func() {
			say("expect goroutines main.startStackWorkers.func1 %d", sgWorkers)
			say("expect site %s %d main.startStackWorkers main.startStackWorkers.func1", at("go-sgworker"), sgWorkers)
			say("expect site %s 0 main.leaf main.leaf.func1", at("go-leafhelper"))
			say("expect created %s %d", at("go-leafhelper"), sgRounds*sgWorkers)
			say("expect deferproc %s %d", at("leaf-defer"), 3*sgRounds*sgWorkers)
			say("expect defers %s 0", at("leaf-defer"))
			sgMu.Lock()
			say("expect rounds stack-growth %d", sgRounds)
			say("expect checksum-xor stack-growth %016x", sgXor)
			sgMu.Unlock()
		},
		continuous: false,
	}
}

// ---------------------------------------------------------------- deep-block

var (
	deepParked  int64
	deepStarted int
	deepRelease = make(chan struct{}) // never closed
	deepDepth   = 300
)

// deepPark recurses depth frames and parks at the bottom: Go 1.21+ dumps elide
// the middle frames ("...N frames elided..."); Go <= 1.20 dumps silently stop
// after ~97 frames (outer frames and start function missing); a frame-pointer
// stack walk is truncated by perf_event_max_stack (127).
//
//go:noinline
func deepPark(depth int) int {
	if depth == 0 {
		atomic.AddInt64(&deepParked, 1)
		<-deepRelease // @deep-recv
		return 0
	}
	return deepPark(depth-1) + 1 // @deep-recurse
}

//go:noinline
func startDeep(n int) {
	for i := 0; i < n; i++ {
		go func() { // @go-deep
			deepPark(deepDepth)
		}()
	}
	deepStarted += n
}

func deepBlock() *scenario {
	return &scenario{
		setup: func() { deepDepth = envInt("LT_DEEP_DEPTH", 300) },
		batch: func(n int) { startDeep(n) },
		expect: func() {
			settle(&deepParked, int64(deepStarted))
			say("expect goroutines main.startDeep.func1 %d", deepStarted)
			say("expect site %s %d main.startDeep main.startDeep.func1", at("go-deep"), deepStarted)
			say("expect wait main.startDeep.func1 %d chan receive", deepStarted)
			say("expect block %s %d chan receive", at("deep-recv"), deepStarted)
			// user frames of each stack: deepPark x (depth+1) + main.startDeep.func1.
			// Go <= 1.20 dumps cut it silently at ~97 frames; 1.21+ elide the middle.
			say("expect frames main.startDeep.func1 %d", deepDepth+2)
		},
		gcleak: func() { say("expect gcleak main.startDeep.func1 0") }, // deepRelease is a global
	}
}

// ---------------------------------------------------------------- preexisting

type server struct {
	conns    int64 // handlers started
	waiting  int64 // handlers parked waiting for a request
	nextConn int
}

type conn struct {
	id   int
	reqs chan []byte // the client never sends anything
}

//go:noinline
func (s *server) handleConn(c *conn) {
	atomic.AddInt64(&s.waiting, 1)
	for req := range c.reqs { // @conn-read
		sink(len(req) + c.id)
	}
}

//go:noinline
func (s *server) accept(c *conn) {
	atomic.AddInt64(&s.conns, 1)
	go func() { // @go-handler
		s.handleConn(c)
	}()
}

func (s *server) newConn() {
	s.nextConn++
	s.accept(&conn{id: s.nextConn, reqs: make(chan []byte)})
}

func preexisting() *scenario {
	s := &server{}
	initial := envInt("LT_PREEXISTING", 200)
	return &scenario{
		setup: func() {
			for i := 0; i < initial; i++ {
				s.newConn()
			}
			settle(&s.waiting, int64(initial))
			say("expect preexisting %s %d", at("go-handler"), initial)
			say("expect site %s %d main.(*server).accept main.(*server).accept.func1", at("go-handler"), initial)
		},
		batch: func(n int) {
			for i := 0; i < n; i++ {
				s.newConn()
			}
		},
		start: func() { drv.run(rate(5), s.newConn) },
		stop:  func() { drv.halt() },
		expect: func() {
			n := atomic.LoadInt64(&s.conns)
			settle(&s.waiting, n)
			say("expect goroutines main.(*server).accept.func1 %d", n)
			say("expect site %s %d main.(*server).accept main.(*server).accept.func1", at("go-handler"), n)
			say("expect wait main.(*server).accept.func1 %d chan receive", n)
			say("expect preexisting %s %d", at("go-handler"), initial)
			say("expect after-ready %s %d", at("go-handler"), n-int64(initial))
		},
		gcleak: func() {
			// each conn's channel is referenced only by its blocked handler
			say("expect gcleak main.(*server).accept.func1 %d", atomic.LoadInt64(&s.conns))
		},
		continuous: true,
	}
}

// ---------------------------------------------------------------- sync waits

var (
	waitParked int64
	waitCounts = map[string]int{} // start func -> count
	waitStates = map[string]string{}
	waitSites  = map[string]string{} // start func -> marker
	waitOrder  []string
	mu         sync.Mutex
	rw         sync.RWMutex
	wgNever    sync.WaitGroup
	condMu     sync.Mutex
	cond       = sync.NewCond(&condMu)
	pipes      []*os.File // both ends of every pipe, kept open
	lockedCh   = make(chan int)
	muHeld     bool
	rwPending  int64
)

func addWait(fn, marker, state string, n int) {
	if _, ok := waitCounts[fn]; !ok {
		waitOrder = append(waitOrder, fn)
	}
	waitCounts[fn] += n
	waitStates[fn] = state
	waitSites[fn] = marker
}

// semaphore-based waits were all "semacquire" in Go 1.19; Go 1.20 added
// sync.Mutex.Lock / sync.RWMutex.(R)Lock, Go 1.24 sync.WaitGroup.Wait.
func semState(name string, since int) string {
	if goMinor() >= since {
		return name
	}
	return "semacquire"
}

//go:noinline
func mutexWaiter() {
	atomic.AddInt64(&waitParked, 1)
	mu.Lock() // @mutex-lock
	mu.Unlock()
}

//go:noinline
func rwWriter() {
	atomic.AddInt64(&waitParked, 1)
	atomic.AddInt64(&rwPending, 1)
	rw.Lock() // @rw-lock
	rw.Unlock()
}

//go:noinline
func rwReader() {
	atomic.AddInt64(&waitParked, 1)
	rw.RLock() // @rw-rlock
	rw.RUnlock()
}

//go:noinline
func wgWaiter() {
	atomic.AddInt64(&waitParked, 1)
	wgNever.Wait() // @wg-wait
}

//go:noinline
func sleeper() {
	atomic.AddInt64(&waitParked, 1)
	time.Sleep(1000 * time.Hour) // @sleep
}

//go:noinline
func condWaiter() {
	condMu.Lock()
	atomic.AddInt64(&waitParked, 1)
	cond.Wait() // @cond-wait
	condMu.Unlock()
}

// pipeReader blocks in the network poller ("IO wait"). Each reader has its own
// pipe: a second reader of the same *os.File would wait for the file's read
// lock instead ("semacquire").
//
//go:noinline
func pipeReader(r *os.File) {
	var b [1]byte
	atomic.AddInt64(&waitParked, 1)
	r.Read(b[:]) // @pipe-read
}

//go:noinline
func lockedWaiter() {
	runtime.LockOSThread()
	atomic.AddInt64(&waitParked, 1)
	<-lockedCh // @locked-recv
}

//go:noinline
func startMutexWaiters(n int) {
	if !muHeld {
		mu.Lock() // held forever by whoever called first
		muHeld = true
	}
	for i := 0; i < n; i++ {
		go mutexWaiter() // @go-mutex
	}
	addWait("main.mutexWaiter", "go-mutex", semState("sync.Mutex.Lock", 20), n)
}

var rwStarted bool

//go:noinline
func startRWWaiters(n int) {
	if !rwStarted {
		rw.RLock() // a reader that never leaves
		go rwWriter() // @go-rwwriter
		addWait("main.rwWriter", "go-rwwriter", semState("sync.RWMutex.Lock", 20), 1)
		// the writer must be pending before new readers block
		settle(&rwPending, 1)
		rwStarted = true
	}
	for i := 0; i < n; i++ {
		go rwReader() // @go-rwreader
	}
	addWait("main.rwReader", "go-rwreader", semState("sync.RWMutex.RLock", 20), n)
}

//go:noinline
func startWGWaiters(n int) {
	wgNever.Add(1)
	for i := 0; i < n; i++ {
		go wgWaiter() // @go-wg
	}
	addWait("main.wgWaiter", "go-wg", semState("sync.WaitGroup.Wait", 24), n)
}

//go:noinline
func startSleepers(n int) {
	for i := 0; i < n; i++ {
		go sleeper() // @go-sleep
	}
	addWait("main.sleeper", "go-sleep", "sleep", n)
}

//go:noinline
func startCondWaiters(n int) {
	for i := 0; i < n; i++ {
		go condWaiter() // @go-cond
	}
	addWait("main.condWaiter", "go-cond", "sync.Cond.Wait", n)
}

//go:noinline
func startMiscWaiters(n int) {
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			panic(err)
		}
		pipes = append(pipes, r, w)
		go func() { // @go-pipe
			pipeReader(r)
		}()
		go lockedWaiter() // @go-locked
	}
	addWait("main.startMiscWaiters.func1", "go-pipe", "IO wait", n)
	// The runtime's dump says "chan receive, locked to thread"; the wait reason
	// itself (what leaktracer reports) is "chan receive".
	addWait("main.lockedWaiter", "go-locked", "chan receive", n)
}

var waitStarted int64

func waitScenario(starters ...func(int)) *scenario {
	return &scenario{
		batch: func(n int) {
			total := 0
			for _, f := range starters {
				f(n)
			}
			for _, fn := range waitOrder {
				total += waitCounts[fn]
			}
			waitStarted = int64(total)
		},
		expect: func() {
			settle(&waitParked, waitStarted)
			creators := map[string]string{
				"main.mutexWaiter": "main.startMutexWaiters", "main.rwWriter": "main.startRWWaiters",
				"main.rwReader": "main.startRWWaiters", "main.wgWaiter": "main.startWGWaiters",
				"main.sleeper": "main.startSleepers", "main.condWaiter": "main.startCondWaiters",
				"main.startMiscWaiters.func1": "main.startMiscWaiters", "main.lockedWaiter": "main.startMiscWaiters",
			}
			for _, fn := range waitOrder {
				n := waitCounts[fn]
				say("expect goroutines %s %d", fn, n)
				say("expect site %s %d %s %s", at(waitSites[fn]), n, creators[fn], fn)
				say("expect wait %s %d %s", fn, n, waitStates[fn])
			}
		},
		gcleak: func() {
			// every sync object / channel here is a global (reachable), the pipe
			// readers are in the poller and sleepers on timers: nothing leaks
			for _, fn := range waitOrder {
				say("expect gcleak %s 0", fn)
			}
		},
		continuous: false,
	}
}

// ---------------------------------------------------------------- main

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goroutines SCENARIO [flags]")
		os.Exit(2)
	}
	name := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	parseMarkers()

	var sc *scenario
	defN := 100
	switch name {
	case "blocked-send":
		sc = blockedSend()
	case "range-unclosed":
		sc = rangeUnclosed()
	case "pool":
		sc = pool()
		defN = 1000
	case "churn":
		sc = churn()
		defN = 10000
	case "nil-chan":
		sc = nilChanScenario()
		defN = 3
	case "stack-growth":
		sc = stackGrowth()
		defN = 3
	case "deep-block":
		sc = deepBlock()
		defN = 3
	case "preexisting":
		sc = preexisting()
		defN = 10
	case "mutex":
		sc = waitScenario(startMutexWaiters, startRWWaiters)
		defN = 3
	case "waitgroup":
		sc = waitScenario(startWGWaiters)
		defN = 3
	case "sleep":
		sc = waitScenario(startSleepers)
		defN = 3
	case "cond":
		sc = waitScenario(startCondWaiters)
		defN = 3
	case "misc-waits":
		sc = waitScenario(startMiscWaiters)
		defN = 3
	case "all-waits":
		sc = waitScenario(startMutexWaiters, startRWWaiters, startWGWaiters, startSleepers, startCondWaiters, startMiscWaiters)
		defN = 3
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", name)
		os.Exit(2)
	}
	continuous := sc.continuous
	switch *flagMode {
	case "batch":
		continuous = false
	case "continuous":
		if sc.start == nil {
			fmt.Fprintln(os.Stderr, "scenario has no continuous mode:", name)
			os.Exit(2)
		}
		continuous = true
	case "":
	default:
		fmt.Fprintln(os.Stderr, "bad -mode", *flagMode)
		os.Exit(2)
	}

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2)
	go handleSignals(sigc) // @go-signals

	printMarkers()
	say("expect version runtime %s", runtime.Version())
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
	say("expect site %s 1 main.main main.handleSignals", at("go-signals"))
	if sc.setup != nil {
		sc.setup()
	}
	mode := "batch"
	if continuous {
		mode = "continuous"
	}
	say("expect mode %s %s", name, mode)
	say("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd := strings.TrimSpace(in.Text())
		switch cmd {
		case "go":
			if continuous {
				sc.start()
				driverExpect()
			} else {
				sc.batch(countN(defN))
				sc.expect()
			}
			say("done")
		case "stop":
			if sc.stop != nil {
				sc.stop()
			}
			sc.expect()
			driverExpect()
			say("done")
		case "expect":
			sc.expect()
			say("done")
		case "leakcheck":
			dumpLeakProfile(sc)
		case "":
		default:
			say("error unknown command %q", cmd)
		}
	}
	if sc.stop != nil {
		sc.stop()
	}
	os.Exit(0)
}
