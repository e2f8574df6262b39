package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/node"
)

// configFlags registers --config, --data-dir and one --<section.key> flag per
// configuration key, and returns a function that loads the configuration
// with precedence flag > env > file > default.
func configFlags(cmd *cobra.Command, e *env) func() (*config.Config, error) {
	file := cmd.Flags().String("config", "", "configuration file (YAML)")
	dataDir := cmd.Flags().String("data-dir", "", "data directory (same as --node.data_dir)")
	values := map[string]*string{}
	for _, k := range config.Keys() {
		v := new(string)
		values[k.Key] = v
		help := k.Description
		if k.Default != "" {
			help += " (default " + k.Default + ")"
		}
		help += " [env " + k.Env + "]"
		cmd.Flags().StringVar(v, k.Key, "", help)
	}
	return func() (*config.Config, error) {
		flags := map[string]string{}
		for key, v := range values {
			if cmd.Flags().Changed(key) {
				flags[key] = *v
			}
		}
		if cmd.Flags().Changed("data-dir") {
			if _, dup := flags["node.data_dir"]; dup {
				return nil, usagef("--data-dir and --node.data_dir both given")
			}
			flags["node.data_dir"] = *dataDir
		}
		return config.Load(config.LoadOptions{File: *file, Env: e.environ, Flags: flags})
	}
}

// newLogger builds the slog logger of log.level and log.format.
func newLogger(w io.Writer, cfg *config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Log.SlogLevel()}
	if cfg.Log.Format == config.LogFormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func newStartCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run a node in the foreground until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
	}
	load := configFlags(cmd, e)
	cmd.RunE = wrapRun(func(cmd *cobra.Command, _ []string) error {
		cfg, err := load()
		if err != nil {
			return err
		}
		log := newLogger(e.stderr, cfg)
		return runNode(cmd.Context(), cfg, log)
	})
	return cmd
}

// runNode builds and starts a node, waits for SIGINT/SIGTERM, then drains
// and stops it. A second signal during the drain forces exit.
func runNode(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	n, err := node.New(ctx, cfg, buildVersion(), log)
	if err != nil {
		// main prints the cause as the one stderr line; no log line repeats it.
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Shutdown(context.Background())
		return err
	}

	var runErr error
	select {
	case sig := <-sigs:
		log.Info("signal received, draining", "signal", sig.String())
	case err := <-n.Err():
		log.Error("node failed", "err", err)
		runErr = err
	case <-ctx.Done():
	}

	done := make(chan error, 1)
	go func() { done <- n.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if errors.Is(err, node.ErrStoreClose) {
			// Writes answered 2xx may be missing: never a clean exit.
			log.Error("shutdown failed", "err", err)
			return errors.Join(runErr, err)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("shutdown finished with errors", "err", err)
		}
	case sig := <-sigs:
		log.Error("second signal, forcing exit", "signal", sig.String())
		return fmt.Errorf("forced exit on second signal %s", sig)
	}
	return runErr
}
