// gochurn: the goroutine benchmark workload (cargo xtask bench --only go). Timed from
// inside, so only the work is measured:
//
//	gochurn N create   start N goroutines that end at once, one at a time
//	gochurn N park     N round trips on an unbuffered channel (2N parks)
//
// Prints one line: "calls N elapsed_ns T" (N goroutines, or N parks).
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

func create(n int) int {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		wg.Wait()
	}
	return n
}

func park(n int) int {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
	return 2 * n
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	start := time.Now()
	var calls int
	switch os.Args[2] {
	case "create":
		calls = create(n)
	case "park":
		calls = park(n)
	default:
		fmt.Fprintln(os.Stderr, "usage: gochurn N create|park")
		os.Exit(2)
	}
	fmt.Printf("calls %d elapsed_ns %d\n", calls, time.Since(start).Nanoseconds())
}
