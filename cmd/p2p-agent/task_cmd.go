package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// textTypes accept a plain-text input file, which becomes {"text": ...}.
var textTypes = map[string]bool{task.TypeChunk: true, task.TypeEmbed: true}

// readTaskInput reads --input (a file, or - for stdin) and returns a JSON object.
func readTaskInput(e *env, typ, input string) (json.RawMessage, error) {
	if input == "" {
		return json.RawMessage(`{}`), nil
	}
	var data []byte
	var err error
	if input == "-" {
		data, err = io.ReadAll(e.stdin)
	} else {
		data, err = os.ReadFile(input)
	}
	if err != nil {
		return nil, usagef("reading task input: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if !json.Valid(trimmed) {
			return nil, usagef("task input %s is not valid JSON", input)
		}
		return json.RawMessage(trimmed), nil
	}
	if textTypes[typ] {
		b, _ := json.Marshal(map[string]string{"text": string(data)})
		return b, nil
	}
	return nil, usagef("task type %s needs a JSON object as input", typ)
}

func newTaskCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Submit AI tasks and read their records"}

	submit := &cobra.Command{
		Use:   "submit TYPE",
		Short: fmt.Sprintf("Submit a task (%s, %s, %s, %s)", task.TypeChunk, task.TypeEmbed, task.TypeAdd, task.TypeSearch),
		Long:  "Submit a task. Without --wait, prints only the task id. With --wait, shows progress on stderr and prints the result JSON on stdout.",
		Args:  cobra.ExactArgs(1),
	}
	submitClient := apiFlags(submit, e)
	input := submit.Flags().StringP("input", "i", "", "input file (JSON object, or plain text for "+task.TypeChunk+"/"+task.TypeEmbed+"); - reads stdin")
	peerArg := submit.Flags().String("peer", "", "run the task on this peer (peer ID or multiaddr)")
	wait := submit.Flags().Bool("wait", false, "wait for the result and print it")
	traced := submit.Flags().Bool("trace", false, "trace the task across every node it touches (its trace id goes to stderr; see p2p-agent trace)")
	submit.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		if *peerArg != "" {
			if _, err := p2p.ParsePeer(*peerArg); err != nil {
				return usageError{err}
			}
		}
		in, err := readTaskInput(e, args[0], *input)
		if err != nil {
			return err
		}
		c := submitClient()
		t, err := c.SubmitTask(cmd.Context(), api.TaskRequest{Type: args[0], Input: in, Peer: *peerArg, Trace: *traced})
		if err != nil {
			return err
		}
		if t.TraceID != "" {
			fmt.Fprintf(e.stderr, "trace %s\n", t.TraceID)
		}
		if !*wait {
			fmt.Fprintln(e.stdout, t.ID)
			return nil
		}
		t, err = waitTask(cmd, e, c, t)
		if err != nil {
			return err
		}
		if t.State == task.StateFailed {
			return runError{fmt.Errorf("task %s failed: %s", t.ID, t.Error)}
		}
		var out bytes.Buffer
		if err := json.Indent(&out, t.Result, "", "  "); err != nil {
			out.Reset()
			out.Write(t.Result)
		}
		out.WriteByte('\n')
		_, err = e.stdout.Write(out.Bytes())
		return err
	})

	get := &cobra.Command{Use: "get ID", Short: "Print a task record as JSON", Args: cobra.ExactArgs(1)}
	getClient := apiFlags(get, e)
	get.RunE = wrapRun(func(cmd *cobra.Command, args []string) error {
		rec, err := getClient().Task(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return printJSON(e.stdout, rec)
	})
	cmd.AddCommand(submit, get)
	return cmd
}

// waitTask polls the task until it is final, showing state and elapsed time
// on stderr: rewritten in place on a terminal, one line per change otherwise.
func waitTask(cmd *cobra.Command, e *env, c *api.Client, t task.Record) (task.Record, error) {
	start := time.Now()
	tty := false
	if f, ok := e.stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	var lastState task.State
	show := func() {
		if tty {
			fmt.Fprintf(e.stderr, "\rtask %s: %-9s %s   ", t.ID, t.State, elapsed(time.Since(start)))
		} else if t.State != lastState {
			fmt.Fprintf(e.stderr, "task %s: %s after %s\n", t.ID, t.State, elapsed(time.Since(start)))
		}
		lastState = t.State
	}
	delay := 20 * time.Millisecond
	for {
		show()
		if t.State.Final() {
			if tty {
				fmt.Fprintln(e.stderr)
			}
			return t, nil
		}
		select {
		case <-cmd.Context().Done():
			return t, cmd.Context().Err()
		case <-time.After(delay):
		}
		if delay < 250*time.Millisecond {
			delay *= 2
		}
		rec, err := c.Task(cmd.Context(), t.ID)
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) && ae.StatusCode == 404 {
				continue // not persisted yet
			}
			return t, err
		}
		t = rec
	}
}
