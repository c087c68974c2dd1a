// service.go: a demo "service" (no HTTP) with three realistic bugs running at
// moderate rates until it is killed:
//
//  1. goroutine leak: QuoteClient.FetchQuote gives up after a timeout but its
//     upstream goroutine then blocks forever sending the late answer
//     (main.(*QuoteClient).FetchQuote.func1, "chan send"), ~half of the calls.
//  2. defer pile: Indexer.Watch opens every new segment file with
//     `defer f.Close()` inside its endless loop: defers and open files pile up.
//  3. heap growth: SessionStore.Remember caches session blobs forever.
//
// Healthy activity beside them (must NOT be reported): a fixed worker pool
// (RenderPool, 4 workers), short-lived request goroutines, a bounded
// TemplateCache and a balanced file reader.
//
// Usage: service            (ignores stdin; runs until SIGTERM/SIGINT/SIGKILL)
// Env:   LT_SCALE  rate multiplier (default 1: ~5 leaked goroutines/s,
//                  5 files/s, 80 KiB/s of sessions)
//        LT_DIR    data directory (default: temp dir, removed on SIGTERM/SIGINT)
//        LT_STATUS status line period (default 10s)
//        LT_GOROUTINE_DUMP / LT_HEAP_DUMP for SIGUSR1 / SIGUSR2 (as the fixtures)
// Output: marker lines, "ready", then "status ..." lines with exact counters.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"math/rand"
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

const srcFile = "service.go"

//go:embed service.go
var selfSource string

var outMu sync.Mutex

func say(format string, a ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", a...)
}

func printMarkers() {
	tag := "//" + " @"
	for i, line := range strings.Split(selfSource, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if idx := strings.LastIndex(line, tag); idx >= 0 {
			name := line[idx+len(tag):]
			if name != "" && !strings.ContainsAny(name, " \t\"`") {
				say("marker %s %s:%d", name, srcFile, i+1)
			}
		}
	}
}

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

// ---------------------------------------------------------------- bug 1: goroutine leak

type Quote struct {
	Symbol string
	Price  float64
}

type QuoteClient struct {
	timeout time.Duration
	leaked  int64 // FetchQuote calls that timed out (each leaks its upstream goroutine)
	served  int64
}

// callUpstream simulates a remote call with a random latency of 0..4 ms.
//
//go:noinline
func (c *QuoteClient) callUpstream(symbol string) Quote {
	time.Sleep(time.Duration(rand.Intn(4000)) * time.Microsecond)
	return Quote{Symbol: symbol, Price: float64(len(symbol)) * 10.5}
}

// FetchQuote returns the quote or gives up after c.timeout. BUG: the result
// channel is unbuffered, so a late upstream goroutine blocks forever.
//
//go:noinline
func (c *QuoteClient) FetchQuote(symbol string) (Quote, bool) {
	result := make(chan Quote)
	go func() { // @service-go-upstream
		result <- c.callUpstream(symbol) // @service-leak-send
	}()
	select {
	case q := <-result:
		atomic.AddInt64(&c.served, 1)
		return q, true
	case <-time.After(c.timeout):
		atomic.AddInt64(&c.leaked, 1)
		return Quote{}, false
	}
}

// ---------------------------------------------------------------- bug 2: defer pile

type Indexer struct {
	dir      string
	segments int64 // segment files opened (and still open) by Watch
}

// Watch indexes each new segment. BUG: defer inside the endless loop: the files
// are only closed when Watch returns, which is never.
//
//go:noinline
func (ix *Indexer) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p := filepath.Join(ix.dir, fmt.Sprintf("segment-%06d.log", seq))
		if err := os.WriteFile(p, []byte("segment "+strconv.Itoa(seq)+"\n"), 0o644); err != nil {
			continue
		}
		f, err := os.Open(p) // @service-pile-open
		if err != nil {
			continue
		}
		defer f.Close() // @service-pile-defer
		ix.index(f)
		atomic.AddInt64(&ix.segments, 1)
	}
}

//go:noinline
func (ix *Indexer) index(f *os.File) int {
	b, _ := io.ReadAll(f)
	return len(b)
}

