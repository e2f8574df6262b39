package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/identity"
	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise
// it comes from the module build information.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

// Exit codes of DESIGN.md section 3.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks a usage or configuration mistake (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCode maps an error to the process exit code: the one place where
// error classes become exit codes.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ae *api.Error
	switch {
	case errors.As(err, &ue), errors.Is(err, config.ErrInvalid), errors.Is(err, p2p.ErrBadPeer):
		return exitUsage
	case errors.Is(err, identity.ErrInsecureKey):
		// the operator's setting, refused as ssh refuses an open key: fixed
		// by chmod, not by retrying
		return exitUsage
	case errors.As(err, &ae) && (ae.StatusCode == http.StatusBadRequest || ae.StatusCode == http.StatusRequestEntityTooLarge):
		return exitUsage
	}
	return exitFailure
}

// env holds the process's streams and environment, injected for tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	environ        []string
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, environ: os.Environ()}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		msg := err.Error()
		// cobra's own argument and flag errors are usage errors.
		if !isOurs(err) {
			err = usageError{err}
		}
		fmt.Fprintf(stderr, "p2p-agent: %s\n", oneline.Flatten(msg))
	}
	return exitCode(err)
}

// isOurs reports whether err came from a command's RunE (already
// classified) rather than from cobra's flag and argument parsing.
func isOurs(err error) bool {
	var ue usageError
	var ae *api.Error
	var re runError
	return errors.As(err, &ue) || errors.As(err, &ae) || errors.As(err, &re) ||
		errors.Is(err, config.ErrInvalid) || errors.Is(err, api.ErrUnreachable)
}

// runError marks a runtime failure (exit 1) returned by a command.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// wrapRun tags errors from command bodies so they are not mistaken for
// cobra's usage errors.
func wrapRun(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		if err == nil || isOurs(err) {
			return err
		}
		return runError{err}
	}
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "p2p-agent",
		Short:         "A node of the p2p-ai-agents network",
		Long:          "p2p-agent runs a node of a peer-to-peer network of AI agents and controls a running node through its control API.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newStartCmd(e),
		newStatusCmd(e),
		newPeersCmd(e),
		newKVCmd(e),
		newPingCmd(e),
		newTaskCmd(e),
		newTraceCmd(e),
		newTopCmd(e),
		newNetworkCmd(e),
		newIDCmd(e),
		newConfigCmd(e),
		newVersionCmd(e),
	)
	return root
}

// apiFlags adds --api and --token to a client command and returns a constructor.
func apiFlags(cmd *cobra.Command, e *env) func() *api.Client {
	addr := cmd.Flags().String("api", "", "control API address of the node (env P2P_AGENT_API, default "+api.DefaultAddr+")")
	token := cmd.Flags().String("token", "", "bearer token for the control API (env P2P_AGENT_API_TOKEN)")
	return func() *api.Client {
		a := *addr
		if a == "" {
			a = e.getenv("P2P_AGENT_API")
		}
		if a == "" {
			a = api.DefaultAddr
		}
		t := *token
		if t == "" {
			t = e.getenv("P2P_AGENT_API_TOKEN")
		}
		return api.NewClient(a, t)
	}
}

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: wrapRun(func(*cobra.Command, []string) error {
			fmt.Fprintf(e.stdout, "p2p-agent %s\n", buildVersion())
			return nil
		}),
	}
}
