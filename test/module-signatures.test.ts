// fluxrig's module supply chain: the vendor's signature (fluxrig.signature, a raw 64-byte Ed25519
// signature over the SHA-256 of the module without it) and the Mixer's countersignature
// (fluxrig.cluster.signature), checked against fluxrig's algorithm written here from its
// documented format; then the whole chain over a real nats-server: an import through the Mixer's
// API, and racks that load only countersigned modules.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { ModuleBucket } from '../src/bus/module-bucket.js';
import { connect } from '../src/fluxar/mod.js';
import { prepareModule } from '../src/gears/wasm/loader.js';
import { countersignModule, publicKeyFromRaw, rawPublicKey, signModule, verifyCountersignature, verifyModule } from '../src/gears/wasm/signature.js';
import { buildMixerApi } from '../src/mixer/api.js';
import { Mixer } from '../src/mixer/mixer.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { NatsServerProcess } from './harness/nats.js';

const root = new URL('../../', import.meta.url).pathname;
const fraud = readFileSync(join(root, 'wasm-gears/build/fraud-scorer.wasm'));

// ---- fluxrig's algorithm, from its format (pkg/wasm/catalog): custom sections by hand ----------

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function readLeb(bytes: Uint8Array, at: number): [number, number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const b = bytes[at++]!;
    value |= (b & 0x7f) << shift;
    if (b < 0x80) return [value >>> 0, at];
    shift += 7;
  }
}

/** AppendCustomSection: section id 0, size, name length, name, content. */
function appendSection(module: Uint8Array, name: string, content: Uint8Array): Uint8Array {
  const body = Buffer.concat([Buffer.from(leb(name.length)), Buffer.from(name), content]);
  return Buffer.concat([module, Buffer.from([0, ...leb(body.length)]), body]);
}

/** ExtractCustomSection: the named section's content, and the module without that section. */
function extractSection(module: Uint8Array, name: string): { content: Uint8Array; stripped: Uint8Array } | undefined {
  let at = 8;
  while (at < module.length) {
    const start = at;
    const id = module[at++]!;
    const [size, body] = readLeb(module, at);
    at = body + size;
    if (id !== 0) continue;
    const [nameLen, nameAt] = readLeb(module, body);
    if (Buffer.from(module.subarray(nameAt, nameAt + nameLen)).toString() !== name) continue;
    return { content: module.subarray(nameAt + nameLen, at), stripped: Buffer.concat([module.subarray(0, start), module.subarray(at)]) };
  }
  return undefined;
}

const exec = promisify(execFile);
const run = (file: string, args: string[]) => exec(file, args, { cwd: root });

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();

function keyPair(): { privateKey: KeyObject; raw: Uint8Array; seed: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, raw: rawPublicKey(publicKey), seed: privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32) };
}

