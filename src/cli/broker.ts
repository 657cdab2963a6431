/** `rustcbuildx broker status|stop` and `rustcbuildx engine build`. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cliConfig } from '../config/files.ts';
import { ConfigError, loadConfig } from '../config/config.ts';
import { makeEngine } from '../engine/engine.ts';
import { brokerSocketFor, runtimeDir, type BrokerStatus } from '../engine/broker/protocol.ts';
import { BrokeredEngine, brokerStatus, stopBroker } from '../engine/broker/client.ts';
import { chosenBuildxBuilder, dockerHost } from '../engine/endpoint.ts';
import { writeStderr, writeStdout } from '../io.ts';
import { UsageError } from './usage.ts';
import { optionValue } from '../argv.ts';

const USAGE = 'usage: broker status [--json] | broker stop [--all]';

export async function brokerCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  // A broken config file must not keep anyone from stopping or seeing the brokers: the environment's then.
  const cfg = await cliConfig().catch((err: unknown) => {
    if (err instanceof ConfigError) return loadConfig();
    throw err;
  });
  switch (sub) {
    case 'status': {
      const mine = brokerSocketFor(cfg.broker, 'docker');
      const all = brokerSockets();
      const statuses: Array<{ socket: string; status: BrokerStatus | undefined; current: boolean }> = [];
      for (const socket of new Set([...(mine ? [mine] : []), ...all])) {
        statuses.push({ socket, status: await brokerStatus(socket), current: socket === mine });
      }
      if (rest.includes('--json')) {
        await writeStdout(JSON.stringify(statuses) + '\n');
        return 0;
      }
      const lines: string[] = [];
      if (!mine) lines.push(`builds here use the docker CLI, not a broker: ${why(cfg.broker)}`);
      for (const { socket, status, current } of statuses) {
        if (!status) {
          if (current) lines.push(`no broker running for ${dockerHost(process.env) ?? 'the local docker engine'} (the first build starts one)`);
          continue;
        }
        lines.push(
          `${current ? '* ' : '  '}broker pid ${status.pid} for ${status.endpoint}: ${status.engine}`,
          `    ${status.builds} builds since ${status.startedAt}, ${status.inFlight} running, ${status.sessions} sessions; idle ${status.idleSeconds} s of ${status.idleLimitSeconds} s`,
          `    socket ${socket}`,
        );
      }
      if (lines.length === 0) lines.push('no broker running');
      await writeStdout(lines.join('\n') + '\n');
      return 0;
    }
    case 'stop': {
      const mine = brokerSocketFor(cfg.broker, 'docker');
      const targets = rest.includes('--all') ? brokerSockets() : mine ? [mine] : [];
      let stopped = 0;
      for (const socket of targets) if (await stopBroker(socket)) stopped++;
      await writeStdout(stopped > 0 ? `stopped ${stopped} broker${stopped > 1 ? 's' : ''}\n` : 'no broker was running\n');
      return 0;
    }
    default:
      throw new UsageError(USAGE);
  }
}

function why(broker: boolean): string {
  if (!broker) return 'RUSTCBUILDX_BROKER=off';
  return chosenBuildxBuilder() ?? 'no private runtime directory';
}

function brokerSockets(): string[] {
  const dir = runtimeDir();
  if (!dir) return [];
  return readdirSync(dir)
    .filter((n) => /^broker-[0-9a-f]+\.sock$/.test(n))
    .map((n) => join(dir, n));
}


const ENGINE_USAGE = 'usage: engine build -f DOCKERFILE --output DIR [--target STAGE] CONTEXT';

/** One build through the engine path a wrapper would take (broker unless RUSTCBUILDX_BROKER=off). */
export async function engineCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'build' && (rest.includes('--help') || rest.includes('-h'))) {
    await writeStdout(`${ENGINE_USAGE}\n`);
    return 0;
  }
  const dockerfile = optionValue(rest, '-f');
  const output = optionValue(rest, '--output');
  const context = rest.at(-1);
  if (sub !== 'build' || !dockerfile || !output || !context || context.startsWith('-')) {
    throw new UsageError(ENGINE_USAGE);
  }
  const cfg = await cliConfig();
  const runner = cfg.runner && cfg.runner !== 'none' ? cfg.runner : 'docker';
  const cli = makeEngine(cfg, runner, runner);
  const socket = brokerSocketFor(cfg.broker, runner);
  const engine = socket
    ? new BrokeredEngine(cli, socket, cfg.brokerIdleSeconds, {
        skip: () => false,
        lost: async (reason) => void (await writeStderr(`rustcbuildx: warning: ${reason}; using the docker CLI\n`)),
        unsupported: () => undefined,
        interrupted: async (reason) => void (await writeStderr(`rustcbuildx: warning: ${reason}; trying once more\n`)),
      })
    : cli;
  const target = optionValue(rest, '--target');
  const res = await engine.build({ dockerfile, context, outputDir: output, ...(target ? { target } : {}) });
  if (res.code !== 0) await writeStderr(res.log);
  return res.code;
}
