package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/identity"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of a running node",
		Args:  cobra.NoArgs,
	}
	client := apiFlags(cmd, e)
	asJSON := cmd.Flags().Bool("json", false, "print the status as JSON")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, _ []string) error {
		st, err := client().Status(cmd.Context())
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, st)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "State:\t%s\n", st.State)
		fmt.Fprintf(tw, "Peer ID:\t%s\n", st.PeerID)
		fmt.Fprintf(tw, "Name:\t%s\n", st.Name)
		fmt.Fprintf(tw, "Version:\t%s\n", st.Version)
		fmt.Fprintf(tw, "Uptime:\t%s\n", st.Uptime)
		fmt.Fprintf(tw, "Storage:\t%s\n", st.StorageBackend)
		fmt.Fprintf(tw, "Peers:\t%d\n", st.Peers)
		if st.MetricsURL != "" {
			fmt.Fprintf(tw, "Metrics:\t%s\n", st.MetricsURL)
		} else {
			fmt.Fprintf(tw, "Metrics:\tdisabled\n")
		}
		for i, a := range st.Addresses {
			label := ""
			if i == 0 {
				label = "Addresses:"
			}
			fmt.Fprintf(tw, "%s\t%s\n", label, a)
		}
		return tw.Flush()
	})
	return cmd
}

func newPeersCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers a running node is connected to",
		Args:  cobra.NoArgs,
	}
	client := apiFlags(cmd, e)
	asJSON := cmd.Flags().Bool("json", false, "print the peers as JSON")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, _ []string) error {
		peers, err := client().Peers(cmd.Context())
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, peers)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER ID\tADDRESS\tDIRECTION\tLATENCY\tAGENT\tCAPABILITIES")
		for _, p := range peers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3fms\t%s\t%s\n", p.ID, p.Address, p.Direction, p.LatencyMs, p.AgentVersion, strings.Join(p.Capabilities, ","))
		}
		return tw.Flush()
	})
	return cmd
}

func newKVCmd(e *env) *cobra.Command {
	kv := &cobra.Command{Use: "kv", Short: "Read and write the node's key-value store"}
	var consistency string
	kv.PersistentFlags().StringVar(&consistency, "consistency", "strong", "consistency level: strong, eventual, read-your-writes or causal")
	check := func() error {
		if _, err := storage.ParseConsistency(consistency); err != nil {
			return usageError{err}
		}
		return nil
	}

	put := &cobra.Command{Use: "put KEY VALUE", Short: "Store VALUE under KEY (VALUE - reads stdin)", Args: cobra.ExactArgs(2)}
	putClient := apiFlags(put, e)
	put.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if err := check(); err != nil {
			return err
		}
		value := []byte(args[1])
		if args[1] == "-" {
			b, err := io.ReadAll(e.stdin)
			if err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
			value = b
		}
		return putClient().Put(cmd.Context(), args[0], value, consistency)
	})

	get := &cobra.Command{Use: "get KEY", Short: "Print the raw value of KEY", Args: cobra.ExactArgs(1)}
	getClient := apiFlags(get, e)
	get.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if err := check(); err != nil {
			return err
		}
		v, err := getClient().Get(cmd.Context(), args[0], consistency)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(v)
		return err
	})

	del := &cobra.Command{Use: "delete KEY", Short: "Delete KEY", Args: cobra.ExactArgs(1)}
	delClient := apiFlags(del, e)
	del.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if err := check(); err != nil {
			return err
		}
		return delClient().Delete(cmd.Context(), args[0], consistency)
	})

	list := &cobra.Command{Use: "list [PREFIX]", Short: "List keys starting with PREFIX, one per line", Args: cobra.MaximumNArgs(1)}
	listClient := apiFlags(list, e)
	listJSON := list.Flags().Bool("json", false, "print keys and values as JSON")
	list.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if err := check(); err != nil {
			return err
		}
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		if *listJSON {
			all := api.KVList{Prefix: prefix, Items: []api.KVItem{}}
			err := listClient().List(cmd.Context(), prefix, consistency, func(p api.KVList) error {
				all.Items = append(all.Items, p.Items...)
				return nil
			})
			if err != nil {
				return err
			}
			all.Count = len(all.Items)
			return printJSON(e.stdout, all)
		}
		// keys are printed page by page as they arrive
		return listClient().List(cmd.Context(), prefix, consistency, func(p api.KVList) error {
			for _, it := range p.Items {
				fmt.Fprintln(e.stdout, it.Key)
			}
			return nil
		})
	})
	kv.AddCommand(put, get, del, list)
	return kv
}

func newPingCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ping PEER",
		Short: "Ping a peer (peer ID or full multiaddr) through a running node",
		Args:  cobra.ExactArgs(1),
	}
	client := apiFlags(cmd, e)
	count := cmd.Flags().IntP("count", "c", 3, "number of pings")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if _, err := p2p.ParsePeer(args[0]); err != nil {
			return usageError{err}
		}
		if *count < 1 {
			return usagef("--count must be at least 1")
		}
		res, err := client().Ping(cmd.Context(), args[0], *count)
		if err != nil {
			return err
		}
		for i, rtt := range res.RTTsMs {
			fmt.Fprintf(e.stdout, "pong from %s: seq=%d time=%.3f ms\n", res.Peer, i+1, rtt)
		}
		fmt.Fprintf(e.stdout, "--- %s: %d pings, rtt min/avg/max = %.3f/%.3f/%.3f ms\n", res.Peer, len(res.RTTsMs), res.MinMs, res.AvgMs, res.MaxMs)
		return nil
	})
	return cmd
}

func newIDCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print the peer ID of the node identity in the data directory (creating it if missing)",
		Args:  cobra.NoArgs,
	}
	dataDir := cmd.Flags().String("data-dir", "", "data directory (default node.data_dir: env P2P_AGENT_NODE_DATA_DIR or ~/.p2p-agent)")
	cmd.RunE = wrapRun(func(*cobra.Command, []string) error {
		flags := map[string]string{}
		if *dataDir != "" {
			flags["node.data_dir"] = *dataDir
		}
		cfg, err := config.Load(config.LoadOptions{Env: e.environ, Flags: flags})
		if err != nil {
			return err
		}
		_, id, _, err := identity.LoadOrCreate(cfg.IdentityPath())
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, id.String())
		return nil
	})
	return cmd
}

func newConfigCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file without starting a node",
		Args:  cobra.ExactArgs(1),
		RunE: wrapRun(func(_ *cobra.Command, args []string) error {
			if _, err := os.Stat(args[0]); err != nil {
				return usageError{fmt.Errorf("config file: %w", err)}
			}
			if err := config.Check(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: OK\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(check)
	return cmd
}

// elapsed formats a duration for progress lines.
func elapsed(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

var _ = api.DefaultAddr