describe("module signatures in fluxrig's format", () => {
  const vendor = keyPair();
  const cluster = keyPair();

  it("a module signed by fluxrig's algorithm verifies here, with a raw .pub key", () => {
    const signed = appendSection(fraud, 'fluxrig.signature', sign(null, sha256(fraud), vendor.privateKey));
    const check = verifyModule(signed, [vendor.raw]);
    assert.equal(check.ok, true, JSON.stringify(check));
    assert.equal((check as { deprecated?: string }).deprecated, undefined);
  });

  it("ours verifies under fluxrig's algorithm, signed with a raw key as fluxrig keeps it (seed and public key)", () => {
    const signed = signModule(fraud, Buffer.concat([vendor.seed, vendor.raw]));
    const section = extractSection(signed, 'fluxrig.signature')!;
    assert.equal(section.content.length, 64);
    assert.ok(verify(null, sha256(section.stripped), publicKeyFromRaw(vendor.raw), section.content));
    assert.deepEqual(Buffer.from(section.stripped), Buffer.from(fraud), 'the signature is the only change');
  });

  it("the Mixer's countersignature verifies as a fluxrig rack checks it, and the vendor's still does", () => {
    const signed = countersignModule(signModule(fraud, vendor.seed), cluster.seed);
    const section = extractSection(signed, 'fluxrig.cluster.signature')!;
    assert.ok(verify(null, sha256(section.stripped), publicKeyFromRaw(cluster.raw), section.content));
    assert.equal(verifyCountersignature(signed, [cluster.raw]).ok, true);
    assert.equal(verifyModule(signed, [vendor.raw]).ok, true, 'the countersignature does not break the vendor signature');
    // And one countersigned by fluxrig's algorithm verifies here.
    const theirs = appendSection(
      signModule(fraud, vendor.seed),
      'fluxrig.cluster.signature',
      sign(null, sha256(signModule(fraud, vendor.seed)), cluster.privateKey),
    );
    assert.equal(verifyCountersignature(theirs, [cluster.raw]).ok, true);
  });

  it('loads vendor-only and vendor-plus-cluster; refuses tampered, untrusted and missing countersignatures', () => {
    const config = { module: 'fraud', allow_kv: true };
    const vendorOnly = signModule(fraud, vendor.seed);
    const both = countersignModule(vendorOnly, cluster.seed);
    assert.equal(prepareModule(vendorOnly, 'v', config, { trustedKeys: [vendor.raw] }).signer !== undefined, true);
    assert.ok(prepareModule(both, 'vc', config, { trustedKeys: [vendor.raw], clusterKeys: [cluster.raw] }));
    const tampered = Buffer.from(both);
    tampered[100] = tampered[100]! ^ 0xff;
    assert.throws(() => prepareModule(tampered, 't', config, { clusterKeys: [cluster.raw] }), /cluster signature does not match/);
    assert.throws(() => prepareModule(tampered, 't', config, { trustedKeys: [vendor.raw] }), /matches no trusted key/);
    assert.throws(() => prepareModule(vendorOnly, 'u', config, { trustedKeys: [keyPair().raw] }), /matches no trusted key/);
    assert.throws(() => prepareModule(vendorOnly, 'm', config, { clusterKeys: [cluster.raw] }), /no fluxrig\.cluster\.signature/);
  });

  it('still verifies our earlier 96-byte format, saying it is deprecated', () => {
    const unsigned = fraud;
    const legacy = appendSection(unsigned, 'fluxrig.signature', Buffer.concat([sign(null, sha256(unsigned), vendor.privateKey), vendor.raw]));
    const prepared = prepareModule(legacy, 'legacy', { module: 'legacy', allow_kv: true }, { trustedKeys: [vendor.raw] });
    assert.match(prepared.signatureNote ?? '', /earlier format .*fluxrig wasm sign/);
  });
});

