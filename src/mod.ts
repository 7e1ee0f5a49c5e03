/** The public surface of the `fluxrig` package. The protocol lives at `fluxrig/fluxar`. */
export * from './fluxmsg/mod.js';
export { FluxrigError } from './errors.js';
