// defers.go: defer-pile / fd-leak fixtures for leaktracer.
//
// Usage: defers SCENARIO [-n N] [-rate R] [-mode batch|continuous]
// Scenarios:
//   pile     each "go" starts a goroutine that opens N files with
//            `f, _ := os.Open(p); defer f.Close()` inside the loop (heap defers)
//            and then BLOCKS before returning: N defers + N fds stay outstanding.
//   fixed    same loop, but each iteration runs in a closure whose single defer is
//            open-coded and runs at the end of the iteration: nothing outstanding.
//   both     pile and fixed side by side (one goroutine each per "go").
//   batch    heap defers in a loop in a function that RETURNS (deferreturn runs
//            them): many deferproc calls, 0 outstanding. Continuous by default.
//   stream   one long-running function opens files at RATE/s with a defer in an
//            endless loop (continuous; the pile grows while traced).
// Env: LT_DIR   directory for the N input files (created if missing; default: a
//               fresh temp dir removed at exit)
//      LT_FILES N (default 10000; -n overrides)   LT_RATE (stream/batch rate)
//      LT_GOROUTINE_DUMP, LT_HEAP_DUMP: SIGUSR1/SIGUSR2 dumps (see goroutines.go).
// Protocol: marker lines, ready, go/done, stop, expect lines, EOF => release every
// blocked pile (its defers run, files close), exit 0.
//
// expect kinds printed here:
//   expect defers FILE:LINE N     outstanding heap defers registered at that defer statement
//   expect deferproc FILE:LINE N  total deferproc calls made at that defer statement
//   expect fds FILE:LINE N        open descriptors opened at that os.Open line
//   expect opened FILE:LINE N     total os.Open calls made at that line
package main