describe('the supply chain on the bus: import through the Mixer, racks load countersigned modules only', () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  let api: FastifyInstance;
  let base: string;
  const vendor = keyPair();
  const racks: Rack[] = [];
  const logger = pino({ level: 'silent' });

  before(async () => {
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url });
    const keys = mkdtempSync(join(tmpdir(), 'fluxrig-vendor-keys-'));
    writeFileSync(join(keys, 'acme.pub'), vendor.raw);
    mixer = new Mixer({ nats: nc, logger, vendorKeysDir: keys });
    await mixer.start();
    api = await buildMixerApi({ mixer, token: 't', version: 'test' });
    base = await api.listen({ host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    for (const r of racks) await r.stop();
    await api?.close();
    await mixer?.close();
    await nc?.close();
    await nats?.stop();
  });

  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  async function rackWith(module: string, clusterKeys: Uint8Array[]): Promise<Rack> {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-chain-'));
    mkdirSync(dir, { recursive: true });
    const scenario = parseScenario(
      stringify({
        meta: { name: 'chain', version: '1' },
        gears: [
          { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
          { name: 'fraud', type: 'wasm', config: { module, allow_kv: true } },
        ],
        wires: [
          { from: 'api.out', to: 'fraud.in' },
          { from: 'fraud.out', to: 'api.in' },
          { from: 'fraud.error', to: 'api.in' },
        ],
      }),
      join(dir, 'chain.yaml'),
    );
    const rack = new Rack({ scenario, workers: 0, logger, natsUrl: nats.url, moduleBucket: 'fluxrig-modules', clusterKeys });
    racks.push(rack);
    return rack;
  }

  it('imports a vendor-signed module, countersigned into the bucket; a rack with the key loads and runs it', async () => {
    const res = await post('/modules', { name: 'fraud', version: '1.0.0', module: Buffer.from(signModule(fraud, vendor.seed)).toString('base64') });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.vendor, 'acme');
    const key = Buffer.from(mixer.moduleKey.raw_hex, 'hex');
    const stored = await (await ModuleBucket.open(nc, 'fluxrig-modules')).resolve('fraud', '1.0.0');
    assert.equal(verifyCountersignature(stored, [key]).ok, true);
    assert.equal(verifyModule(stored, [vendor.raw]).ok, true);
    const rack = await rackWith('urn:wasm:fraud:1.0.0', [key]);
    await rack.start();
    const peer = await connect(rack.addresses('api')[0]!);
    assert.equal(((await peer.call('pay', { amount: 5 })) as Record<string, unknown>).decision, 'approved');
    await peer.close();
  });

  it('refuses to import an untrusted or unsigned module (unless allowed), and says why', async () => {
    const other = await post('/modules', { name: 'x', version: '1', module: Buffer.from(signModule(fraud, keyPair().seed)).toString('base64') });
    assert.equal(other.status, 400);
    assert.match(String(other.body.error), /vendor signature refused: .*no trusted key/);
    const unsigned = await post('/modules', { name: 'x', version: '1', module: Buffer.from(fraud).toString('base64') });
    assert.equal(unsigned.status, 400);
    assert.match(String(unsigned.body.error), /not signed/);
    const allowed = await post('/modules', { name: 'dev', version: '1', module: Buffer.from(fraud).toString('base64'), allow_unsigned: true });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body.vendor, null);
    const audit = mixer.audit.list({ target: 'x:1' });
    assert.equal(audit.length, 2);
    assert.ok(audit.every((a) => a.error !== null));
  });

  it('the CLI imports through the Mixer and fetches its module key, raw as fluxrig keeps keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-chain-cli-'));
    const module = join(dir, 'fraud.wasm');
    writeFileSync(module, signModule(fraud, vendor.seed));
    const cli = join(root, 'dist/src/cli/main.js');
    const client = ['--api', base, '--token', 't'];
    const imported = await run(process.execPath, [cli, 'wasm', 'import', module, '--name', 'fraud', '--version', '2', '--mixer', ...client]);
    assert.match(imported.stdout, /urn:wasm:fraud:2 -> .*signed by acme, countersigned by the Mixer/);
    await run(process.execPath, [cli, 'wasm', 'cluster-key', '--out', join(dir, 'cluster.pub'), ...client]);
    assert.deepEqual(readFileSync(join(dir, 'cluster.pub')), Buffer.from(mixer.moduleKey.raw_hex, 'hex'));
    writeFileSync(module, await (await ModuleBucket.open(nc, 'fluxrig-modules')).resolve('fraud', '2'));
    const verified = await run(process.execPath, [cli, 'wasm', 'verify', module, '--cluster', join(dir, 'cluster.pub')]);
    assert.match(verified.stdout, /countersigned by the Mixer's key/);
  });

  it('a rack with the key refuses a module put in the bucket without the countersignature', async () => {
    const bucket = await ModuleBucket.open(nc, 'fluxrig-modules');
    await bucket.import(signModule(fraud, vendor.seed), 'sideloaded', '1');
    const rack = await rackWith('urn:wasm:sideloaded:1', [Buffer.from(mixer.moduleKey.raw_hex, 'hex')]);
    await assert.rejects(rack.start(), /refused: no fluxrig\.cluster\.signature/);
  });
});