// ReadManifest is the healthy pattern: open, defer close, return.
//
//go:noinline
func (ix *Indexer) ReadManifest() int {
	f, err := os.Open(filepath.Join(ix.dir, "MANIFEST")) // @service-manifest-open
	if err != nil {
		return 0
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return len(b)
}

// ---------------------------------------------------------------- bug 3: heap growth

type SessionStore struct {
	mu       sync.Mutex
	sessions map[string][]byte // BUG: never expires
	bytes    int64
}

//go:noinline
func (s *SessionStore) Remember(id string, size int) {
	blob := make([]byte, size) // @service-session-alloc
	for i := 0; i < len(blob); i += 256 {
		blob[i] = byte(i)
	}
	s.mu.Lock()
	s.sessions[id] = blob
	s.bytes += int64(size)
	s.mu.Unlock()
}

// TemplateCache is bounded (evicts the oldest): not a leak.
type TemplateCache struct {
	mu    sync.Mutex
	m     map[int][]byte
	order []int
	max   int
}

//go:noinline
func (t *TemplateCache) Render(id int) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, ok := t.m[id]; ok {
		return b
	}
	b := make([]byte, 8192) // @service-template-alloc
	t.m[id] = b
	t.order = append(t.order, id)
	if len(t.order) > t.max {
		delete(t.m, t.order[0])
		t.order = t.order[1:]
	}
	return b
}

// ---------------------------------------------------------------- healthy goroutines

type RenderPool struct {
	jobs chan int
	done int64
}

//go:noinline
func (p *RenderPool) worker(tc *TemplateCache) {
	for id := range p.jobs { // @service-pool-recv
		tc.Render(id)
		atomic.AddInt64(&p.done, 1)
	}
}

//go:noinline
func handleRequest(id int, tc *TemplateCache, wg *sync.WaitGroup) {
	defer wg.Done()
	tc.Render(id % 100)
}

// ---------------------------------------------------------------- main

func main() {
	scale := 1.0
	if v, err := strconv.ParseFloat(os.Getenv("LT_SCALE"), 64); err == nil && v > 0 {
		scale = v
	}
	statusEvery := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("LT_STATUS")); err == nil && d > 0 {
		statusEvery = d
	}
	dir := os.Getenv("LT_DIR")
	tempDir := false
	if dir == "" {
		d, err := os.MkdirTemp("", "lt-service-")
		if err != nil {
			panic(err)
		}
		dir, tempDir = d, true
	}
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("demo\n"), 0o644)
	every := func(base time.Duration) time.Duration { return time.Duration(float64(base) / scale) }

	ctx, cancel := context.WithCancel(context.Background())
	quotes := &QuoteClient{timeout: 2 * time.Millisecond}
	indexer := &Indexer{dir: dir}
	sessions := &SessionStore{sessions: map[string][]byte{}}
	templates := &TemplateCache{m: map[int][]byte{}, max: 50}
	pool := &RenderPool{jobs: make(chan int, 16)}
	var requests int64

	for i := 0; i < 4; i++ {
		go pool.worker(templates) // @service-go-pool
	}
	go indexer.Watch(ctx, every(200*time.Millisecond)) // @service-go-indexer

	go func() { // @service-go-quotes
		symbols := []string{"ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI"}
		t := time.NewTicker(every(100 * time.Millisecond))
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				quotes.FetchQuote(symbols[i%len(symbols)])
			}
		}
	}()
	go func() { // @service-go-sessions
		t := time.NewTicker(every(100 * time.Millisecond))
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sessions.Remember("session-"+strconv.Itoa(i), 8192)
			}
		}
	}()
	go func() { // @service-go-traffic
		t := time.NewTicker(every(10 * time.Millisecond))
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				var wg sync.WaitGroup
				for j := 0; j < 5; j++ {
					wg.Add(1)
					go handleRequest(i*5+j, templates, &wg) // @service-go-request
				}
				wg.Wait()
				atomic.AddInt64(&requests, 5)
				pool.jobs <- i % 200
				indexer.ReadManifest()
			}
		}
	}()

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	printMarkers()
	say("expect version runtime %s", runtime.Version())
	say("expect memprofilerate runtime %d", runtime.MemProfileRate)
	say("ready")

	status := time.NewTicker(statusEvery)
	for {
		select {
		case <-status.C:
			sessions.mu.Lock()
			sb := sessions.bytes
			sessions.mu.Unlock()
			say("status leaked_goroutines=%d open_segments=%d session_bytes=%d requests=%d goroutines=%d",
				atomic.LoadInt64(&quotes.leaked), atomic.LoadInt64(&indexer.segments), sb,
				atomic.LoadInt64(&requests), runtime.NumGoroutine())
		case s := <-sigc:
			switch s {
			case syscall.SIGUSR1:
				if p := os.Getenv("LT_GOROUTINE_DUMP"); p != "" {
					writeAtomically(p, func(f *os.File) error { return pprof.Lookup("goroutine").WriteTo(f, 2) })
					say("dumped goroutines")
				}
			case syscall.SIGUSR2:
				if p := os.Getenv("LT_HEAP_DUMP"); p != "" {
					runtime.GC()
					runtime.GC()
					writeAtomically(p, func(f *os.File) error { return pprof.Lookup("heap").WriteTo(f, 1) })
					say("dumped heap")
				}
			default:
				cancel()
				if tempDir {
					os.RemoveAll(dir)
				}
				os.Exit(0)
			}
		}
	}
}
