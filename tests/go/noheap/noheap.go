// noheap.go: a program that does NOT link the heap profiler.
//
// The Go linker sets runtime.disableMemoryProfiling when runtime.MemProfile
// (Go <= 1.23) / runtime.memProfileInternal (Go >= 1.24) is unreachable, and
// schedinit then forces runtime.MemProfileRate = 0: no runtime.profilealloc
// calls, no profile specials, no freeSpecial(profile) events. Importing
// runtime/pprof and calling pprof.Lookup (any profile) makes the heap profiler
// reachable, so this file must not import runtime/pprof at all; its goroutine
// dump uses runtime.Stack(buf, true), which is byte-for-byte what
// pprof.Lookup("goroutine").WriteTo(w, 2) writes.
//
// Usage: noheap SCENARIO [-n N] [-rate R] [-mode batch|continuous]
// Scenarios: grow (unbounded map cache, continuous by default; batch: N inserts
//            per "go", default 100) and leak (a blocked-send goroutine leak, batch:
//            N per "go", default 100).
// Env: LT_RATE (default 20/s), LT_VALUE_SIZE (default 65536), LT_GOROUTINE_DUMP.
// Signals: SIGUSR1 -> goroutine dump, "dumped goroutines";
//          SIGUSR2 -> no heap profiler: prints "dumped heap unsupported".
// Expect: "expect memprofilerate runtime 0".
package main

import (
	"bufio"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const srcFile = "noheap.go"

//go:embed noheap.go
var selfSource string

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

func dumpGoroutines() {
	path := os.Getenv("LT_GOROUTINE_DUMP")
	if path == "" {
		say("error LT_GOROUTINE_DUMP not set")
		return
	}
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		say("error %v", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		say("error %v", err)
		return
	}
	say("dumped goroutines")
}

//go:noinline
func handleSignals(c <-chan os.Signal) {
	for s := range c {
		switch s {
		case syscall.SIGUSR1:
			dumpGoroutines()
		case syscall.SIGUSR2:
			runtime.GC()
			runtime.GC()
			say("dumped heap unsupported")
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

// ---------------------------------------------------------------- grow

var (
	mu        sync.Mutex
	cache     = map[int][]byte{}
	valueSize = 65536
	inserted  int64
)

//go:noinline
func remember() {
	v := make([]byte, valueSize) // @grow-alloc
	mu.Lock()
	inserted++
	k := int(inserted)
	for i := 0; i < len(v); i += 512 {
		v[i] = byte(k + i)
	}
	cache[k] = v
	mu.Unlock()
}

// ---------------------------------------------------------------- leak

var (
	leaked int64
	parked int64
)

//go:noinline
func fetch(id int) {
	ch := make(chan int)
	gaveUp := make(chan struct{})
	go func() { // @go-fetch
		<-gaveUp
		atomic.AddInt64(&parked, 1)
		ch <- id // @fetch-send
	}()
	t := time.NewTimer(time.Millisecond)
	select {
	case <-ch:
		t.Stop()
	case <-t.C:
		close(gaveUp)
		atomic.AddInt64(&leaked, 1)
	}
}

func expectAll() {
	mu.Lock()
	n := inserted
	mu.Unlock()
	sz := int64(valueSize)
	say("expect heap %s %d %d", at("grow-alloc"), n, n*sz)
	l := atomic.LoadInt64(&leaked)
	for atomic.LoadInt64(&parked) < l {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	say("expect goroutines main.fetch.func1 %d", l)
	say("expect site %s %d main.fetch main.fetch.func1", at("go-fetch"), l)
	say("expect wait main.fetch.func1 %d chan send", l)
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: noheap grow|leak [flags]")
		os.Exit(2)
	}
	scen := os.Args[1]
	flagN := flag.Int("n", 100, "per 'go' in batch mode")
	flagRate := flag.Float64("rate", 0, "inserts/s (grow, continuous)")
	flagMode := flag.String("mode", "", "batch|continuous")
	flag.CommandLine.Parse(os.Args[2:])
	parseMarkers()
	valueSize = envInt("LT_VALUE_SIZE", 65536)
	r := float64(envInt("LT_RATE", 20))
	if *flagRate > 0 {
		r = *flagRate
	}
	var continuous bool
	switch scen {
	case "grow":
		continuous = *flagMode != "batch"
	case "leak":
		continuous = false
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", scen)
		os.Exit(2)
	}

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2)
	go handleSignals(sigc) // @go-signals

	printMarkers()
	say("expect version runtime %s", runtime.Version())
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
	say("expect site %s 1 main.main main.handleSignals", at("go-signals"))
	say("ready")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	started := false
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := strings.TrimSpace(in.Text()); cmd {
		case "go":
			switch {
			case scen == "grow" && continuous:
				if !started {
					started = true
					wg.Add(1)
					go func() { // @go-grower
						defer wg.Done()
						t := time.NewTicker(time.Duration(float64(time.Second) / r))
						defer t.Stop()
						for {
							select {
							case <-stop:
								return
							case <-t.C:
								remember()
							}
						}
					}()
				}
			case scen == "grow":
				for i := 0; i < *flagN; i++ {
					remember()
				}
				expectAll()
			default:
				for i := 0; i < *flagN; i++ {
					fetch(i)
				}
				expectAll()
			}
			say("done")
		case "stop":
			if started {
				close(stop)
				wg.Wait()
				started = false
				stop = make(chan struct{})
			}
			expectAll()
			say("done")
		case "":
		default:
			say("error unknown command %q", cmd)
		}
	}
	if started {
		close(stop)
		wg.Wait()
	}
	os.Exit(0)
}
