/**
 * Every gear type is declared once, here: its ports, where it runs, and the shape of its config.
 * Validation, `fluxrig gears list|doc` and scenarios/scenario.schema.json all read these.
 */

import {
  DEFAULT_DECODE_ITEMS_PER_S,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_INFLATE_BYTES_PER_S,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_IP,
  DEFAULT_MAX_FRAME,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_UPGRADE_TIMEOUT_MS,
  MAX_FRAME_CEILING,
  MIN_MAX_FRAME,
} from '../fluxar/constants.js';

/** A small JSON-Schema-like description of a config value (what the manifests need, no more). */
export type ConfigSchema =
  | { type: 'string'; description: string; enum?: string[]; pattern?: string; default?: string }
  | { type: 'integer' | 'number'; description: string; minimum?: number; maximum?: number; default?: number }
  | { type: 'boolean'; description: string; default?: boolean }
  | { type: 'array'; description: string; items: ConfigSchema; minItems?: number }
  | { type: 'object'; description: string; properties: Record<string, ConfigSchema>; required?: string[]; additionalProperties?: ConfigSchema }
  | { type: 'any'; description: string };

export interface GearManifest {
  type: string;
  summary: string;
  /** main: terminates I/O on the main thread; worker: runs in every worker (shared-nothing). */
  placement: 'main' | 'worker';
  inputs: string[];
  outputs: string[];
  config: Extract<ConfigSchema, { type: 'object' }>;
  /** Longer notes for `fluxrig gears doc`. */
  notes: string[];
}

const endpointPattern = '^(tcp|tls|ws|wss|unix)://';

