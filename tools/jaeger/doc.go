// Package jaeger pins the Jaeger all-in-one collector that the tracing
// tests export spans to (cmd/p2p-agent TestOTLPExportToJaeger). It is a
// module of its own so that Jaeger's dependencies stay out of the node's
// go.mod; scripts/test-deps.sh builds it:
//
//	go build -o /usr/local/bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
package jaeger
