// The rack's bus wires, on the main thread: what its gears send along guaranteed wires is
// published to JetStream here, and what its gears receive along them is pulled from their
// durable consumers here, handed to a worker, and acknowledged once the chain is done with it.
import { type Consumer, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { type NatsConnection, PermissionViolationError } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { AsyncPublisher, type PublishAck, type PublishWaiter, PublishTimeout } from '../bus/async-publisher.js';
import { deadLetterSubject, deliveryCount, deliveryOf, laneConsumerName, laneMessageId, laneStreamName, laneSubject, provisionLanes } from '../bus/lanes.js';
import { ErrorCode } from '../fluxar/codes.js';
import { decodeFluxMsg, encodeFluxMsg } from '../fluxmsg/codec.js';
import { createFluxMsg } from '../fluxmsg/fluxmsg.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import type { MainGear } from '../gears/gear.js';
import { PendingOutputs, TrackedOutput } from '../gears/pending-outputs.js';
import { PUBLISH_RETRY_MS, type RetryState, retryDelayMs } from '../gears/publish-retry.js';
import { LaneOutcome, type LaneDoneRecord, type LanePublishRecord, Records } from '../gears/records.js';
import type { Pausable } from '../ring/pool.js';
import { busWires } from '../scenario/lanes.js';
import type { WireDelivery } from '../scenario/lanes.js';
import type { Scenario, WireSpec } from '../scenario/types.js';
import { LANE_DEFAULTS } from './defaults.js';

/** What the lanes need from the rack. */
export interface LaneHost {
  log: Logger;
  /** Sends a LaneDeliver record to the worker owning `key`; pauses `source` while its ring is full. Returns the worker. */
  deliver(key: number, payload: Uint8Array, source: Pausable): number;
  /** Answers call `call` of connection `conn` (its fluxar gear's `in` port). */
  answer(conn: number, msg: FluxMsg): void;
  /** Pauses (true) or resumes (false) the rack's connections: the publish window is full. */
  hold(on: boolean): void;
  /** Settles once every main-thread gear has finished with what it received so far (JetStream acks). */
  settled(): Promise<void>;
}

/** Counters of the rack's bus wires since it started. */
export interface LaneCounts {
  published: number;
  /** Publishes the bus refused or never confirmed within the retry time: their senders were told. */
  publishFailed: number;
  /** Publishes tried again (a server restart, a leader change); the stream drops the duplicates. */
  publishRetries: number;
  duplicates: number;
  delivered: number;
  acked: number;
  redelivered: number;
  deadLettered: number;
  /**
   * Deliveries run again because what they led to could not be sent on (the bus down, a
   * downstream stream full): not the message's fault, so it cost no attempt.
   */
  onwardRetries: number;
  /** Deliveries held now, waiting to run again for that reason: a stalled wire. */
  stalled: number;
  /** Publishes waiting for their acknowledgement now. */
  outstanding: number;
  /**
   * Messages the stream offered this rack that it has not acked, refused or dead-lettered yet: what
   * a slow consumer holds. At most max_ack_pending per wire; the backlog waits in the stream.
   */
  holding: number;
}

interface Inbound {
  wire: WireSpec;
  delivery: WireDelivery;
  name: string;
  /** Deliveries of an ordered wire all go to one worker, in stream order. */
  orderKey: number;
  /** Found when the wire is taken up; pulled from open() on. */
  consumer: Consumer;
  messages: ConsumerMessages | undefined;
  source: Pausable;
}

interface Pending {
  m: JsMsg;
  inbound: Inbound;
  worker: number;
  /** Times what it led to could not be sent on (no attempt counted). */
  onwardFailures: number;
}

/** What a LanePublish needs from its GuaranteedLanes: one per rack, not a closure per message. */
interface LanePublishing {
  publisher: AsyncPublisher;
  retried(): void;
  published(p: LanePublish, err: Error | undefined, ack: PublishAck | undefined): void;
}

/**
 * A message on its way to its wire's stream, and all that is kept while the stream confirms it:
 * tracked (PendingOutputs), waiting (AsyncPublisher) and tried again (RetryState) as this one
 * object. At tens of thousands a second, with acknowledgements some milliseconds away, what a
 * publish keeps outlives a young-generation cycle, and the collector copies it.
 */
class LanePublish extends TrackedOutput implements PublishWaiter, RetryState {
  attempt = 0;
  readonly retryUntil = Date.now() + PUBLISH_RETRY_MS;

  constructor(
    readonly record: LanePublishRecord,
    readonly subject: string,
    private readonly lanes: LanePublishing,
  ) {
    super();
  }

  /** Publishes once more, with the same message id: the stream drops what arrives twice. */
  send(): void {
    const { record } = this;
    this.lanes.publisher.send(this.subject, record.bytes, laneMessageId(record.id, record.gear, record.port), LANE_DEFAULTS.publish_timeout_ms, this);
  }

  published(err: Error | undefined, ack?: PublishAck): void {
    if (err !== undefined) {
      const delay = retryDelayMs(this, err, retryable);
      if (delay !== undefined) {
        this.lanes.retried();
        setTimeout(() => this.send(), delay);
        return;
      }
    }
    this.lanes.published(this, err, ack);
  }
}

/** Held deliveries whose onward sends failed, and the timers that keep them held and run them again. */
interface Stall {
  batch: Pending[];
  working: NodeJS.Timeout;
  retry: NodeJS.Timeout;
}

export class GuaranteedLanes implements MainGear {
  private readonly tally: Omit<LaneCounts, 'outstanding' | 'holding' | 'stalled'> = {
    published: 0,
    publishFailed: 0,
    publishRetries: 0,
    duplicates: 0,
    delivered: 0,
    acked: 0,
    redelivered: 0,
    deadLettered: 0,
    onwardRetries: 0,
  };
  private readonly js: JetStreamClient;
  private readonly publisher: AsyncPublisher;
  private readonly publishing: LanePublishing;
  private jsm: JetStreamManager | undefined;
  private readonly inbound = new Map<string, Inbound>();
  private readonly pending = new Map<number, Pending>();
  private readonly publishes = new PendingOutputs();
  private readonly subjects = new Map<string, Map<string, string>>();
  private nextToken = 1;
  private held = false;
  /** Main-thread sources (a generator) that published past the window: resumed with the connections. */
  private readonly pausedSources = new Set<Pausable>();
  private quiesced = false;
  /** Deliveries that went on to the main thread: acked once it has finished with them. */
  private settling: Pending[] = [];
  private settleScheduled = false;
  /** See LaneCounts.holding. */
  private holding = 0;
  private readonly stalls = new Set<Stall>();
  private lastStallLog = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly rack: string,
    private scenario: Scenario,
    private gears: ReadonlySet<string>,
    private readonly host: LaneHost,
    private readonly window = LANE_DEFAULTS.publish_window,
  ) {
    this.js = jetstream(nc);
    this.publisher = new AsyncPublisher(nc);
    this.publishing = {
      publisher: this.publisher,
      retried: () => {
        this.tally.publishRetries++;
      },
      published: (p, err, ack) => this.published(p, err, ack),
    };
  }

  get counts(): LaneCounts {
    let stalled = 0;
    for (const s of this.stalls) stalled += s.batch.length;
    return { ...this.tally, outstanding: this.publishes.size, holding: this.holding, stalled };
  }

  /** Whether a scenario has bus wires this rack sends or receives on. */
  static needed(scenario: Scenario, gears: ReadonlySet<string>): boolean {
    return busWires(scenario).some((w) => gears.has(w.from.gear) || gears.has(w.to.gear));
  }

  /**
   * Provisions, and finds the consumer of every wire into this rack's gears. Nothing is pulled
   * until open(): a delivery must find the gears it leads to running, on the workers and on the
   * main thread, or what it leads to there is lost.
   */
  async start(): Promise<void> {
    await this.provision();
    await this.follow();
  }

  /**
   * Takes up a new scenario: its stream and consumers; stops pulling wires that are gone and
   * finds the consumers of new ones. Their pulls start with open(), once the scenario runs.
   */
  async reconfigure(scenario: Scenario, gears: ReadonlySet<string>): Promise<void> {
    this.scenario = scenario;
    this.gears = gears;
    await this.provision();
    await this.follow();
  }

  /** Pulls every wire into this rack's gears that is not pulled yet. */
  open(): void {
    if (this.quiesced) return;
    for (const inbound of this.inbound.values()) if (inbound.messages === undefined) this.pull(inbound);
  }

  /**
   * Makes or updates the stream and consumers (the Mixer has, on a rollout). A rack the bus does
   * not allow to (mTLS permissions) goes on with what the Mixer made; if that is missing too,
   * following the wires fails and says so.
   */
  private async provision(): Promise<void> {
    try {
      this.jsm ??= await jetstreamManager(this.nc);
      const changes = await provisionLanes(this.jsm, this.scenario);
      if (changes.length > 0) this.host.log.info({ stream: laneStreamName(this.scenario.meta.name), changes }, 'guaranteed lanes provisioned');
    } catch (err) {
      const stream = laneStreamName(this.scenario.meta.name);
      // On an mTLS bus that is the design, not a fault: the Mixer provisioned them before the push.
      if (deniedByPermissions(err)) this.host.log.info({ stream }, 'guaranteed lanes: the bus lets the Mixer provision them; using what it made');
      else this.host.log.warn({ err, stream }, 'could not provision the guaranteed lanes; using what exists');
    }
  }

  /** Finds the consumers of the wires into this rack's gears; stops pulling wires that are gone. */
  private async follow(): Promise<void> {
    const wanted = new Map<string, WireSpec>();
    for (const wire of busWires(this.scenario)) if (this.gears.has(wire.to.gear)) wanted.set(laneConsumerName(wire), wire);
    for (const [name, inbound] of this.inbound) {
      if (wanted.has(name) && JSON.stringify(deliveryOf(wanted.get(name)!)) === JSON.stringify(inbound.delivery)) continue;
      await inbound.messages?.close();
      this.inbound.delete(name);
    }
    if (this.quiesced) return;
    const stream = laneStreamName(this.scenario.meta.name);
    for (const [name, wire] of wanted) {
      if (this.inbound.has(name)) continue;
      this.inbound.set(name, {
        wire,
        delivery: deliveryOf(wire),
        name,
        orderKey: this.inbound.size,
        consumer: await this.js.consumers.get(stream, name),
        messages: undefined,
        source: { pause() {}, resume() {} },
      });
    }
  }

  /** consume(), and again every pull_expires_ms while it cannot start (the server away). */
  private pull(inbound: Inbound): void {
    const again = () =>
      this.consume(inbound).catch((e: unknown) => {
        if (this.quiesced || this.inbound.get(inbound.name) !== inbound) return;
        this.host.log.warn({ wire: inbound.name, err: e }, 'a guaranteed wire cannot pull yet; trying again');
        setTimeout(again, LANE_DEFAULTS.pull_expires_ms).unref();
      });
    void again();
  }

  /**
   * Pulls a wire's consumer. Short pulls with idle heartbeats notice a server restart or a
   * leader change within seconds; a pull loop that ends by itself (not closed by us) is
   * started again.
   */
  private async consume(inbound: Inbound): Promise<void> {
    const messages = await inbound.consumer.consume({
      max_messages: Math.min(inbound.delivery.maxAckPending, LANE_DEFAULTS.pull_batch),
      expires: LANE_DEFAULTS.pull_expires_ms,
      callback: (m) => this.take(inbound, m),
    });
    inbound.messages = messages;
    void messages.closed().then((err) => {
      if (this.quiesced || this.inbound.get(inbound.name) !== inbound || inbound.messages !== messages) return;
      this.host.log.warn({ wire: inbound.name, err }, 'a guaranteed wire stopped pulling; pulling again');
      this.pull(inbound);
    });
  }

  /** A message of a wire into this rack: to a worker, unless its deliveries are spent. */
  private take(inbound: Inbound, m: JsMsg): void {
    this.holding++;
    const { maxDeliver } = inbound.delivery;
    if (deliveryCount(m) > maxDeliver) {
      // Every earlier attempt timed out (a crashed rack or worker): nobody said why.
      void this.deadLetter({ m, inbound, worker: -1, onwardFailures: 0 }, `no outcome after ${maxDeliver} deliveries (each timed out)`);
      return;
    }
    this.send(inbound, m, 0);
  }

  private send(inbound: Inbound, m: JsMsg, onwardFailures: number): void {
    const token = this.nextToken;
    this.nextToken = this.nextToken >= Number.MAX_SAFE_INTEGER ? 1 : this.nextToken + 1;
    const payload = Records.laneDeliver.encode({ token, gear: inbound.wire.to.gear, port: inbound.wire.to.port, bytes: m.data });
    // Pending before it is sent: inline (workers: 0) its LaneDone comes back within deliver().
    const pending: Pending = { m, inbound, worker: -1, onwardFailures };
    this.pending.set(token, pending);
    this.tally.delivered++;
    pending.worker = this.host.deliver(inbound.delivery.ordered ? inbound.orderKey : token, payload, inbound.source);
  }

  /** A worker finished with a delivery. */
  done(record: LaneDoneRecord): void {
    const p = this.pending.get(record.token);
    if (p === undefined) return;
    this.pending.delete(record.token);
    switch (record.outcome) {
      case LaneOutcome.Done:
        this.release(p.m, 'ack');
        this.tally.acked++;
        return;
      case LaneOutcome.LeftWorker:
        this.settling.push(p);
        if (!this.settleScheduled) {
          this.settleScheduled = true;
          setImmediate(() => this.settle());
        }
        return;
      default:
        this.failed(p, record.reason);
    }
  }

  /**
   * Deliveries whose messages went on to main-thread gears or other bus wires are acked once
   * those have them (their JetStream acks included), in one batch per turn of the loop; if any
   * of them failed, the batch is redelivered and the stream's dedupe drops what was sent twice.
   */
  private settle(): void {
    this.settleScheduled = false;
    const batch = this.settling;
    this.settling = [];
    // What they led to may take longer than ack_wait (a stream electing a leader, a publish tried
    // again): the stream is told they are being worked on, so it does not offer them again.
    const working = keepWorking(batch);
    Promise.all([this.host.settled(), this.publishes.settled()])
      .finally(() => clearInterval(working))
      .then(
        () => {
          for (const p of batch) this.release(p.m, 'ack');
          this.tally.acked += batch.length;
        },
        (err: Error) => {
          if (refusedForItself(err)) for (const p of batch) this.failed(p, `what it led to could not be sent on: ${err.message}`);
          else this.stall(batch, err);
        },
      );
  }

  /**
   * What a batch led to could not be sent on for want of the bus or of room downstream (an outage
   * outlasting the publish retries, a stream at its limits): not the messages' fault, so it must
   * not cost them attempts, or an outage longer than max_deliver rounds would dead-letter good
   * messages. They stay held (the stream is told they are being worked on, and the wire's
   * max_ack_pending stops its pulls: the wire stalls, the backlog waits in the stream) and run
   * again after 100 ms doubling per round, up to onward_retry_max_ms.
   */
  private stall(batch: Pending[], err: Error): void {
    if (this.quiesced) {
      for (const p of batch) this.release(p.m, 'nak');
      return;
    }
    let rounds = 0;
    for (const p of batch) rounds = Math.max(rounds, ++p.onwardFailures);
    const delay = Math.min(LANE_DEFAULTS.onward_retry_max_ms, LANE_DEFAULTS.redeliver_first_ms * 2 ** (rounds - 1));
    const now = Date.now();
    if (now - this.lastStallLog >= LANE_DEFAULTS.onward_retry_max_ms) {
      this.lastStallLog = now;
      this.host.log.warn(
        { err: err.message, messages: batch.length, rounds, retryInMs: delay },
        'what guaranteed deliveries led to could not be sent on; they are held and run again, without costing an attempt',
      );
    }
    // Each working() gives a message a whole ack_wait again: one now (its ack_wait has been running
    // since it was offered), then every half of it, and one as it runs again.
    tellWorking(batch);
    const stall: Stall = {
      batch,
      working: keepWorking(batch),
      retry: setTimeout(() => {
        this.unstall(stall);
        if (this.quiesced) for (const p of batch) this.release(p.m, 'nak');
        else {
          tellWorking(batch);
          for (const p of batch) this.send(p.inbound, p.m, p.onwardFailures);
          this.tally.onwardRetries += batch.length;
        }
      }, delay),
    };
    this.stalls.add(stall);
  }

  private unstall(stall: Stall): void {
    clearInterval(stall.working);
    clearTimeout(stall.retry);
    this.stalls.delete(stall);
  }

  /** Tells the stream what became of a message it offered; this rack holds it no longer. */
  private release(m: JsMsg, how: 'ack' | 'nak' | 'term', delayMs?: number): void {
    this.holding--;
    if (how === 'ack') m.ack();
    else if (how === 'term') m.term();
    else m.nak(delayMs);
  }

  private failed(p: Pending, reason: string): void {
    if (deliveryCount(p.m) >= p.inbound.delivery.maxDeliver) void this.deadLetter(p, reason);
    else this.redeliver(p);
  }

  /** Offered again by the stream, which counts the attempt, after 100 ms doubling per attempt (up to ack_wait). */
  private redeliver(p: Pending): void {
    const attempt = deliveryCount(p.m);
    this.release(p.m, 'nak', Math.min(p.inbound.delivery.ackWaitMs, LANE_DEFAULTS.redeliver_first_ms * 2 ** (attempt - 1)));
    this.tally.redelivered++;
  }

  /** To the scenario's dead-letter subject, with why in meta; then the stream stops offering it. */
  private async deadLetter(p: Pending, reason: string): Promise<void> {
    const wire = p.inbound.wire;
    let bytes: Uint8Array;
    try {
      const msg = decodeFluxMsg(p.m.data, { copyBuffers: true });
      msg.meta['lane.error'] = reason;
      msg.meta['lane.deliveries'] = String(p.m.info.deliveryCount);
      msg.meta['lane.wire'] = `${wire.from.gear}.${wire.from.port} -> ${wire.to.gear}.${wire.to.port}`;
      msg.meta['lane.subject'] = p.m.subject;
      bytes = encodeFluxMsg(msg);
    } catch {
      bytes = p.m.data; // not a fluxMsg: kept as it came
    }
    try {
      await this.js.publish(deadLetterSubject(this.scenario.meta.name, wire.to.gear, wire.to.port), bytes, {
        msgID: `dlq.${p.inbound.name}.${p.m.info.streamSequence}`,
      });
      // No reason on the wire: nats-server before 2.10 ignores a "+TERM reason" ack.
      this.release(p.m, 'term');
      this.tally.deadLettered++;
      this.host.log.warn({ wire: p.inbound.name, seq: p.m.info.streamSequence, deliveries: p.m.info.deliveryCount, reason }, 'message dead-lettered');
    } catch (err) {
      // Offered again later: a message is never dropped because its dead letter could not be kept.
      this.release(p.m, 'nak', LANE_DEFAULTS.redeliver_first_ms);
      this.host.log.error({ err, wire: p.inbound.name }, 'a dead letter could not be published; the message will be offered again');
    }
  }

  /**
   * A worker was replaced, with `lostRecords` records unread or under way in its ring. A worker
   * takes records in order, so of this worker's deliveries (in the order they were sent):
   * - the first was under way: it may be what killed the worker, and is redelivered by the
   *   stream, which counts the attempt (a message that keeps killing workers ends dead-lettered);
   * - the next ones, up to lostRecords, never started: sent again to a worker at once, without
   *   costing them an attempt;
   * - the rest were still queued by the pool, which hands them to the new worker.
   */
  workerLost(worker: number, lostRecords: number): void {
    let index = 0;
    for (const [token, p] of [...this.pending]) {
      if (p.worker !== worker) continue;
      if (index >= Math.max(1, lostRecords)) break;
      this.pending.delete(token);
      if (index++ === 0) this.redeliver(p);
      else this.send(p.inbound, p.m, p.onwardFailures);
    }
  }

  /**
   * A message a gear sent along a bus wire. Publishes are pipelined; past the publish window the
   * rack's connections are paused until half of it is acknowledged. A publish the bus does not
   * confirm is tried again with the same message id (the stream drops a duplicate) for up to
   * PUBLISH_RETRY_MS (gears/publish-retry.ts); its call, if it is one's, is answered when it is settled.
   */
  publish(record: LanePublishRecord, source?: Pausable): void {
    if (source !== undefined && this.held && !this.pausedSources.has(source)) {
      this.pausedSources.add(source);
      source.pause();
    }
    const p = new LanePublish(record, this.subjectOf(record.gear, record.port), this.publishing);
    this.publishes.begin(p);
    if (!this.held && this.publishes.size >= this.window) {
      this.held = true;
      this.host.hold(true);
    }
    p.send();
  }

  /** A publish ended, confirmed or failed for good (after its retries). */
  private published(p: LanePublish, err: Error | undefined, ack: PublishAck | undefined): void {
    const { record, subject } = p;
    // PendingOutputs lets go of it first: a settle waiting on it sees the outcome.
    this.publishes.end(p, err);
    if (err === undefined) {
      this.tally.published++;
      if (ack!.duplicate) this.tally.duplicates++;
      if (record.conn !== 0) this.answer(record, { lane: subject, stream: ack!.stream, seq: ack!.seq, duplicate: ack!.duplicate });
    } else {
      this.tally.publishFailed++;
      this.host.log.error({ err, subject }, 'a message could not be published on its guaranteed wire');
      if (record.conn !== 0) this.answer(record, undefined, `the bus did not take the message for ${subject}: ${err.message}`);
    }
    if (this.held && this.publishes.size <= this.window / 2) {
      this.held = false;
      this.host.hold(false);
      for (const s of this.pausedSources) s.resume();
      this.pausedSources.clear();
    }
  }

  /** The subject of a gear's port's wire, made once. */
  private subjectOf(gear: string, port: string): string {
    let ports = this.subjects.get(gear);
    if (ports === undefined) this.subjects.set(gear, (ports = new Map()));
    let subject = ports.get(port);
    if (subject === undefined) ports.set(port, (subject = laneSubject(this.rack, gear, port)));
    return subject;
  }

  private answer(record: LanePublishRecord, value: Record<string, unknown> | undefined, error?: string): void {
    const meta: Record<string, string> = { 'conn.id': String(record.conn), 'fluxar.call': record.call, 'fluxar.type': 'call' };
    if (error !== undefined) {
      meta['error.reason'] = error;
      meta['error.code'] = String(ErrorCode.Unavailable);
    }
    this.host.answer(record.conn, createFluxMsg({ meta, data: value ?? {} }));
  }

  receive(): void {}

  /** No new deliveries; those under way finish. */
  async quiesce(): Promise<void> {
    this.quiesced = true;
    await Promise.all([...this.inbound.values()].map((i) => i.messages?.close()));
  }

  /** Once the workers are done: what was sent is confirmed, and what no worker finished is offered again. */
  async stop(): Promise<void> {
    this.quiesced = true;
    await Promise.all([...this.inbound.values()].map((i) => i.messages?.close()));
    this.inbound.clear();
    await this.publishes.drained();
    this.publisher.close();
    if (this.settling.length > 0) this.settle();
    for (const p of this.pending.values()) this.release(p.m, 'nak');
    this.pending.clear();
    for (const stall of [...this.stalls]) {
      this.unstall(stall);
      for (const p of stall.batch) this.release(p.m, 'nak');
    }
  }
}

