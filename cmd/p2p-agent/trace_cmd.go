package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

func newTraceCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace ID",
		Short: "Print a trace as a timeline across every node it touched",
		Long: "Print trace ID (32 hex digits, from a task record's trace_id or `task submit --trace`) as a timeline: " +
			"offset from the first span, node, span and duration, one span per line. The node asks every peer that took " +
			"part for its spans; a peer that cannot be asked is named on the first line as incomplete. --json prints the " +
			"spans instead. Exits 1 when no node has the trace.",
		Args: cobra.ExactArgs(1),
	}
	client := apiFlags(cmd, e)
	asJSON := cmd.Flags().Bool("json", false, "print the trace as JSON")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if _, err := tracing.ParseTraceID(args[0]); err != nil {
			return usageError{err}
		}
		t, err := client().Trace(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if *asJSON {
			if t.Spans == nil {
				t.Spans = []tracing.SpanRecord{}
			}
			b, err := json.MarshalIndent(t, "", "  ")
			if err != nil {
				return fmt.Errorf("encoding trace: %w", err)
			}
			_, err = fmt.Fprintf(e.stdout, "%s\n", b)
			return err
		}
		return t.WriteTimeline(e.stdout)
	})
	return cmd
}
