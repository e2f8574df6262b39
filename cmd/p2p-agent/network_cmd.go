package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
)

func newNetworkCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Print the mesh as this node sees it: nodes and edges",
		Long: "Print every node this node has heard from within p2p.peer_ttl (itself first) with its name, version, " +
			"state, peers, CPU, memory, messages per second and tasks running, then the edges between them with " +
			"their latency. Each node reports only about itself, over the authenticated info protocol. " +
			"--json prints {\"self\", \"nodes\", \"edges\"}.",
		Args: cobra.NoArgs,
	}
	client := apiFlags(cmd, e)
	asJSON := cmd.Flags().Bool("json", false, "print the view as JSON")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, _ []string) error {
		v, err := client().Network(cmd.Context())
		if err != nil {
			return err
		}
		if v.Nodes == nil {
			v.Nodes = []api.NetworkNode{}
		}
		if v.Edges == nil {
			v.Edges = []api.NetworkEdge{}
		}
		if *asJSON {
			b, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				return fmt.Errorf("encoding network view: %w", err)
			}
			_, err = fmt.Fprintf(e.stdout, "%s\n", b)
			return err
		}
		names := map[string]string{}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "NODE\tNAME\tVERSION\tSTATE\tPEERS\tCPU%%\tMEMORY\tMSG/S\tTASKS\n")
		for _, n := range v.Nodes {
			names[n.ID] = n.Name
			peers := "?"
			if n.Peers != nil {
				peers = fmt.Sprint(*n.Peers)
			}
			mark := ""
			if n.ID == v.Self {
				mark = " (self)"
			}
			fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%.1f\t%d\n", n.ID, mark, n.Name, n.Version, n.State, peers,
				n.CPUPercent, humanBytes(n.MemoryBytes), n.MessagesPerSecond, n.TasksRunning)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "\n%d nodes, %d edges\n", len(v.Nodes), len(v.Edges))
		tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "FROM\tTO\tLATENCY\n")
		for _, ed := range v.Edges {
			lat := "-"
			if ed.LatencyMs > 0 {
				lat = fmt.Sprintf("%.2f ms", ed.LatencyMs)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", label(ed.From, names), label(ed.To, names), lat)
		}
		return tw.Flush()
	})
	return cmd
}

// label names a node by its name and a short peer ID.
func label(id string, names map[string]string) string {
	short := id
	if len(short) > 12 {
		short = "…" + short[len(short)-8:]
	}
	if n := names[id]; n != "" {
		return n + " (" + short + ")"
	}
	return short
}

func humanBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", b/div, "KMGTP"[exp])
}
