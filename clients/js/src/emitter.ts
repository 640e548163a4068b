// A tiny typed event emitter. The client has no runtime dependencies and must run in
// browsers, where Node's EventEmitter does not exist, and EventTarget cannot type a
// payload per event name.

/** Removes the listener it was returned for. */
export type Unsubscribe = () => void;

export class Emitter<Events extends { [K in keyof Events]: (...args: any[]) => void }> {
  private listeners = new Map<keyof Events, Set<(...args: any[]) => void>>();

  /** Calls `fn` on every `event`; returns a function that removes it. */
  on<K extends keyof Events>(event: K, fn: Events[K]): Unsubscribe {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Calls `fn` on the next `event` only. */
  once<K extends keyof Events>(event: K, fn: Events[K]): Unsubscribe {
    const wrapper = ((...args: any[]) => {
      off();
      fn(...args);
    }) as Events[K];
    const off = this.on(event, wrapper);
    return off;
  }

  off<K extends keyof Events>(event: K, fn: Events[K]): void {
    this.listeners.get(event)?.delete(fn);
  }

  protected emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    // A listener that throws must not keep the others (or the client's own message
    // handling) from running; report it asynchronously like a DOM event handler would.
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
