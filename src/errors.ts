/**
 * The root of every error fluxrig throws on purpose. Subclasses name one condition each and
 * pass the underlying error through `cause`, so callers can branch on `instanceof` and still see
 * what went wrong underneath.
 */
export class FluxrigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
