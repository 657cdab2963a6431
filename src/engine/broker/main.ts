/**
 * The broker's entry: `rustcbuildx-broker.js --socket PATH --idle SECONDS`, started by a wrapper (see
 * startBroker in client.ts). A bundle of its own, so the wrapper's executable does not carry gRPC.
 */
import { cacheBaseDir } from '../../config/config.ts';
import { serveBroker } from './server.ts';
import { optionValue } from '../../argv.ts';
import { rmSync } from 'node:fs';

const args = process.argv.slice(2);
const socket = optionValue(args, '--socket');
const idle = Number(optionValue(args, '--idle') ?? 600);
if (!socket || !(idle > 0)) {
  process.stderr.write('usage: rustcbuildx-broker --socket PATH --idle SECONDS (started by the rustcbuildx wrapper)\n');
  process.exit(2);
}
delete process.env.BUN_BE_BUN; // what the broker starts (ssh, docker) must not inherit it
// The wrapper that started us marked it, so that its siblings wait instead of starting brokers too.
const marker = process.env.RUSTCBUILDX_BROKER_STARTING;
delete process.env.RUSTCBUILDX_BROKER_STARTING;
// Gone once the socket is ours or another broker's (and whatever happens, at exit): a marker outliving
// the start would make the next wrappers wait out its age, after a `broker stop` say.
const unmark = () => marker && rmSync(marker, { force: true });
process.on('exit', unmark);
process.exit(await serveBroker({ socket, idleSeconds: idle, env: process.env, cacheDir: cacheBaseDir(), claimed: unmark }));
