// The Mixer's audit trail: who approved, pushed or commanded what, and how it went. Kept in a
// JetStream stream, so that every Mixer lists the same trail and it outlives any of them.
import { DeliverPolicy, DiscardPolicy, type JetStreamManager, jetstream, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { decodeMessage, encodeMessage, Fields } from '../bus/mixer-protocol.js';
import { ensureStream, followStream } from '../bus/streams.js';
import { AUDIT_STREAM, AUDIT_SUBJECT } from '../bus/subjects.js';

export const AUDIT_STREAM_LIMITS = { max_msgs: 100_000, max_age_ms: 365 * 24 * 3600_000 } as const;

/** Who asked: the API takes the name from X-Fluxrig-Actor (the CLI sends user@host) and the address. */
export interface Actor {
  name: string;
  address: string;
}

export interface AuditEntry {
  time: number;
  actor: string;
  address: string;
  /** approve, suspend, activate, deny, remove, push, command, import, kv-put, kv-delete. */
  action: string;
  /** The rack, scenario, module or KV key acted on. */
  target: string;
  detail: string;
  ok: boolean;
  error: string | null;
  mixer: string;
}

export async function ensureAuditStream(jsm: JetStreamManager): Promise<void> {
  await ensureStream(jsm, {
    name: AUDIT_STREAM,
    subjects: [AUDIT_SUBJECT],
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    storage: StorageType.File,
    max_msgs: AUDIT_STREAM_LIMITS.max_msgs,
    max_age: AUDIT_STREAM_LIMITS.max_age_ms * 1_000_000,
  });
}

export class AuditLog {
  private readonly entries: AuditEntry[] = [];
  private closeConsumer: (() => Promise<void>) | undefined;

  constructor(
    private readonly nats: NatsConnection,
    private readonly mixer: string,
    private readonly log: Logger,
    private readonly keep = 10_000,
  ) {}

  async start(): Promise<void> {
    this.closeConsumer = await followStream(this.nats, AUDIT_STREAM, { deliver_policy: DeliverPolicy.All }, (m) => {
      try {
        this.entries.push(readEntry(decodeMessage(m.data)));
        if (this.entries.length > this.keep * 1.25) this.entries.splice(0, this.entries.length - this.keep);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, seq: m.seq }, 'an audit entry could not be read');
      }
    });
  }

  async stop(): Promise<void> {
    await this.closeConsumer?.();
  }

  /** Records what was done; a trail that cannot be written is logged as an error, loudly. */
  async record(actor: Actor, action: string, target: string, detail: string, error: string | null): Promise<void> {
    const entry: AuditEntry = {
      time: Date.now(),
      actor: actor.name,
      address: actor.address,
      action,
      target,
      detail,
      ok: error === null,
      error,
      mixer: this.mixer,
    };
    try {
      await jetstream(this.nats).publish(AUDIT_SUBJECT, encodeMessage({ ...entry }));
    } catch (err) {
      this.log.error({ err, entry }, 'the audit trail could not be written');
    }
  }

  /** The newest entries, oldest first, optionally of one target or actor. */
  list(query: { limit?: number; target?: string; actor?: string } = {}): AuditEntry[] {
    const out: AuditEntry[] = [];
    for (let i = this.entries.length - 1; i >= 0 && out.length < (query.limit ?? 100); i--) {
      const e = this.entries[i]!;
      if ((query.target === undefined || e.target === query.target) && (query.actor === undefined || e.actor === query.actor)) out.push(e);
    }
    return out.reverse();
  }
}

function readEntry(data: Record<string, unknown>): AuditEntry {
  const f = Fields.of(data, 'audit entry');
  return {
    time: f.number('time'),
    actor: f.text('actor', 256),
    address: f.text('address', 256),
    action: f.text('action', 64),
    target: f.text('target', 256),
    detail: f.text('detail', 4096),
    ok: f.bool('ok'),
    error: f.optionalText('error'),
    mixer: f.text('mixer', 64),
  };
}
