/**
 * A local NATS cluster: the production node configurations (infra/nats-cluster/nats-N.conf) run on
 * loopback with free ports, each node with its own JetStream store. Used by test/cluster.test.ts and by
 * `gsv cluster` to try the clustered topology on one machine without containers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { fromRoot } from "../shared/paths.js";
import { natsServerBinary } from "./launch.js";

export interface ClusterNode {
  name: string;
  /** nats://127.0.0.1:PORT */
  url: string;
  clusterPort: number;
  monitorPort: number;
  proc: ChildProcess;
  /** The end of the node's log (stderr). */
  lastLog(): string;
  /** Whether the node process is still running. */
  alive(): boolean;
  /** Kill the node (SIGKILL by default: no lame duck, no goodbye to the routes). */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface NatsCluster {
  nodes: ClusterNode[];
  /** Every node's client URL, comma-separated: what NATS_URL takes. */
  url: string;
  dir: string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago (bind to 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Rewrite one production node configuration for loopback: its client, cluster and monitoring listen
 * addresses, the routes (nats-K:6222 → 127.0.0.1:clusterPort[K]) and store_dir. Everything else
 * (server_name, cluster name, JetStream limits, payload) is the committed file's.
 */
export function localNodeConfig(conf: string, ports: { client: number; cluster: number; monitor: number }, clusterPorts: number[], storeDir: string): string {
  const out = conf
    .replace(/^listen:.*$/m, `listen: 127.0.0.1:${ports.client}`)
    .replace(/^http:.*$/m, `http: 127.0.0.1:${ports.monitor}`)
    .replace(/store_dir:.*$/m, `store_dir: ${JSON.stringify(storeDir)}`)
    .replace(/^(\s+)listen: 0\.0\.0\.0:6222$/m, `$1listen: 127.0.0.1:${ports.cluster}`)
    .replace(/nats:\/\/nats-(\d+):6222/g, (_m, k: string) => {
      const p = clusterPorts[Number(k) - 1];
      if (p === undefined) throw new Error(`route to nats-${k} but the cluster has ${clusterPorts.length} nodes`);
      return `nats://127.0.0.1:${p}`;
    });
  if (/0\.0\.0\.0/.test(out)) throw new Error("a listen address was not rewritten for loopback");
  return out;
}

/** Start `size` nodes (default 3, the committed configurations) and wait until JetStream has a meta leader. */
export async function startNatsCluster(opts: { size?: number; readyTimeoutMs?: number } = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "gsv-nats-cluster-"));
  const ports: { client: number; cluster: number; monitor: number }[] = [];
  const taken = new Set<number>();
  const pick = async () => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < size; i++) ports.push({ client: await pick(), cluster: await pick(), monitor: await pick() });
  const clusterPorts = ports.map((p) => p.cluster);
  const nodes: ClusterNode[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.kill("SIGTERM")));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < size; i++) {
      const file = fromRoot("infra", "nats-cluster", `nats-${i + 1}.conf`);
      if (!existsSync(file)) throw new Error(`${file} is missing: the cluster has ${size} nodes but only committed configurations can be run`);
      const nodeDir = join(dir, `nats-${i + 1}`);
      mkdirSync(nodeDir, { recursive: true });
      const conf = localNodeConfig(readFileSync(file, "utf8"), ports[i], clusterPorts, join(nodeDir, "js"));
      writeFileSync(join(nodeDir, "nats.conf"), conf);
      const proc = spawn(natsServerBinary(), ["-c", join(nodeDir, "nats.conf")], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      proc.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      const lastLog = () => stderr.trim();
      proc.once("error", () => undefined);
      const node: ClusterNode = {
        name: `nats-${i + 1}`,
        url: `nats://127.0.0.1:${ports[i].client}`,
        clusterPort: ports[i].cluster,
        monitorPort: ports[i].monitor,
        proc,
        lastLog,
        alive: () => proc.exitCode === null && proc.signalCode === null,
        async kill(signal = "SIGKILL") {
          if (!node.alive()) return;
          const exited = new Promise((r) => proc.once("exit", r));
          proc.kill(signal);
          await exited;
        },
      };
      nodes.push(node);
    }
    await waitForJetStream(nodes, opts.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, url: nodes.map((n) => n.url).join(","), dir, stop };
}

/** Poll until the JetStream API answers (the cluster elected a meta leader) and every node is routed. */
async function waitForJetStream(nodes: ClusterNode[], timeoutMs: number): Promise<void> {
  const url = nodes.map((n) => n.url).join(",");
  const until = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < until) {
    const dead = nodes.find((n) => !n.alive());
    if (dead) throw new Error(`cluster node ${dead.name} exited: ${dead.lastLog()}`);
    try {
      const nc = await connect({ servers: url.split(","), timeout: 1000, maxReconnectAttempts: 0 });
      try {
        const jsm = await nc.jetstreamManager({ timeout: 1000 });
        await jsm.getAccountInfo();
        return;
      } finally {
        await nc.close();
      }
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the NATS cluster did not elect a JetStream leader within ${timeoutMs} ms (${last})`);
}
