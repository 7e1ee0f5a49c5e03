// Topics and subscription patterns (docs/fluxar-spec.md section 14.1): their syntax, and which
// subscriptions a topic reaches.

export const MAX_TOPIC_BYTES = 256;
/** Where a broker sends messages no subscription acked within max_deliver attempts. */
export const DEAD_LETTER_PREFIX = '$dead.';

const TOKEN = /^[A-Za-z0-9_\-:@]+$/;
const FIRST_TOKEN = /^\$?[A-Za-z0-9_\-:@]+$/;

/** The last topic found valid: publishes and deliveries come in runs of one topic. */
let lastTopic = '';

/** Why `topic` is not a topic a publish may name; null when it is one. */
export function topicError(topic: unknown): string | null {
  if (topic === lastTopic && topic !== '') return null;
  const error = check(topic, false);
  if (error === null) lastTopic = topic as string;
  return error;
}

/** Why `pattern` is not a subscription pattern; null when it is one. */
export function patternError(pattern: unknown): string | null {
  return check(pattern, true);
}

function check(value: unknown, wildcards: boolean): string | null {
  const what = wildcards ? 'pattern' : 'topic';
  if (typeof value !== 'string' || value.length === 0) return `a ${what} is non-empty text`;
  if (Buffer.byteLength(value) > MAX_TOPIC_BYTES) return `a ${what} is at most ${MAX_TOPIC_BYTES} bytes`;
  const tokens = value.split('.');
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (wildcards && t === '*') continue;
    if (wildcards && t === '>') {
      if (i !== tokens.length - 1) return `">" must be the last token of a pattern (${JSON.stringify(value)})`;
      continue;
    }
    if (t === '*' || t === '>') return `a publish names one topic: no wildcards (${JSON.stringify(value)})`;
    if (!(i === 0 ? FIRST_TOKEN : TOKEN).test(t)) {
      return t === ''
        ? `empty token in ${JSON.stringify(value)}`
        : `token ${JSON.stringify(t)} of ${JSON.stringify(value)} has a character outside A-Z a-z 0-9 _ - : @ ($ only first)`;
    }
  }
  return null;
}

/** A pattern split once, for matching. */
export class Pattern {
  readonly text: string;
  private readonly tokens: string[];
  readonly exact: boolean;

  constructor(text: string) {
    this.text = text;
    this.tokens = text.split('.');
    this.exact = !this.tokens.includes('*') && !this.tokens.includes('>');
  }

  /** Whether the topic (already split) is one this pattern covers. */
  matches(topic: string[]): boolean {
    const p = this.tokens;
    for (let i = 0; i < p.length; i++) {
      const t = p[i]!;
      if (t === '>') return topic.length > i;
      if (i >= topic.length) return false;
      if (t !== '*' && t !== topic[i]) return false;
    }
    return p.length === topic.length;
  }
}
