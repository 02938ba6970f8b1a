// Command criseq-graphviz lays out Graphviz DOT text read on stdin and
// writes it as SVG or PNG on stdout. criseq runs it to draw ID-flow graphs
// (criseq render --format graph), so that criseq itself does not carry
// go-graphviz's start-up cost.
//
//	criseq-graphviz -T svg < graph.dot > graph.svg
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/criseq/criseq/render/graphviz"
)

func main() {
	format := flag.String("T", "svg", "output format: svg or png")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *format); err != nil {
		fmt.Fprintln(os.Stderr, "criseq-graphviz:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, format string) error {
	dot, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	if err := graphviz.Render(w, dot, format); err != nil {
		return err
	}
	return w.Flush()
}
