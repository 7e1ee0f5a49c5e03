#!/usr/bin/env -S node --max-semi-space-size=4
// Why the flag: a rack's main thread keeps about 17 MB of old generation and, with V8's default
// young generation (16 MB semi-spaces), never has more room left in the old one than the young
// one holds. V8 then marks without pause: a full collection every 0.7 s at 50k calls/s, with
// marking steps of up to 11 ms on the thread that moves every byte. With 4 MB semi-spaces it
// does one at start-up, and the p99 at 50k calls/s halves (docs/performance.md, "Round 3: the
// main thread's young generation"). V8 takes the size only at start, so it is set here, where
// `fluxrig`, `make run-rack` and the benchmarks start a rack.
import { uuidToString, uuidv7 } from '../fluxmsg/mod.js';
import { runCall } from './call.js';
import { runCerts } from './certs.js';
import { runDescribe } from './describe.js';
import { runE2e } from './e2e.js';
import { runAudit, runCommand, runLogs, runMixer, runRacks, SCENARIO_MIXER_USAGE } from './mixer.js';
import { packageVersion } from './version.js';
import { runPub, runSub } from './pubsub.js';
import { runGear } from './gear.js';
import { runKv } from './kv.js';
import { runWasm } from './wasm.js';
import { runRack } from './rack.js';
import { runGears, runScenario } from './scenario.js';

const USAGE = `usage: fluxrig <command>

commands:
  rack [options]           start a rack on a scenario (fluxrig rack --help)
  mixer [options]          start the Mixer: enrollment, rollout, commands (fluxrig mixer --help)
  racks list|show|approve|suspend|activate|remove   the Mixer's racks (fluxrig racks help)
  command RACK CMD         log-level LEVEL, shutdown, reload, suspend, activate (through the Mixer)
  logs [--rack R] [--level L] [--follow]   the racks' logs and events, through the Mixer
  audit                    who approved, pushed or commanded what (the Mixer's audit trail)
  kv ls|get|put|del        the gears' KV, shared by the racks on the bus (fluxrig kv help)
  certs init|issue         certificates of an mTLS bus (fluxrig certs help)
  e2e keygen --out FILE    a key for FLUXAR end-to-end encryption (fluxrig e2e help)
  scenario validate FILE   check a scenario; every problem with file:line:column
  scenario schema [OUT]    print (or write) the JSON Schema of scenario files
${SCENARIO_MIXER_USAGE}
  gears list | doc TYPE    the gear types and their ports and config
  gear build|new|test      write, build and try a Wasm gear without a rack (fluxrig gear help)
  call URL TARGET [JSON]   call a FLUXAR server and print the answer (fluxrig call --help)
  describe URL [--ts]      what a FLUXAR server serves, or a typed client for it (fluxrig describe --help)
  sub URL PATTERN          subscribe and print each message (fluxrig sub --help)
  pub URL TOPIC [JSON]     publish a message (fluxrig pub --help)
  wasm keygen|sign|verify|import   manage Wasm gear modules (fluxrig wasm help)
  uuid       print a new UUID v7
  version    print the fluxrig version
  help       print this text`;

async function main(argv: string[]): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'call':
      return runCall(argv.slice(1));
    case 'describe':
      return runDescribe(argv.slice(1));
    case 'sub':
      return runSub(argv.slice(1));
    case 'pub':
      return runPub(argv.slice(1));
    case 'wasm':
      return runWasm(argv.slice(1));
    case 'gear':
      return runGear(argv.slice(1));
    case 'rack':
      return runRack(argv.slice(1));
    case 'mixer':
      return runMixer(argv.slice(1));
    case 'racks':
      return runRacks(argv.slice(1));
    case 'command':
      return runCommand(argv.slice(1));
    case 'logs':
      return runLogs(argv.slice(1));
    case 'audit':
      return runAudit(argv.slice(1));
    case 'kv':
      return runKv(argv.slice(1));
    case 'e2e':
      return runE2e(argv.slice(1));
    case 'certs':
      return runCerts(argv.slice(1));
    case 'scenario':
      return runScenario(argv.slice(1));
    case 'gears':
      return runGears(argv.slice(1));
    case 'uuid':
      console.log(uuidToString(uuidv7()));
      return 0;
    case 'version':
    case '--version':
      console.log(packageVersion());
      return 0;
    case undefined:
    case 'help':
    case '--help':
      console.log(USAGE);
      return 0;
    default:
      console.error(`fluxrig: unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(`fluxrig: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
