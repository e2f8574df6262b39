// Package opskit holds the tests of the operator kit: the Prometheus scrape
// configuration, alert and recording rules and their promtool unit tests in
// deploy/prometheus, the Grafana dashboard in deploy/grafana and the metric
// catalogue in docs/metrics.md. The tests check them with the real promtool,
// against registries built by the metrics package's constructors, and
// against a real prometheus scraping real nodes, so that none of them can
// drift from the code. The package has no non-test code.
package opskit
