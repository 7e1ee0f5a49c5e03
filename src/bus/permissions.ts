// What each certificate may do on the bus (nats-server permissions, docs/snake-protocol.md):
// the Mixer everything; a rack only its own subjects. The config is JSON, which nats-server's
// configuration format accepts as it is.
import { writeFileSync } from 'node:fs';
import { certFiles, certSubject } from './certs.js';
import {
  agentAck,
  agentHeartbeat,
  agentHello,
  agentNotify,
  rackInboxPrefix,
  rackMessageSubjects,
  SCENARIO_STREAM,
  scenarioConsumer,
  telemetrySubject,
} from './subjects.js';

export interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  /** May answer requests sent to it (the Mixer's commands), and only those. */
  allow_responses?: boolean;
}

/**
 * A rack publishes its own hello, heartbeat, acks, telemetry and gear traffic; reads its own
 * commands and replies, and its scenarios through the consumer the Mixer made for it (info,
 * next, ack: it cannot make or change a consumer, nor read another rack's).
 */
export function rackPermissions(rack: string): Permissions {
  const consumer = `${SCENARIO_STREAM}.${scenarioConsumer(rack)}`;
  return {
    publish: {
      allow: [
        agentHello(rack),
        agentHeartbeat(rack),
        agentAck(rack),
        telemetrySubject(rack, '>'),
        rackMessageSubjects(rack),
        `$JS.API.CONSUMER.INFO.${consumer}`,
        `$JS.API.CONSUMER.MSG.NEXT.${consumer}`,
        `$JS.ACK.${consumer}.>`,
      ],
    },
    subscribe: { allow: [agentNotify(rack, '*'), `${rackInboxPrefix(rack)}.>`] },
    allow_responses: true,
  };
}

export const MIXER_PERMISSIONS: Permissions = { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };

export interface TlsServerConfig {
  /** The certificates directory (fluxrig certs init). */
  certs: string;
  /** Racks with a certificate: each becomes a user with rackPermissions. */
  racks: string[];
}

/** A nats-server configuration: TLS with client certificates required and mapped to users. */
export function natsTlsConfig(options: TlsServerConfig): Record<string, unknown> {
  const files = certFiles(options.certs);
  return {
    tls: { cert_file: files.server, key_file: files.serverKey, ca_file: files.ca, verify_and_map: true, timeout: 5 },
    authorization: {
      users: [
        { user: certSubject.mixer, permissions: MIXER_PERMISSIONS },
        ...options.racks.map((rack) => ({ user: certSubject.rack(rack), permissions: rackPermissions(rack) })),
      ],
    },
  };
}

export function writeNatsConfig(file: string, config: Record<string, unknown>): void {
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
