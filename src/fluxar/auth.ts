import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** What a client presents in its hello. */
export type Credentials =
  | { scheme: 'bearer'; token: string }
  | { scheme: 'api_key'; key: string }
  | { scheme: 'credentials'; username: string; password: string }
  | { scheme: 'custom'; name: string; data: unknown };

export type AuthScheme = Credentials['scheme'];

/** Who the peer is, as the verifier decided; handed to every handler. */
export type Principal = Record<string, unknown> & { id: string };

/** Returns the principal, or null to refuse (401). May be async (a database, a directory). */
export type Verifier<C> = (credentials: C) => Principal | null | Promise<Principal | null>;

export interface AuthOptions {
  bearer?: Verifier<{ token: string }>;
  api_key?: Verifier<{ key: string }>;
  credentials?: Verifier<{ username: string; password: string }>;
  /** Custom schemes by name. */
  custom?: Record<string, Verifier<{ name: string; data: unknown }>>;
  /** Accept peers that present no credentials (their principal is { id: "anonymous" }). Default: true when no verifier is configured. */
  allowAnonymous?: boolean;
}

const compareKey = randomBytes(32);

/**
 * Constant-time equality of two secrets of any length: both are reduced to an HMAC first, so
 * neither the content nor the length leaks through timing.
 */
export function secretsEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ha = createHmac('sha256', compareKey).update(a).digest();
  const hb = createHmac('sha256', compareKey).update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** A verifier over a fixed table of secrets (tokens or API keys), compared in constant time. */
export function secretTable(table: Record<string, Principal>): (secret: string) => Principal | null {
  const entries = Object.entries(table);
  return (secret) => {
    let found: Principal | null = null;
    // Compare against every entry so the time does not say which, or whether, one matched.
    for (const [candidate, principal] of entries) if (secretsEqual(candidate, secret) && found === null) found = principal;
    return found;
  };
}

/** Why a hello's auth map was refused: 400 when it is malformed, 401 for a scheme nobody verifies. */
export interface AuthRefusal {
  refused: 400 | 401;
  message: string;
}

/** Parses a hello's auth map into credentials (null: none presented), or says why not. */
export function parseCredentials(auth: unknown): Credentials | null | AuthRefusal {
  if (auth === undefined || auth === null) return null;
  if (typeof auth !== 'object' || Array.isArray(auth) || auth instanceof Uint8Array) return { refused: 400, message: 'auth must be a map' };
  const a = auth as Record<string, unknown>;
  switch (a.scheme) {
    case 'bearer':
      return typeof a.token === 'string' ? { scheme: 'bearer', token: a.token } : { refused: 400, message: 'bearer auth needs a text token' };
    case 'api_key':
      return typeof a.key === 'string' ? { scheme: 'api_key', key: a.key } : { refused: 400, message: 'api_key auth needs a text key' };
    case 'credentials':
      return typeof a.username === 'string' && typeof a.password === 'string'
        ? { scheme: 'credentials', username: a.username, password: a.password }
        : { refused: 400, message: 'credentials auth needs text username and password' };
    case 'custom':
      return typeof a.name === 'string' ? { scheme: 'custom', name: a.name, data: a.data } : { refused: 400, message: 'custom auth needs a text name' };
    default:
      // Spec section 9: a scheme no verifier knows is refused like a failed verification.
      return typeof a.scheme === 'string' ? { refused: 401, message: 'unsupported auth scheme' } : { refused: 400, message: 'auth needs a text scheme' };
  }
}

export function isAuthRefusal(value: Credentials | AuthRefusal | null): value is AuthRefusal {
  return value !== null && 'refused' in value;
}

/**
 * Runs the configured verifier for the credentials; null means refused. Synchronous verifiers
 * (a table of secrets) answer synchronously: the handshake then completes in the same turn.
 */
export function verifyCredentials(options: AuthOptions, credentials: Credentials | null): Principal | null | Promise<Principal | null> {
  const anyVerifier = options.bearer ?? options.api_key ?? options.credentials ?? options.custom;
  if (credentials === null) {
    const allow = options.allowAnonymous ?? anyVerifier === undefined;
    return allow ? { id: 'anonymous' } : null;
  }
  switch (credentials.scheme) {
    case 'bearer':
      return options.bearer ? options.bearer({ token: credentials.token }) : null;
    case 'api_key':
      return options.api_key ? options.api_key({ key: credentials.key }) : null;
    case 'credentials':
      return options.credentials ? options.credentials({ username: credentials.username, password: credentials.password }) : null;
    case 'custom': {
      const verifier = options.custom?.[credentials.name];
      return verifier ? verifier({ name: credentials.name, data: credentials.data }) : null;
    }
  }
}

export const NONCE_BYTES = 16;

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

/**
 * PSK proof: HMAC-SHA256(psk, label || client nonce || server nonce). The labels differ per
 * role so one side's proof can never be replayed as the other's.
 */
export function pskProof(psk: Uint8Array | string, role: 'client' | 'server', clientNonce: Uint8Array, serverNonce: Uint8Array): Uint8Array {
  return createHmac('sha256', psk).update(`fluxar-psk-v1-${role}`).update(clientNonce).update(serverNonce).digest();
}

export function proofsEqual(a: unknown, b: Uint8Array): boolean {
  return a instanceof Uint8Array && a.length === b.length && timingSafeEqual(a, b);
}
