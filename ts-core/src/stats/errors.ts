/** Errors from the stats engine carry the protocol's stable codes. */
export class StatsError extends Error {
  override name = 'StatsError';
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}