export const GEAR_MANIFESTS: Record<string, GearManifest> = {
  fluxar: {
    type: 'fluxar',
    summary: 'FLUXAR I/O: serves clients (server mode) over tcp/tls/ws/wss/unix; calls become fluxMsgs',
    placement: 'main',
    inputs: ['in'],
    outputs: ['out'],
    config: {
      type: 'object',
      description: 'FLUXAR gear',
      properties: {
        listen: {
          type: 'array',
          description: 'endpoints to serve: tcp://host:port, tls://, ws://host:port/path, wss://, unix:///path',
          items: { type: 'string', description: 'endpoint URL', pattern: endpointPattern },
          minItems: 1,
        },
        tls_cert: { type: 'string', description: 'PEM certificate file for tls:// and wss://' },
        tls_key: { type: 'string', description: 'PEM key file for tls:// and wss://' },
        bearer_tokens: {
          type: 'object',
          description: 'accepted bearer tokens and the principal id each stands for',
          properties: {},
          additionalProperties: { type: 'string', description: 'principal id' },
        },
        max_frame: {
          type: 'integer',
          description: 'largest frame accepted, bytes',
          minimum: MIN_MAX_FRAME,
          maximum: MAX_FRAME_CEILING,
          default: DEFAULT_MAX_FRAME,
        },
        max_in_flight: { type: 'integer', description: 'calls in flight per connection before 429', minimum: 1, default: DEFAULT_MAX_IN_FLIGHT },
        heartbeat_ms: { type: 'integer', description: 'heartbeat interval announced to clients', minimum: 0, default: DEFAULT_HEARTBEAT_MS },
        max_connections: {
          type: 'integer',
          description: 'connections held at once per listener; more are refused with a 503 bye (HTTP 503 on ws)',
          minimum: 1,
          default: DEFAULT_MAX_CONNECTIONS,
        },
        max_connections_per_ip: {
          type: 'integer',
          description: 'connections held at once from one client address, per listener',
          minimum: 1,
          default: DEFAULT_MAX_CONNECTIONS_PER_IP,
        },
        upgrade_timeout_ms: {
          type: 'integer',
          description: 'ws/wss: time for the HTTP upgrade (and TLS handshake) to complete',
          minimum: 100,
          default: DEFAULT_UPGRADE_TIMEOUT_MS,
        },
        inflate_bytes_per_s: {
          type: 'integer',
          description: 'per-connection budget of bytes inflated from compressed frames per second (429 bye past it)',
          minimum: 1024,
          default: DEFAULT_INFLATE_BYTES_PER_S,
        },
        decode_items_per_s: {
          type: 'integer',
          description: 'per-connection budget of CBOR items decoded per second (429 bye past it)',
          minimum: 1000,
          default: DEFAULT_DECODE_ITEMS_PER_S,
        },
      },
      required: ['listen'],
    },
    notes: [
      "A call, publish or stream chunk from a client becomes a fluxMsg on `out`: meta carries conn.id, fluxar.type, fluxar.target, peer.ip, peer.port (and the call's own meta as text); the payload goes into data when it is a map, data.payload otherwise, raw when it is bytes.",
      'A message on `in` with conn.id and fluxar.call is the answer to that call: its data goes back as the payload. A message that carries error.reason (a rejection) is answered with FLUXAR error 403 and the reason as the message.',
      'The connection lives on the main thread; its FLUXAR session (handshake, auth, RPC) runs in the worker that owns the connection.',
    ],
  },
  wasm: {
    type: 'wasm',
    summary: 'runs a Wasm logic gear (docs/wasm-abi.md) in every worker',
    placement: 'worker',
    inputs: ['in'],
    outputs: ['out', 'error'],
    config: {
      type: 'object',
      description: 'Wasm gear',
      properties: {
        module: { type: 'string', description: 'path (relative to the scenario), file://path or urn:wasm:NAME:VERSION' },
        entrypoint: { type: 'string', description: 'exported function that handles a message', default: 'process' },
        allow_kv: { type: 'boolean', description: 'grant flux_kv_get and flux_kv_put', default: false },
        allow_http: { type: 'boolean', description: 'grant flux_req_http (to http_allow_hosts only)', default: false },
        http_allow_hosts: { type: 'array', description: 'hosts the gear may call', items: { type: 'string', description: 'host or host:port' } },
        memory_limit_pages: { type: 'integer', description: 'linear memory ceiling in 64 KiB pages', minimum: 1, maximum: 65536, default: 256 },
        timeout_ms: { type: 'integer', description: 'per-message time limit', minimum: 1, default: 100 },
        log_rate_per_s: { type: 'integer', description: 'log lines per second', minimum: 0, default: 50 },
      },
      required: ['module'],
    },
    notes: ['OK passes the message(s) to `out`; Reject sends it to `error` with meta error.reason and error.gear; Drop is counted.'],
  },
  router: {
    type: 'router',
    summary: 'routes each message to the first named out port whose rule matches its meta or data',
    placement: 'worker',
    inputs: ['in'],
    outputs: ['default'],
    config: {
      type: 'object',
      description: 'router',
      properties: {
        routes: {
          type: 'array',
          description: 'rules, first match wins; messages matching none go to `default`',
          items: {
            type: 'object',
            description: 'a rule',
            properties: {
              port: { type: 'string', description: 'out port this rule sends to', pattern: '^[a-z0-9_-]+$' },
              meta: {
                type: 'object',
                description: 'meta keys and the text they must equal',
                properties: {},
                additionalProperties: { type: 'string', description: 'value' },
              },
              data: {
                type: 'object',
                description: 'data keys and the value they must equal (text, number or boolean)',
                properties: {},
                additionalProperties: { type: 'any', description: 'value' },
              },
            },
            required: ['port'],
          },
          minItems: 1,
        },
      },
      required: ['routes'],
    },
    notes: ['Its out ports are `default` plus every `port` named in routes.'],
  },
  log: {
    type: 'log',
    summary: 'a sink: writes every message it receives to the rack log (pino)',
    placement: 'main',
    inputs: ['in'],
    outputs: [],
    config: {
      type: 'object',
      description: 'log sink',
      properties: {
        level: { type: 'string', description: 'log level', enum: ['debug', 'info', 'warn', 'error'], default: 'info' },
        fields: { type: 'array', description: 'data fields to include (default: all)', items: { type: 'string', description: 'field' } },
      },
    },
    notes: [],
  },
  generator: {
    type: 'generator',
    summary: 'a source: emits messages at a set rate (load, heartbeats, tests)',
    placement: 'main',
    inputs: [],
    outputs: ['out'],
    config: {
      type: 'object',
      description: 'generator',
      properties: {
        rate_per_s: { type: 'number', description: 'messages per second', minimum: 0.001 },
        count: { type: 'integer', description: 'stop after this many (default: run until the rack stops)', minimum: 1 },
        data: {
          type: 'object',
          description: 'data of every message; data.seq is added',
          properties: {},
          additionalProperties: { type: 'any', description: 'value' },
        },
      },
      required: ['rate_per_s'],
    },
    notes: ['Paused while the worker lanes it feeds are full: a source never outruns the rack.'],
  },
  nats: {
    type: 'nats',
    summary: "publishes messages to a NATS subject, or feeds a subject's messages into the scenario (core NATS or JetStream)",
    placement: 'main',
    inputs: ['in'],
    outputs: ['out'],
    config: {
      type: 'object',
      description: 'NATS gear',
      properties: {
        subject: { type: 'string', description: 'subject to publish to (messages on `in`) or subscribe to (messages on `out`)' },
        mode: { type: 'string', description: 'publish or subscribe', enum: ['publish', 'subscribe'] },
        jetstream: { type: 'boolean', description: 'publish with JetStream acknowledgements (the subject must belong to a stream)', default: false },
      },
      required: ['subject', 'mode'],
    },
    notes: [
      'Needs the rack to be connected to NATS (--nats URL, FLUXRIG_NATS_URL or the rack config); without it the rack refuses the scenario and says so.',
      'Messages travel as CBOR fluxMsgs.',
    ],
  },
};

/** The out ports a gear has, given its config (a router's are named by its routes). */
export function outputPorts(type: string, config: unknown): string[] {
  const manifest = GEAR_MANIFESTS[type];
  if (manifest === undefined) return [];
  if (type === 'router' && config !== null && typeof config === 'object' && Array.isArray((config as { routes?: unknown }).routes)) {
    const named = (config as { routes: Array<{ port?: unknown }> }).routes.map((r) => r.port).filter((p): p is string => typeof p === 'string');
    return [...new Set([...manifest.outputs, ...named])];
  }
  return manifest.outputs;
}
