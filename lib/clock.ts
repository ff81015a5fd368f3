/** The time source the node's timers use; tests inject a manual one. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number
  /** Run `fn` once after `ms`; the timer must not keep the process alive. */
  setTimer(fn: () => void, ms: number): unknown
  clearTimer(handle: unknown): void
  /** Keep the process alive until the returned function is called (a node that dials, between sockets). */
  hold(): () => void
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms)
    t.unref()
    return t
  },
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
  hold() {
    const t = setInterval(() => {}, 2 ** 31 - 1)
    return () => clearInterval(t)
  },
}
