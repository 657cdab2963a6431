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

  async run<T>(fn: () => Promise<T>): Promise<T> {
    // Whoever wakes a waiter has counted it in: a newcomer never overtakes the queue.
    if (this.running < this.limit && this.queue.length === 0) this.running++;
    else await new Promise<void>((resolve) => this.queue.push(resolve));
    try {
      return await fn();
    } finally {
      this.running--;
      this.pump();
    }
  }

  private pump(): void {
    while (this.running < this.limit && this.queue.length > 0) {
      this.running++;
      this.queue.shift()!();
    }
  }
}
