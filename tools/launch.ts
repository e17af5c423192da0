/**
 * Starting the pieces as real processes: a local nats-server with the project's configuration on a free
 * loopback port, and any number of service processes. Used by `gsv up`, `gsv say` and the tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fromRoot } from "../shared/paths.js";
import { defaultOutDir, generateModelSet, isModelSetIntact } from "./gen-models.js";

export interface NatsServer {
  url: string;
  /** The end of the server's log (stderr). */
  log(): string;
  dir: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

export function natsServerBinary(): string {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  for (const p of ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]) if (existsSync(p)) return p;
  return "nats-server";
}

/** Start nats-server on 127.0.0.1 with a free port (or `port`), JetStream stored in a fresh temp folder. */
export async function startNatsServer(opts: { port?: number; dir?: string; config?: string; env?: Record<string, string> } = {}): Promise<NatsServer> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "gsv-nats-"));
  // `config`: another configuration's text (the secure one), with `env` holding the variables it reads.
  const conf = (opts.config ?? readFileSync(fromRoot("infra", "nats-server.conf"), "utf8"))
    .replace(/^listen:.*$/m, `listen: 127.0.0.1:${opts.port ?? -1}`)
    .replace(/store_dir:.*$/m, `store_dir: ${JSON.stringify(join(dir, "js"))}`);
  writeFileSync(join(dir, "nats.conf"), conf);
  const proc = spawn(natsServerBinary(), ["-c", join(dir, "nats.conf"), "--ports_file_dir", dir], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...opts.env } });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const failed = new Promise<never>((_, reject) => {
    proc.once("error", (err) => reject(new Error(`cannot start nats-server (${natsServerBinary()}): ${err.message}. Install it: apt-get install -y nats-server`)));
    proc.once("exit", (code) => reject(new Error(`nats-server exited with ${code}: ${stderr}`)));
  });
  const url = await Promise.race([
    failed,
    (async () => {
      for (let i = 0; i < 2000; i++) {
        const f = readdirSync(dir).find((n) => n.endsWith(".ports"));
        if (f) {
          try {
            return (JSON.parse(readFileSync(join(dir, f), "utf8")) as { nats: string[] }).nats[0];
          } catch {
            // written but not complete yet
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error("nats-server did not report its port within 10 s");
    })(),
  ]);
  failed.catch(() => undefined);
  return {
    url,
    log: () => stderr,
    dir,
    proc,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const SERVICE_NAMES = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder", "gateway"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface ServiceProcess {
  name: ServiceName;
  proc: ChildProcess;
  ready: Record<string, unknown>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawn one service from the compiled tree and wait for its ready line on stdout. */
export async function startService(name: ServiceName, env: Record<string, string>, opts: { timeoutMs?: number; logs?: "inherit" | "ignore" } = {}): Promise<ServiceProcess> {
  const entry = fromRoot("dist", "services", name, "main.js");
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run npm run build`);
  const proc = spawn(process.execPath, [entry], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", opts.logs === "inherit" ? "inherit" : "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines = createInterface({ input: proc.stdout! });
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not become ready in time: ${stderr}`)), opts.timeoutMs ?? 60_000);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready: ${stderr}`));
    });
    lines.on("line", (line) => {
      try {
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (msg.ready) {
          clearTimeout(timer);
          resolve(msg);
        }
      } catch {
        // not a control line
      }
    });
  });
  proc.removeAllListeners("exit");
  return {
    name,
    proc,
    ready,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
      proc.kill(signal);
      return exited;
    },
  };
}

export interface Stack {
  nats?: NatsServer;
  natsUrl: string;
  gatewayUrl: string;
  services: ServiceProcess[];
  stop(): Promise<void>;
}

/** The whole pipeline: nats-server (unless natsUrl is given), the four stages and the gateway. */
export async function startStack(opts: { natsUrl?: string; port?: number; env?: Record<string, string>; logs?: "inherit" | "ignore" } = {}): Promise<Stack> {
  // The bundled default set is generated at install; regenerate it here if it went missing.
  if (!process.env.GSV_MODEL_DIR && !opts.env?.GSV_MODEL_DIR && !isModelSetIntact(defaultOutDir("tiny"))) {
    await generateModelSet({ out: defaultOutDir("tiny"), preset: "tiny" });
  }
  const nats = opts.natsUrl ? undefined : await startNatsServer();
  const natsUrl = opts.natsUrl ?? nats!.url;
  const env = { NATS_URL: natsUrl, PORT: String(opts.port ?? 0), ...opts.env };
  const services: ServiceProcess[] = [];
  const stop = async () => {
    await Promise.all(services.map((s) => s.stop()));
    await nats?.stop();
  };
  try {
    // Stages first, in parallel; the gateway last so it is only reachable once the pipeline is.
    services.push(...(await Promise.all((["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"] as const).map((n) => startService(n, env, { logs: opts.logs })))));
    services.push(await startService("gateway", env, { logs: opts.logs }));
  } catch (err) {
    await stop();
    throw err;
  }
  return { nats, natsUrl, gatewayUrl: String(services[services.length - 1].ready.url), services, stop };
}
