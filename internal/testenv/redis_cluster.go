package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of masters without replicas, each a
// redis-server started by the test on loopback ports.
type RedisCluster struct {
	// Nodes are the masters, in the order given to redis-cli.
	Nodes []*Redis
}

// StartRedisCluster starts masters (at least 3) redis-server processes with
// cluster mode enabled, joins them with `redis-cli --cluster create`, waits
// until every node reports cluster_state:ok and knows every other node, and
// stops them all when the test ends.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	return StartRedisClusterWithReplicas(t, masters, 0)
}

// StartRedisClusterWithReplicas is StartRedisCluster with replicasPerMaster
// replicas for each master; Nodes then holds masters*(1+replicasPerMaster)
// servers, roles as redis-cli assigned them.
func StartRedisClusterWithReplicas(t testing.TB, masters, replicasPerMaster int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartRedisCluster: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	bin := ToolPath(t, "redis-server")
	cli := ToolPath(t, "redis-cli")
	c := &RedisCluster{}
	for i := 0; i < masters*(1+replicasPerMaster); i++ {
		n := &Redis{t: t, bin: bin, dir: t.TempDir(), cluster: true}
		n.startFresh()
		c.Nodes = append(c.Nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(RedisStartTimeout)
	want := fmt.Sprintf("cluster_known_nodes:%d", len(c.Nodes))
	for _, n := range c.Nodes {
		for {
			info, err := RedisCommand(n.Addr(), time.Second, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ready within %v: %v\n%s", n.Addr(), RedisStartTimeout, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if replicasPerMaster > 0 {
		waitReplicasKnown(t, c, masters, masters*replicasPerMaster, deadline)
	}
	return c
}

// waitReplicasKnown waits until every replica has finished its first sync
// (master_link_status:up) and every node's view of the cluster lists all
// replicas: only then do clients that read the topology (CLUSTER SLOTS)
// learn about the replicas, rather than at their next periodic reload.
func waitReplicasKnown(t testing.TB, c *RedisCluster, masters, replicas int, deadline time.Time) {
	t.Helper()
	for _, n := range c.Nodes {
		// A replicated command on the (empty) masters moves the offsets.
		if info, err := RedisCommand(n.Addr(), time.Second, "INFO", "replication"); err == nil && strings.Contains(info, "role:master") {
			if _, err := RedisCommand(n.Addr(), time.Second, "FLUSHALL"); err != nil {
				t.Fatalf("FLUSHALL on %s: %v", n.Addr(), err)
			}
		}
	}
	for _, n := range c.Nodes {
		for {
			info, ierr := RedisCommand(n.Addr(), time.Second, "INFO", "replication")
			// CLUSTER SLOTS lists a replica only once its replication
			// offset is known to be non-zero, hence the FLUSHALL below.
			slots, nerr := RedisCommand(n.Addr(), time.Second, "CLUSTER", "SLOTS")
			known := strings.Count(slots, "127.0.0.1") - masters
			synced := strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")
			if ierr == nil && nerr == nil && synced && known == replicas {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s: replicas not ready within %v (%d of %d known): %v %v\n%s", n.Addr(), RedisStartTimeout, known, replicas, ierr, nerr, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Addrs returns the host:port of every node.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}
