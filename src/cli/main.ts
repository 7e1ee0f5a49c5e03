#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { uuidToString, uuidv7 } from '../fluxmsg/mod.js';

const USAGE = `usage: fluxrig <command>

commands:
  uuid       print a new UUID v7
  version    print the fluxrig version
  help       print this text`;

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function main(argv: string[]): number {
  const [command] = argv;
  switch (command) {
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

process.exitCode = main(process.argv.slice(2));
