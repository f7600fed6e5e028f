// The reply line (serve --ingest-workers): while ingest workers hold rank steps, every message keeps its place
// in arrival order. A raw step starts at once (its worker runs in parallel) and commits in its turn; anything
// else (hello, ack, bye, sketch steps) is a barrier that starts only when the turns before it are done. So the
// engine's state changes and its replies come in the order the in-thread engine would make them.

/** Messages in line at most; the reader waits beyond (each may hold a rank step's copy). */
export const MAX_TURNS = 512;

interface Turn {
  /** An ingest worker still holds it. */
  wait: boolean;
  /** Not started yet: later messages wait for it. */
  barrier: boolean;
  finish(): void;
}

export class ReplyLine {
  private readonly line: Turn[] = [];
  /** Barriers in `line` (a raw step may start while there are none). */
  private barriers = 0;
  private running = false;
  private room: (() => void) | null = null;

  get size(): number {
    return this.line.length;
  }

  /** Whether a message must queue instead of starting now (a raw step may start unless a barrier is waiting). */
  mustQueue(rawStep: boolean): boolean {
    return this.line.length > 0 && !this.running && !(rawStep && this.barriers === 0);
  }

  /** A message that has not started: `start` runs in its turn. */
  queue(start: () => void): void {
    this.line.push({ wait: false, barrier: true, finish: start });
    this.barriers++;
  }

  /** fn now, or after the turns waiting (a reply never overtakes an earlier message's). */
  inOrder(fn: () => void): void {
    if (this.line.length && !this.running) this.line.push({ wait: false, barrier: false, finish: fn });
    else fn();
  }

  /** A started step whose commit waits on `wait`; while a turn runs, its place is the head's. */
  started(wait: Promise<void>, commit: () => void): void {
    const turn: Turn = { wait: true, barrier: false, finish: commit };
    if (this.running) this.line.unshift(turn);
    else this.line.push(turn);
    void wait.then(() => ((turn.wait = false), this.run()));
  }

  /** Finish the turns at the head whose worker is done, in order. */
  private run(): void {
    if (this.running) return;
    this.running = true;
    try {
      while (this.line.length && !this.line[0].wait) {
        const turn = this.line.shift()!;
        if (turn.barrier) this.barriers--;
        turn.finish();
      }
    } finally {
      this.running = false;
    }
    if (this.room && this.line.length < MAX_TURNS) (this.room(), (this.room = null));
  }

  /** Resolves once the line is shorter than MAX_TURNS, or `open()` is false (shutdown). */
  async hasRoom(open: () => boolean): Promise<void> {
    while (this.line.length >= MAX_TURNS && open()) await new Promise<void>((r) => (this.room = r));
  }

  /** Wait up to `ms` for the line to empty (shutdown: worker steps commit to the store first). */
  async drain(ms: number): Promise<void> {
    for (const end = Date.now() + ms; this.line.length && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
    this.room?.();
  }
}
