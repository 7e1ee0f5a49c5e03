// The nats gear: publishes messages to a subject (core NATS, or JetStream with pipelined
// acknowledgements), or feeds a subject's messages into the scenario.
import { type JetStreamClient, jetstream } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decodeFluxMsg, encodeFluxMsg } from '../fluxmsg/codec.js';
import { createFluxMsg, type FluxMsg, hopMessageId, idHex } from '../fluxmsg/fluxmsg.js';
import { configOf, type GearType, type MainGear, type MainGearContext, type GearSpec } from './gear.js';
import type { GearManifest } from './manifest.js';
import { PendingOutputs } from './pending-outputs.js';
import { fluxMsgOf } from './records.js';
import { publishRetrying } from './publish-retry.js';

export const manifest: GearManifest = {
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
    'JetStream publishes carry a Nats-Msg-Id made of the fluxMsg id and this gear: a message redelivered by a guaranteed wire and published again is dropped by the stream as a duplicate (within its duplicate window).',
    'An unconfirmed JetStream publish (a server restart, a stream electing a leader) is tried again with the same id for up to 15 s; a refusal by the stream (its limits) is final.',
  ],
};

export interface NatsGearConfig {
  subject: string;
  mode: 'publish' | 'subscribe';
  jetstream: boolean;
}

class NatsGear implements MainGear {
  private subscription: Subscription | undefined;
  private js: JetStreamClient | undefined;
  private readonly acks = new PendingOutputs();
  private seq = 0;
  private readonly config: NatsGearConfig;

  constructor(
    private readonly spec: GearSpec,
    private readonly nc: NatsConnection,
    private readonly ctx: MainGearContext,
  ) {
    this.config = configOf<NatsGearConfig>(spec, manifest);
  }

  async start(): Promise<void> {
    const { subject } = this.config;
    if (this.config.jetstream) this.js = jetstream(this.nc);
    if (this.config.mode !== 'subscribe') return;
    this.subscription = this.nc.subscribe(subject, {
      callback: (err, m) => {
        if (err !== null) return this.ctx.logger.warn({ gear: this.spec.name, err: err.message }, 'subscription error');
        let msg: FluxMsg;
        try {
          msg = decodeFluxMsg(m.data, { copyBuffers: true });
        } catch {
          // Not a fluxMsg: carry the bytes as they came.
          msg = createFluxMsg({ raw: m.data.slice(), meta: {} });
        }
        msg.meta['nats.subject'] = m.subject;
        this.ctx.inject(this.spec.name, 'out', msg, this.seq++);
      },
    });
  }

  receive(_port: string, msg: FluxMsg): void {
    this.publish(encodeFluxMsg(msg), msg);
  }

  receiveEncoded(_port: string, bytes: Uint8Array): void {
    // Only a JetStream publish reads the message (its id, for the dedupe header).
    this.publish(bytes, this.js === undefined ? undefined : fluxMsgOf(bytes));
  }

  private publish(bytes: Uint8Array, msg: FluxMsg | undefined): void {
    if (this.js === undefined || msg === undefined) {
      this.nc.publish(this.config.subject, bytes);
      return;
    }
    // JetStream publishes are pipelined: the acks are collected, not awaited one by one.
    const js = this.js;
    const msgID = hopMessageId(idHex(msg.id), this.spec.name, 'in');
    const ack = publishRetrying(() => js.publish(this.config.subject, bytes, { msgID }), retryable);
    this.acks.add(ack);
    ack.catch((err: Error) => this.ctx.logger.error({ gear: this.spec.name, err: err.message }, 'JetStream publish failed'));
  }

  async settled(): Promise<void> {
    await this.acks.settled();
  }

  async quiesce(): Promise<void> {
    this.subscription?.unsubscribe();
  }

  async stop(): Promise<void> {
    this.subscription?.unsubscribe();
    await this.acks.drained();
  }
}

/**
 * Unconfirmed rather than refused: no acknowledgement, no responder, a connection between
 * servers, or a cluster node whose JetStream has no meta leader yet ("jetstream is not enabled").
 */
function retryable(err: Error): boolean {
  return /timeout|no responders|503|disconnect|closed|jetstream is not enabled|unavailable|leader/i.test(err.message);
}

export const natsGear: GearType = {
  manifest,
  main: (spec, ctx) => {
    if (ctx.nats === undefined) {
      throw new Error(`gear ${spec.name} (nats) needs NATS: start the rack with --nats URL (or FLUXRIG_NATS_URL, or nats.url in the rack config)`);
    }
    return new NatsGear(spec, ctx.nats, ctx);
  },
};
