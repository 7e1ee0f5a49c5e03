import assert from 'node:assert/strict';
import { FluxarError } from '../../src/fluxar/errors.js';

/** The FluxarError a call (or a connect) ends with; it must end: a hang fails at its own timeout. */
export async function errorOf(call: Promise<unknown>): Promise<FluxarError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof FluxarError, String(err));
    return err;
  }
  assert.fail('it succeeded, and a FluxarError was expected');
}