import (
	"bufio"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const srcFile = "defers.go"

//go:embed defers.go
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

// ---------------------------------------------------------------- input files

var (
	dir     string
	nFiles  int
	tempDir bool
)

func fileName(i int) string { return filepath.Join(dir, fmt.Sprintf("f%05d.dat", i)) }

func prepareFiles() {
	dir = os.Getenv("LT_DIR")
	if dir == "" {
		d, err := os.MkdirTemp("", "lt-defers-")
		if err != nil {
			panic(err)
		}
		dir, tempDir = d, true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		panic(err)
	}
	for i := 0; i < nFiles; i++ {
		p := fileName(i)
		if st, err := os.Stat(p); err == nil && st.Size() > 0 {
			continue
		}
		if err := os.WriteFile(p, []byte(strconv.Itoa(i)+"\n"), 0o644); err != nil {
			panic(err)
		}
	}
}

// readOne reads the file's content (a small decimal number).
//
//go:noinline
func readOne(f *os.File) int {
	var b [16]byte
	n, err := f.Read(b[:])
	if err != nil && err != io.EOF {
		panic(err)
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return v
}

// ---------------------------------------------------------------- the bug and the fix

var (
	release     = make(chan struct{}) // closed at exit
	pileWG      sync.WaitGroup        // blocked piles
	pileOpened  int64                 // files opened (and held) by processAllLeaky
	fixedOpened int64                 // files opened (and closed) by processAllFixed
	pileSum     int64
	fixedSum    int64
)

// processAllLeaky is the classic bug: the deferred Close calls only run when the
// function returns, and it blocks before returning.
//
//go:noinline
func processAllLeaky(n int, opened chan<- int) int {
	total := 0
	for i := 0; i < n; i++ {
		f, err := os.Open(fileName(i)) // @leaky-open
		if err != nil {
			panic(err)
		}
		defer f.Close() // @leaky-defer
		total += readOne(f)
		atomic.AddInt64(&pileOpened, 1)
	}
	opened <- total
	atomic.AddInt64(&blockedPiles, 1)
	<-release // @leaky-block
	return total
}

// processAllFixed closes each file at the end of its iteration: the defer lives
// in a per-iteration closure (open-coded, no runtime.deferproc call).
//
//go:noinline
func processAllFixed(n int, opened chan<- int) int {
	total := 0
	for i := 0; i < n; i++ {
		total += func() int {
			f, err := os.Open(fileName(i)) // @fixed-open
			if err != nil {
				panic(err)
			}
			defer f.Close() // @fixed-defer
			atomic.AddInt64(&fixedOpened, 1)
			return readOne(f)
		}()
	}
	opened <- total
	atomic.AddInt64(&blockedPiles, 1)
	<-release // @fixed-block
	return total
}

var (
	pileGoroutines  int
	fixedGoroutines int
	blockedPiles    int64 // piles about to block on <-release
)

// settle waits until every started pile has reached its final receive, then
// gives it a moment to park.
func settle() {
	for atomic.LoadInt64(&blockedPiles) < int64(pileGoroutines+fixedGoroutines) {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		runtime.Gosched()
	}
	time.Sleep(30 * time.Millisecond)
}

//go:noinline
func startPile(n int) {
	opened := make(chan int)
	pileWG.Add(1)
	go func() { // @go-pile
		defer pileWG.Done()
		processAllLeaky(n, opened)
	}()
	atomic.AddInt64(&pileSum, int64(<-opened))
	pileGoroutines++
}

//go:noinline
func startFixed(n int) {
	opened := make(chan int)
	pileWG.Add(1)
	go func() { // @go-fixed
		defer pileWG.Done()
		processAllFixed(n, opened)
	}()
	atomic.AddInt64(&fixedSum, int64(<-opened))
	fixedGoroutines++
}

// ---------------------------------------------------------------- balanced heap defers

var (
	batchCalls  int64
	batchOpened int64
	batchSize   = 8
)

// checksumBatch has a defer in a loop (heap defers via runtime.deferproc) but
// returns, so runtime.deferreturn runs them all: outstanding 0 afterwards.
//
//go:noinline
func checksumBatch(start, k int) int {
	total := 0
	for i := 0; i < k; i++ {
		f, err := os.Open(fileName((start + i) % nFiles)) // @batch-open
		if err != nil {
			panic(err)
		}
		defer f.Close() // @batch-defer
		total += readOne(f)
		atomic.AddInt64(&batchOpened, 1)
	}
	atomic.AddInt64(&batchCalls, 1)
	return total
}

// ---------------------------------------------------------------- stream (endless loop with defer)

var (
	streamOpened int64
	streamStop   = make(chan struct{})
	streamTick   = make(chan struct{})
	streamWG     sync.WaitGroup
	streamOn     bool
	streamAck    = make(chan struct{})
)

// tailFiles is the long-running variant of the bug: a defer inside an endless
// loop of a function that only returns at shutdown.
//
//go:noinline
func tailFiles(tick <-chan struct{}, stop <-chan struct{}) {
	i := 0
	for {
		select {
		case <-stop:
			return
		case <-tick:
		}
		f, err := os.Open(fileName(i % nFiles)) // @stream-open
		if err != nil {
			panic(err)
		}
		defer f.Close() // @stream-defer
		readOne(f)
		i++
		atomic.AddInt64(&streamOpened, 1)
		streamAck <- struct{}{}
	}
}

// ---------------------------------------------------------------- driver

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

var drv pacer

func streamStep() {
	streamTick <- struct{}{}
	<-streamAck
}

func expectAll(scen string) {
	settle()
	po := atomic.LoadInt64(&pileOpened)
	fo := atomic.LoadInt64(&fixedOpened)
	bo := atomic.LoadInt64(&batchOpened)
	so := atomic.LoadInt64(&streamOpened)
	say("expect defers %s %d", at("leaky-defer"), po)
	say("expect fds %s %d", at("leaky-open"), po)
	say("expect deferproc %s %d", at("leaky-defer"), po)
	say("expect opened %s %d", at("leaky-open"), po)
	say("expect site %s %d main.startPile main.startPile.func1", at("go-pile"), pileGoroutines)
	say("expect block %s %d chan receive", at("leaky-block"), pileGoroutines)
	say("expect defers %s 0", at("fixed-defer"))
	say("expect fds %s 0", at("fixed-open"))
	say("expect deferproc %s 0", at("fixed-defer")) // open-coded
	say("expect opened %s %d", at("fixed-open"), fo)
	say("expect site %s %d main.startFixed main.startFixed.func1", at("go-fixed"), fixedGoroutines)
	say("expect block %s %d chan receive", at("fixed-block"), fixedGoroutines)
	say("expect defers %s 0", at("batch-defer"))
	say("expect fds %s 0", at("batch-open"))
	say("expect deferproc %s %d", at("batch-defer"), bo)
	say("expect opened %s %d", at("batch-open"), bo)
	say("expect calls main.checksumBatch %d", atomic.LoadInt64(&batchCalls))
	say("expect defers %s %d", at("stream-defer"), so)
	say("expect fds %s %d", at("stream-open"), so)
	say("expect deferproc %s %d", at("stream-defer"), so)
	say("expect opened %s %d", at("stream-open"), so)
	n := 0
	if streamOn {
		n = 1
	}
	say("expect site %s %d main.startStream main.startStream.func1", at("go-stream"), n)
	n = 0
	if drv.on {
		n = 1
	}
	say("expect site %s %d main.(*pacer).run main.(*pacer).run.func1", at("go-driver"), n)
	say("expect sum %s %d", scen, atomic.LoadInt64(&pileSum)+atomic.LoadInt64(&fixedSum))
}

//go:noinline
func startStream() {
	if streamOn {
		return
	}
	streamOn = true
	streamWG.Add(1)
	go func() { // @go-stream
		defer streamWG.Done()
		tailFiles(streamTick, streamStop)
	}()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: defers SCENARIO [flags]")
		os.Exit(2)
	}
	scen := os.Args[1]
	flagN := flag.Int("n", 0, "files per pile (default $LT_FILES or 10000)")
	flagRate := flag.Float64("rate", 0, "stream: files/s (default 20); batch: calls/s (default 200)")
	flagMode := flag.String("mode", "", "batch|continuous")
	flag.CommandLine.Parse(os.Args[2:])
	parseMarkers()

	nFiles = envInt("LT_FILES", 10000)
	if *flagN > 0 {
		nFiles = *flagN
	}
	r := envFloat("LT_RATE", 0)
	if *flagRate > 0 {
		r = *flagRate
	}
	continuous := false
	switch scen {
	case "pile", "fixed", "both":
	case "batch", "stream":
		continuous = true
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", scen)
		os.Exit(2)
	}
	switch *flagMode {
	case "batch":
		continuous = false
	case "continuous":
		if scen != "batch" && scen != "stream" {
			fmt.Fprintln(os.Stderr, "no continuous mode for", scen)
			os.Exit(2)
		}
		continuous = true
	}
	prepareFiles()

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2)
	go handleSignals(sigc) // @go-signals

	printMarkers()
	say("expect version runtime %s", runtime.Version())
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
	say("expect files %s %d", dir, nFiles)
	say("expect site %s 1 main.main main.handleSignals", at("go-signals"))
	if scen == "stream" {
		startStream()
	}
	say("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := strings.TrimSpace(in.Text()); cmd {
		case "go":
			switch scen {
			case "pile":
				startPile(nFiles)
			case "fixed":
				startFixed(nFiles)
			case "both":
				startPile(nFiles)
				startFixed(nFiles)
			case "batch":
				if continuous {
					rr := r
					if rr == 0 {
						rr = 200
					}
					k := 0
					drv.run(rr, func() { checksumBatch(k, batchSize); k += batchSize })
				} else {
					for i := 0; i < 100; i++ {
						checksumBatch(i*batchSize, batchSize)
					}
				}
			case "stream":
				if continuous {
					rr := r
					if rr == 0 {
						rr = 20
					}
					drv.run(rr, streamStep)
				} else {
					for i := 0; i < 100; i++ {
						streamStep()
					}
				}
			}
			if !continuous {
				expectAll(scen)
			}
			say("done")
		case "stop":
			drv.halt()
			expectAll(scen)
			say("done")
		case "expect":
			expectAll(scen)
			say("done")
		case "":
		default:
			say("error unknown command %q", cmd)
		}
	}
	drv.halt()
	if streamOn {
		close(streamStop)
		streamWG.Wait()
	}
	close(release)
	pileWG.Wait()
	if tempDir {
		os.RemoveAll(dir)
	}
	os.Exit(0)
}
