/**
 * Readiness/liveness probe of a stage process (Kubernetes exec probe, docker-compose healthcheck):
 *   node dist/tools/probe.js <service>
 * Asks the stage's status subject over NATS (as the stage's own user: NATS_URL, NATS_USER...) and exits 0
 * when this replica answers: the one named GSV_REPLICA, or else a replica of the service on this host
 * (the default replica name is service-hostname-pid, and a pod or container runs one service). So the
 * probe passes only if the process is connected to NATS, registered, and its event loop is responsive.
 */
import { hostname } from "node:os";
import type { NatsConnection } from "nats";
import { decode } from "../shared/codec.js";
import { connectNats } from "../shared/nats.js";
import { PREFIX, ServiceNames } from "../shared/subjects.js";

export type ProbeResult = { ok: true; replica: string } | { ok: false; reason: string };

/** Whether `matches` picks out a replica among the ones answering `service`'s status within `timeoutMs`. */
export async function probeStage(nc: NatsConnection, service: string, matches: (replica: string) => boolean, timeoutMs = 2000): Promise<ProbeResult> {
  const seen: string[] = [];
  try {
    const it = await nc.requestMany(`${PREFIX}.status.${service}`, new Uint8Array(), { maxWait: timeoutMs });
    for await (const m of it) {
      const replica = String((decode(m.data) as { replica?: unknown }).replica ?? "");
      if (matches(replica)) return { ok: true, replica };
      seen.push(replica);
    }
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === "503") return { ok: false, reason: `no replica of ${service} answered (no responders)` };
    return { ok: false, reason: `status request failed: ${e.message}` };
  }
  return { ok: false, reason: seen.length ? `this replica did not answer (others did: ${seen.join(", ")})` : `no replica of ${service} answered within ${timeoutMs} ms` };
}

/** The replica a probe in this process's environment looks for. */
export function ownReplica(service: string, env: NodeJS.ProcessEnv = process.env): (replica: string) => boolean {
  if (env.GSV_REPLICA) return (r) => r === env.GSV_REPLICA;
  const prefix = `${service}-${hostname()}-`;
  return (r) => r.startsWith(prefix);
}

async function main(): Promise<void> {
  const service = process.argv[2];
  const stages = Object.values(ServiceNames).filter((n) => n !== "gateway");
  if (!service || !stages.includes(service)) {
    console.error(`usage: probe <${stages.join("|")}>  (the gateway is probed over HTTP: GET /health)`);
    process.exit(2);
  }
  const timeoutMs = Number(process.env.GSV_PROBE_TIMEOUT_MS ?? 2000);
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: `probe-${service}` });
  } catch (err) {
    console.error(`probe ${service}: cannot connect to NATS: ${(err as Error).message}`);
    process.exit(1);
  }
  const r = await probeStage(nc, service, ownReplica(service), timeoutMs);
  await nc.close();
  if (r.ok) console.log(`probe ${service}: ok (${r.replica})`);
  else console.error(`probe ${service}: ${r.reason}`);
  process.exit(r.ok ? 0 : 1);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) await main();
