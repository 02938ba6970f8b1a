// Command app is the lab's container process: it says hello and waits for
// SIGTERM, so one static binary serves as the pause image and the app image.
// With the argument "exit" it exits at once (an init container); with
// "fail" it exits with status 1 (a liveness probe that fails).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	host, _ := os.Hostname()
	fmt.Printf("criseq lab app on %s, args %q\n", host, os.Args[1:])
	if len(os.Args) > 1 && os.Args[1] == "exit" {
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "fail" {
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
