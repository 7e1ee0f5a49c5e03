// Debian's Chromium, driven by playwright-core (which brings no browser of its own): `make test`
// installs the chromium package when it runs as root.
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';

export const CHROMIUM_HINT = "the dashboard's browser tests need Chromium: sudo apt-get install chromium (or set CHROMIUM=/path/to/chrome)";

export function findChromium(): string | undefined {
  if (process.env.CHROMIUM !== undefined && existsSync(process.env.CHROMIUM)) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH ?? '').split(delimiter))
    for (const name of ['chromium', 'chromium-browser']) if (existsSync(join(dir, name))) return join(dir, name);
  return undefined;
}

export async function launchChromium(executablePath: string): Promise<Browser> {
  // As root, Chromium's own sandbox cannot start; the test's page is our own.
  const args = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
  return chromium.launch({ executablePath, args, headless: true });
}
