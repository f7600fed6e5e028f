// Fair scheduling (issue 14): messages wait in one queue per run and the engine handles one message per
// run in turn, so a run flooding steps delays another run by at most one of its own messages, however
// many connections it floods from. The queue is bounded: the reader stops taking messages off the socket
// while it is full (ZeroMQ's high-water marks then push back on the senders).
import { unpack } from 'msgpackr';

export const MAX_QUEUED_MESSAGES = 4096;
export const MAX_QUEUED_BYTES = 256 * 1024 ** 2;

export interface Queued {
  id: Buffer;
  frames: Buffer[];
  bytes: number;
}

export class FairQueue {
  /** Insertion order is the turn order: a run whose turn came moves to the back. */
  private readonly queues = new Map<string, Queued[]>();
  size = 0;
  bytes = 0;

  push(key: string, q: Queued): void {
    const list = this.queues.get(key);
    if (list) list.push(q);
    else this.queues.set(key, [q]);
    this.size++;
    this.bytes += q.bytes;
  }

  shift(): Queued | undefined {
    for (const [key, list] of this.queues) {
      const q = list.shift()!;
      this.queues.delete(key);
      if (list.length) this.queues.set(key, list);
      this.size--;
      this.bytes -= q.bytes;
      return q;
    }
    return undefined;
  }

  get full(): boolean {
    return this.size >= MAX_QUEUED_MESSAGES || this.bytes >= MAX_QUEUED_BYTES;
  }

  clear(): void {
    this.queues.clear();
    this.size = this.bytes = 0;
  }
}

/** The queue a message waits in: its run, read from the header without validating it (the handler
 *  validates); a header that does not give one waits in its connection's own queue. */
export function queueKey(id: Buffer, frames: Buffer[], maxHeaderBytes: number): string {
  const h = frames[0];
  if (h && h.length <= maxHeaderBytes) {
    try {
      const v = unpack(h) as { run_id?: unknown } | null;
      if (v && typeof v === 'object' && typeof v.run_id === 'string' && v.run_id.length <= 128) return `r:${v.run_id}`;
    } catch {
      // not a readable header: the handler answers it
    }
  }
  return `c:${id.toString('hex')}`;
}