/**
 * Whether a failed publish may succeed if tried again: no acknowledgement (an outage), or no
 * responder (a stream between leaders) — not a stream's refusal (its limits).
 */
function retryable(err: Error): boolean {
  if (err instanceof PublishTimeout) return true;
  return !STREAM_FULL.test(err.message) && !refusedForItself(err);
}

/** A stream's refusal for want of room: its limits, or its server's. */
const STREAM_FULL = /maximum (bytes|messages)|resource limits|stream store|insufficient/i;

/**
 * Whether a stream refused a message for what it is (too big, out of sequence), which another
 * try will not change, rather than for want of the bus or of room.
 */
function refusedForItself(err: Error): boolean {
  return /message size|wrong last/i.test(err.message);
}

/** Tells the stream the batch's messages are being worked on: each gets a whole ack_wait again. */
function tellWorking(batch: Pending[]): void {
  for (const p of batch) p.m.working();
}

/** tellWorking() every half of the batch's shortest ack_wait, until the interval is cleared. */
function keepWorking(batch: Pending[]): NodeJS.Timeout {
  return setInterval(tellWorking, Math.min(...batch.map((p) => p.inbound.delivery.ackWaitMs)) / 2, batch);
}

function deniedByPermissions(err: unknown): boolean {
  return err instanceof PermissionViolationError || (err instanceof Error && err.cause instanceof PermissionViolationError);
}
