import type { ErrorBody, ErrorCode } from './generated.js';

/**
 * Every refusal the SDK reports: a server's `failed` reply or HTTP error body (`code`, `message`),
 * or a local condition expressed with the same codes (`unavailable` when the connection is gone
 * for good, `unauthorized` when the session ended). Branch on `code`, never on `message`.
 */
export class RallyError extends Error {
  /** The protocol's error code (`conflict`, `forbidden`, …). New codes may appear. */
  readonly code: ErrorCode | (string & {});
  /** The HTTP status, for errors from the HTTP API. */
  readonly status: number | undefined;

  constructor(code: ErrorCode | (string & {}), message: string, status?: number) {
    super(message);
    this.name = 'RallyError';
    this.code = code;
    this.status = status;
  }

  static from(body: unknown, status?: number): RallyError {
    const b = body as Partial<ErrorBody> | null | undefined;
    if (b && typeof b.code === 'string') {
      return new RallyError(b.code, typeof b.message === 'string' ? b.message : b.code, status);
    }
    return new RallyError('internal', `unreadable error${status ? ` (HTTP ${status})` : ''}`, status);
  }

  toJSON(): ErrorBody {
    return { code: this.code as ErrorCode, message: this.message };
  }
}
