// One matrix of authentication, PSK and TLS client-certificate cases, run against listen() and
// against a rack whose fluxar gear reads the same secrets from files and environment variables:
// both must give the same answers, because both run the same session driver and listener.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { type ConnectOptions, connect, FluxarError, listen } from '../src/fluxar/mod.js';
import { authFromSecrets, type FluxarSecrets } from '../src/gears/fluxar.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { makeTestCerts } from './harness/tls.js';

const quiet = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-auth-'));
const root = new URL('../../', import.meta.url).pathname;

const secrets: FluxarSecrets = {
  bearer: { t0ken: 'svc-a' },
  api_key: { k3y: 'svc-b' },
  credentials: { ada: 'lovelace' },
  custom: { hmac: { signed: 'custom-user' } },
};
const PSK = 'shared-secret';

/** The cases every FLUXAR server must answer alike: credentials, and the principal or the code. */
const authCases: Array<[string, ConnectOptions['credentials'] | undefined, string | number]> = [
  ['bearer', { scheme: 'bearer', token: 't0ken' }, 'svc-a'],
  ['bearer, wrong token', { scheme: 'bearer', token: 'nope' }, 401],
  ['api_key', { scheme: 'api_key', key: 'k3y' }, 'svc-b'],
  ['api_key, wrong key', { scheme: 'api_key', key: 'k3' }, 401],
  ['credentials', { scheme: 'credentials', username: 'ada', password: 'lovelace' }, 'ada'],
  ['credentials, wrong password', { scheme: 'credentials', username: 'ada', password: 'x' }, 401],
  ['credentials, unknown user', { scheme: 'credentials', username: 'bob', password: 'lovelace' }, 401],
  ['custom', { scheme: 'custom', name: 'hmac', data: 'signed' }, 'custom-user'],
  ['custom, unknown name', { scheme: 'custom', name: 'other', data: 'signed' }, 401],
  ['no credentials', undefined, 401],
];

const pskCases: Array<[string, string | undefined, string | number]> = [
  ['the right key', PSK, 'svc-a'],
  ['a wrong key', 'guess', 401],
  ['no key', undefined, 401],
];

interface Target {
  auth: string;
  psk: string;
  tls: string;
  /** Answers `whoami` with the caller's principal id. */
  close(): Promise<void>;
}

async function outcome(url: string, options: ConnectOptions): Promise<string | number> {
  try {
    const peer = await connect(url, options);
    try {
      const who = (await peer.call('whoami', { action: 'whoami' })) as unknown;
      return typeof who === 'string' ? who : ((who as Record<string, unknown>).principal as string);
    } finally {
      await peer.close();
    }
  } catch (err) {
    if (err instanceof FluxarError) return err.code;
    throw err;
  }
}

function runMatrix(name: string, start: () => Promise<Target>, clientCerts: { ca: Buffer; cert: Buffer; key: Buffer }) {
  describe(name, () => {
    let target: Target;
    before(async () => {
      target = await start();
    });
    after(() => target.close());
    for (const [label, credentials, expected] of authCases) {
      it(`auth: ${label} -> ${expected}`, async () => assert.equal(await outcome(target.auth, { credentials }), expected));
    }
    for (const [label, psk, expected] of pskCases) {
      it(`PSK: ${label} -> ${expected}`, async () =>
        assert.equal(await outcome(target.psk, { psk, credentials: { scheme: 'bearer', token: 't0ken' } }), expected));
    }
    it('TLS: a client certificate signed by the CA is required', async () => {
      const tls = { ca: clientCerts.ca, cert: clientCerts.cert, key: clientCerts.key };
      assert.equal(await outcome(target.tls, { tls, credentials: { scheme: 'bearer', token: 't0ken' } }), 'svc-a');
      await assert.rejects(connect(target.tls, { tls: { ca: clientCerts.ca }, credentials: { scheme: 'bearer', token: 't0ken' } }));
    });
  });
}

const certs = makeTestCerts();
const clientCerts = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };

runMatrix(
  'listen()',
  async () => {
    const auth = authFromSecrets(secrets);
    const tls = { key: certs.serverKey, cert: certs.serverCert, ca: certs.ca, requireClientCert: true };
    const a = await listen({ endpoints: ['tcp://127.0.0.1:0'], auth, logger: quiet });
    const p = await listen({ endpoints: ['tcp://127.0.0.1:0'], auth, psk: PSK, logger: quiet });
    const t = await listen({ endpoints: ['tls://127.0.0.1:0'], auth, tls, logger: quiet });
    for (const s of [a, p, t]) s.handle('whoami', (_p, ctx) => ctx.principal?.id);
    return { auth: a.addresses[0]!, psk: p.addresses[0]!, tls: t.addresses[0]!, close: async () => void (await Promise.all([a, p, t].map((s) => s.close()))) };
  },
  clientCerts,
);

