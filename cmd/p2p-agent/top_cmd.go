package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// Smallest terminal top draws in; below it, and when stdout is not a
// terminal, top prints one plain report and exits.
const (
	topMinCols = 64
	topMinRows = 12
)

func newTopCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch a node live: peers, message and storage rates, p99 latency, tasks, CPU and memory",
		Long: "top shows the node's state, uptime, peers, messages per second in and out, p99 message latency, " +
			"storage operations and errors per second, tasks running and queued, CPU and memory, refreshed in place " +
			"every --interval from the node's own counters (GET /api/v1/stats). q or Ctrl-C leaves and restores the " +
			"terminal. When stdout is not a terminal, or the terminal is smaller than 64x12, it prints one report " +
			"(rates over one interval) and exits.",
		Args: cobra.NoArgs,
	}
	client := apiFlags(cmd, e)
	interval := cmd.Flags().Duration("interval", 2*time.Second, "refresh interval")
	cmd.RunE = wrapRun(func(cmd *cobra.Command, _ []string) error {
		if *interval < 100*time.Millisecond {
			return usagef("--interval %v is too short (at least 100ms)", *interval)
		}
		c := client()
		out, ok := e.stdout.(*os.File)
		in, inOK := e.stdin.(*os.File)
		if ok && inOK && term.IsTerminal(int(out.Fd())) && term.IsTerminal(int(in.Fd())) {
			if w, h, err := term.GetSize(int(out.Fd())); err == nil && w >= topMinCols && h >= topMinRows {
				return topLive(cmd.Context(), c, in, out, *interval)
			}
		}
		return topOnce(cmd.Context(), c, e.stdout, *interval)
	})
	return cmd
}

// topOnce prints one plain report: the counters twice, interval apart.
func topOnce(ctx context.Context, c *api.Client, w io.Writer, interval time.Duration) error {
	a, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	select {
	case <-time.After(interval):
	case <-ctx.Done():
		return ctx.Err()
	}
	b, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, strings.Join(topLines(a, b, interval), "\n")+"\n")
	return err
}

// topLive redraws the report in place on the terminal's alternate screen
// until q, Ctrl-C, SIGINT or SIGTERM, then restores the terminal.
func topLive(ctx context.Context, c *api.Client, in, out *os.File, interval time.Duration) error {
	state, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return topOnce(ctx, c, out, interval)
	}
	fmt.Fprint(out, "\x1b[?1049h\x1b[?25l") // alternate screen, hide cursor
	defer func() {
		fmt.Fprint(out, "\x1b[?25h\x1b[?1049l") // show cursor, leave it
		_ = term.Restore(int(in.Fd()), state)
	}()

	quit := make(chan struct{})
	go func() { // raw mode: keys arrive one by one, Ctrl-C as 0x03
		buf := make([]byte, 16)
		for {
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			for _, k := range buf[:n] {
				if k == 'q' || k == 'Q' || k == 3 {
					close(quit)
					return
				}
			}
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	prev, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	draw := func(lines []string) {
		var b strings.Builder
		b.WriteString("\x1b[H\x1b[2J")
		for _, l := range lines {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
		fmt.Fprint(out, b.String())
	}
	draw(append(topLines(prev, prev, 0), "", "collecting rates..."))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-quit:
			return nil
		case <-sigs:
			return nil
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := c.Stats(ctx)
		if err != nil {
			draw([]string{"p2p-agent top: " + err.Error(), "", "retrying every " + interval.String() + "; q to quit"})
			continue
		}
		draw(append(topLines(prev, cur, interval), "", "refresh "+interval.String()+"   q to quit"))
		prev = cur
	}
}

// topLines renders the report of the interval from a to b.
func topLines(a, b api.Stats, interval time.Duration) []string {
	st := b.Status
	r := metrics.Between(a.Counters, b.Counters)
	rate := func(v float64) string {
		if interval == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	p99 := "-"
	if interval > 0 && !math.IsNaN(r.MessageP99) {
		p99 = fmt.Sprintf("%.2f ms  (%d handled)", r.MessageP99*1000, int(r.MessagesHandled))
	}
	cpu := "-"
	if interval > 0 {
		cpu = fmt.Sprintf("%.1f %%", r.CPU*100)
	}
	id := st.PeerID
	if len(id) > 12 {
		id = "..." + id[len(id)-8:]
	}
	return []string{
		fmt.Sprintf("p2p-agent top   %s (%s)   %s   up %s   %s", st.Name, id, st.State, st.Uptime, st.Version),
		"",
		fmt.Sprintf("peers          %d", st.Peers),
		fmt.Sprintf("messages/s     in %s   out %s   errors %s", rate(r.MessagesIn), rate(r.MessagesOut), rate(r.MessageErrors)),
		fmt.Sprintf("message p99    %s", p99),
		fmt.Sprintf("storage ops/s  %s   errors/s %s   (%s)", rate(r.StorageOps), rate(r.StorageErrors), st.StorageBackend),
		fmt.Sprintf("tasks          running %d   queued %d   finished/s %s", int(b.Counters.TasksRunning), int(b.Counters.TasksQueued), rate(r.Tasks)),
		fmt.Sprintf("cpu            %s", cpu),
		fmt.Sprintf("memory         %.1f MiB resident", b.Counters.ResidentBytes/(1<<20)),
	}
}
