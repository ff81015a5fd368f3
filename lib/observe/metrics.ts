/**
 * Metrics, built on the interceptors: per method and per peer, in each
 * direction, the calls made or served, their outcomes by code, a latency
 * histogram, how many are in flight, and the bytes of arguments and replies.
 * Read as an object (`figures()`) or in the Prometheus text format
 * (`prometheus()`). Keys are bounded: at most MAX_KEYS methods and peers
 * each; beyond that they are counted under `(other)`.
 */
import type { InboundCall, InboundEnd, Interceptor, OutboundCall, OutboundResult } from './interceptors.js'

/** Upper bounds of the latency buckets, ms (Prometheus' `le`, in seconds there). */
export const BUCKETS_MS: readonly number[] = [0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
/** Most methods, and most peers, counted apart in each direction. */
export const MAX_KEYS = 1024
const OTHER = '(other)'

/** What is counted for one method or one peer, in one direction. */
export interface Figures {
  /** Calls (and casts) made or served; a call to several peers counts once for its method, once for each peer. */
  calls: number
  /** Outcomes: `OK`, or the error code (`TIMEOUT`, `REMOTE`, `NO_SUCH_METHOD`, `CANCELLED`, ...). */
  outcomes: Record<string, number>
  /** Started and not yet settled. */
  inflight: number
  /** Arguments sent (out) or received (in), bytes. */
  bytesOut: number
  /** Replies received (out) or sent (in), bytes. */
  bytesIn: number
  /** Settled calls by latency: `buckets[i]` counts those of at most `BUCKETS_MS[i]` ms; the last, the rest. */
  buckets: number[]
  /** Sum of latencies, ms. */
  totalMs: number
}

/** Everything counted: by direction, then by method and by peer. */
export interface MetricsSnapshot {
  outbound: { methods: Record<string, Figures>; peers: Record<string, Figures> }
  inbound: { methods: Record<string, Figures>; peers: Record<string, Figures> }
}

/** A row as it is counted: successes apart from the errors by code, so the common outcome is one increment. */
interface Row extends Omit<Figures, 'outcomes'> {
  ok: number
  errors: Record<string, number>
}

const fresh = (): Row => ({
  calls: 0,
  ok: 0,
  errors: {},
  inflight: 0,
  bytesOut: 0,
  bytesIn: 0,
  buckets: new Array(BUCKETS_MS.length + 1).fill(0),
  totalMs: 0,
})

/** A row's outcomes as {@link Figures} gives them: `OK` first, then each error code. */
function outcomesOf(row: Row): Record<string, number> {
  return row.ok > 0 ? { OK: row.ok, ...row.errors } : { ...row.errors }
}

class Table {
  private readonly rows = new Map<string, Row>()
  row(key: string): Row {
    let row = this.rows.get(key)
    if (row === undefined) {
      if (this.rows.size >= MAX_KEYS) key = OTHER
      row = this.rows.get(key)
      if (row === undefined) this.rows.set(key, (row = fresh()))
    }
    return row
  }
  snapshot(): Record<string, Figures> {
    const out: Record<string, Figures> = {}
    for (const [key, row] of this.rows) {
      const { calls, inflight, bytesOut, bytesIn, buckets, totalMs } = row
      out[key] = { calls, outcomes: outcomesOf(row), inflight, bytesOut, bytesIn, buckets: [...buckets], totalMs }
    }
    return out
  }
  entries(): IterableIterator<[string, Row]> {
    return this.rows.entries()
  }
}

function started(row: Row, bytes: number): void {
  row.calls++
  row.inflight++
  row.bytesOut += bytes
}

/** Count one settled call: `code` undefined for a success. */
function settle(row: Row, code: string | undefined, ms: number, bytesIn: number): void {
  row.inflight--
  if (code === undefined) row.ok++
  else row.errors[code] = (row.errors[code] ?? 0) + 1
  row.bytesIn += bytesIn
  row.totalMs += ms
  let i = 0
  while (i < BUCKETS_MS.length && ms > BUCKETS_MS[i]!) i++
  row.buckets[i]!++
}

export class Metrics implements Interceptor {
  private readonly out = { methods: new Table(), peers: new Table() }
  private readonly in = { methods: new Table(), peers: new Table() }

  outbound(call: OutboundCall): OutboundResult | void {
    const method = this.out.methods.row(call.method)
    method.calls++
    method.bytesOut += call.bytes * call.to.length
    for (const name of call.to) {
      const peer = this.out.peers.row(name)
      peer.calls++
      peer.bytesOut += call.bytes
      peer.inflight++
    }
    // A cast's results (one a peer: handed over, or refused) are told at once, like a call's.
    method.inflight += call.to.length
    return this.settled
  }

  /** One peer's result: the method's outcomes count every peer's result (its calls, each call once); a peer's, its own. */
  private readonly settled: OutboundResult = (result, ms, bytes, call) => {
    const code = result.ok ? undefined : result.error.code
    settle(this.out.methods.row(call.method), code, ms, bytes)
    settle(this.out.peers.row(result.from), code, ms, bytes)
  }

  inbound(call: InboundCall): InboundEnd {
    started(this.in.methods.row(call.method), call.bytes)
    started(this.in.peers.row(call.from), call.bytes)
    return this.ended
  }

  private readonly ended: InboundEnd = (outcome, call) => {
    const code = outcome.ok ? undefined : (outcome.code ?? 'ERROR')
    settle(this.in.methods.row(call.method), code, outcome.ms, outcome.bytes)
    settle(this.in.peers.row(call.from), code, outcome.ms, outcome.bytes)
  }

  /** A call refused before any handler ran (NO_SUCH_METHOD, OVERLOADED, BAD_REQUEST): counted, under its method only if it exists. */
  refused(from: string, method: string, code: string, known: boolean): void {
    for (const row of [this.in.methods.row(known ? method : OTHER), this.in.peers.row(from)]) {
      row.calls++
      row.errors[code] = (row.errors[code] ?? 0) + 1
    }
  }

  figures(): MetricsSnapshot {
    return {
      outbound: { methods: this.out.methods.snapshot(), peers: this.out.peers.snapshot() },
      inbound: { methods: this.in.methods.snapshot(), peers: this.in.peers.snapshot() },
    }
  }

  /** The Prometheus text exposition format (version 0.0.4). */
  prometheus(prefix = 'bilateral'): string {
    const lines: string[] = []
    const family = (name: string, type: string, help: string) =>
      lines.push(`# HELP ${prefix}_${name} ${help}`, `# TYPE ${prefix}_${name} ${type}`)
    const each = (fn: (labels: string, row: Row) => void) => {
      for (const [direction, tables] of [
        ['out', this.out],
        ['in', this.in],
      ] as const) {
        for (const [by, table] of [
          ['method', tables.methods],
          ['peer', tables.peers],
        ] as const) {
          for (const [key, row] of table.entries()) fn(`direction="${direction}",${by}="${label(key)}"`, row)
        }
      }
    }
    family(
      'calls_total',
      'counter',
      'Results of calls made (direction out, one a peer) or served (in), by method and by peer, and how they ended.',
    )
    each((labels, row) => {
      for (const [outcome, n] of Object.entries(outcomesOf(row)))
        lines.push(`${prefix}_calls_total{${labels},outcome="${label(outcome)}"} ${n}`)
    })
    family(
      'calls_started_total',
      'counter',
      'Calls and casts made (out) or served (in); a call to several peers counts once by method, once for each peer.',
    )
    each((labels, row) => lines.push(`${prefix}_calls_started_total{${labels}} ${row.calls}`))
    family('calls_in_flight', 'gauge', 'Calls started and not settled.')
    each((labels, row) => lines.push(`${prefix}_calls_in_flight{${labels}} ${row.inflight}`))
    family('argument_bytes_total', 'counter', 'Encoded arguments sent (out) or received (in).')
    each((labels, row) => lines.push(`${prefix}_argument_bytes_total{${labels}} ${row.bytesOut}`))
    family('reply_bytes_total', 'counter', 'Encoded replies received (out) or sent (in).')
    each((labels, row) => lines.push(`${prefix}_reply_bytes_total{${labels}} ${row.bytesIn}`))
    family('call_duration_seconds', 'histogram', 'Time from a call to its result (out), or from its arrival to its answer (in).')
    each((labels, row) => {
      let cumulative = 0
      BUCKETS_MS.forEach((le, i) => {
        cumulative += row.buckets[i]!
        lines.push(`${prefix}_call_duration_seconds_bucket{${labels},le="${le / 1000}"} ${cumulative}`)
      })
      cumulative += row.buckets[BUCKETS_MS.length]!
      lines.push(`${prefix}_call_duration_seconds_bucket{${labels},le="+Inf"} ${cumulative}`)
      lines.push(`${prefix}_call_duration_seconds_sum{${labels}} ${row.totalMs / 1000}`)
      lines.push(`${prefix}_call_duration_seconds_count{${labels}} ${cumulative}`)
    })
    return `${lines.join('\n')}\n`
  }
}

/** A label value as the text format writes it: backslash, quote and newline escaped. */
const label = (value: string): string => value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
