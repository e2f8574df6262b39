// Command p2p-agent runs and controls a node of the p2p-ai-agents network.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
