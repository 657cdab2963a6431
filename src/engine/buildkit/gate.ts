/**
 * At most `limit` of the calls given run at once; the others wait in the order they came. The limit may
 * change while calls wait (the engine's cores become known after the first units arrived).
 */
export class Gate {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private limit: number) {}

  get waiting(): number {
    return this.queue.length;
  }

  /** Whether a call given now would wait. */
  get full(): boolean {
    return this.running >= this.limit || this.queue.length > 0;
  }

  resize(limit: number): void {
    this.limit = limit;
    this.pump();
  }

  /** `fn` once a place is free; a call whose `cancel` fires while it waits leaves the queue and throws. */
  async run<T>(fn: () => Promise<T>, cancel?: AbortSignal): Promise<T> {
    // Whoever wakes a waiter has counted it in: a newcomer never overtakes the queue.
    if (this.running < this.limit && this.queue.length === 0) this.running++;
    else await this.wait(cancel);
    try {
      return await fn();
    } finally {
      this.running--;
      this.pump();
    }
  }

  private wait(cancel?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (cancel?.aborted) return reject(new GateCancelled());
      const woken = () => {
        cancel?.removeEventListener('abort', gone);
        resolve();
      };
      const gone = () => {
        const at = this.queue.indexOf(woken);
        if (at < 0) return; // already counted in: it runs, and whoever waits on it sees the cancel
        this.queue.splice(at, 1);
        reject(new GateCancelled());
      };
      cancel?.addEventListener('abort', gone, { once: true });
      this.queue.push(woken);
    });
  }

  private pump(): void {
    while (this.running < this.limit && this.queue.length > 0) {
      this.running++;
      this.queue.shift()!();
    }
  }
}

export class GateCancelled extends Error {
  override name = 'GateCancelled';
  constructor() {
    super('cancelled while waiting for the engine');
  }
}