runMatrix(
  'a rack, secrets from files and environment variables',
  async () => {
    writeFileSync(join(dir, 'tokens.yaml'), stringify(secrets.bearer));
    writeFileSync(join(dir, 'users.json'), JSON.stringify(secrets.credentials));
    writeFileSync(join(dir, 'hmac.yaml'), stringify(secrets.custom!.hmac));
    writeFileSync(join(dir, 'psk.txt'), `${PSK}\n`);
    writeFileSync(join(dir, 'ca.crt'), certs.ca);
    writeFileSync(join(dir, 'server.crt'), certs.serverCert);
    writeFileSync(join(dir, 'server.key'), certs.serverKey);
    const env = { FLUXAR_API_KEYS: JSON.stringify(secrets.api_key) };
    const auth = { bearer: 'file:tokens.yaml', api_key: 'env:FLUXAR_API_KEYS', credentials: 'file:users.json', custom: { hmac: 'file:hmac.yaml' } };
    // The probe gear answers `whoami` with the principal the fluxar gear put in meta peer.principal.
    const doc = {
      meta: { name: 'auth', version: '1' },
      gears: [
        { name: 'open', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'], auth } },
        { name: 'psk', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'], auth, psk: 'file:psk.txt' } },
        {
          name: 'tls',
          type: 'fluxar',
          config: { listen: ['tls://127.0.0.1:0'], auth, tls_cert: 'server.crt', tls_key: 'server.key', tls_ca: 'ca.crt', require_client_cert: true },
        },
        { name: 'who', type: 'wasm', config: { module: join(root, 'dist/test-gears/probe.wasm') } },
      ],
      wires: [
        { from: 'open.out', to: 'who.in' },
        { from: 'psk.out', to: 'who.in' },
        { from: 'tls.out', to: 'who.in' },
        { from: 'who.out', to: 'open.in' },
        { from: 'who.out', to: 'psk.in' },
        { from: 'who.out', to: 'tls.in' },
      ],
    };
    const file = join(dir, 'auth.yaml');
    writeFileSync(file, stringify(doc));
    const rack = new Rack({ scenario: parseScenario(stringify(doc), file), workers: 2, env, logger: quiet });
    await rack.start();
    return { auth: rack.addresses('open')[0]!, psk: rack.addresses('psk')[0]!, tls: rack.addresses('tls')[0]!, close: () => rack.stop() };
  },
  clientCerts,
);

describe('a rack with no verifiers', () => {
  it('refuses credentials it cannot verify with 401 (spec section 9), and accepts anonymous clients', async () => {
    const doc = {
      meta: { name: 'open', version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'who', type: 'wasm', config: { module: join(root, 'dist/test-gears/probe.wasm') } },
      ],
      wires: [
        { from: 'api.out', to: 'who.in' },
        { from: 'who.out', to: 'api.in' },
      ],
    };
    const file = join(dir, 'open.yaml');
    writeFileSync(file, stringify(doc));
    const rack = new Rack({ scenario: parseScenario(stringify(doc), file), workers: 1, logger: quiet });
    await rack.start();
    try {
      assert.equal(await outcome(rack.addresses()[0]!, { credentials: { scheme: 'bearer', token: 'anything' } }), 401);
      assert.equal(await outcome(rack.addresses()[0]!, {}), 'anonymous');
    } finally {
      await rack.stop();
    }
  });
});

describe('a Wasm gear with allow_http in a rack', () => {
  let http: Server;
  let url: string;
  let rack: Rack;
  before(async () => {
    http = createServer((req, res) => res.end(`hello from ${req.url}`));
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const doc = {
      meta: { name: 'http', version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        {
          name: 'fetch',
          type: 'wasm',
          config: { module: join(root, 'dist/test-gears/http-probe.wasm'), allow_http: true, http_allow_hosts: [new URL(url).host], timeout_ms: 3000 },
        },
      ],
      wires: [
        { from: 'api.out', to: 'fetch.in' },
        { from: 'fetch.out', to: 'api.in' },
      ],
    };
    const file = join(dir, 'http.yaml');
    writeFileSync(file, stringify(doc));
    rack = new Rack({ scenario: parseScenario(stringify(doc), file), workers: 2, logger: quiet });
    await rack.start();
  });
  after(async () => {
    await rack.stop();
    http.close();
  });

  it('fetches from an allowed host and is refused any other', async () => {
    const peer = await connect(rack.addresses()[0]!);
    const ok = (await peer.call('fetch', { url: `${url}/price?x=1` })) as Record<string, unknown>;
    assert.equal(ok.http_status, 200);
    assert.equal(ok.http_body, 'hello from /price?x=1');
    const refused = (await peer.call('fetch', { url: 'http://example.invalid/' })) as Record<string, unknown>;
    assert.equal(refused.http_status, 0);
    assert.match(refused.http_error as string, /host example\.invalid is not in http_allow_hosts/);
    await peer.close();
  });
});
