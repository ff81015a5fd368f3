#!/usr/bin/env node
// bilateral soak run: a full mesh of node processes (bench/soak-node.mjs) on
// 127.0.0.1 under a steady mixed load of single-peer calls, multicasts and
// casts, fast and slow, while this coordinator restarts a random node every
// few seconds under the same name on the same port. Nodes report over IPC
// every ~500 ms; at the end it prints calls, replies, lost and wrong replies,
// errors by code, latency and each process's memory, and exits 1 if a reply
// from a live peer was lost, a reply was wrong, a node crashed, a node
// reported a failure of its own (frame:dropped INTERNAL), or a
// never-restarted node's memory grew by 10% or more.
//
//   make soak                       2 minutes (npm run soak: build, then this file)
//   SOAK_SECONDS=20 make soak       a quick check
//   node bench/soak.mjs             after npm run build
//
// Restarts come in three kinds: SIGKILL, then a new process after a pause;
// close(), then a new process at once; close(), then a new node in the same
// process at once. Slow calls (Slow.Echo, answered after a random 0 to
// SOAK_SLOW_MS ms) keep answers pending at the peers of a node that restarts,
// so they are produced while its next incarnation is up and calling. Each
// reply echoes the caller's incarnation and a nonce of the call: one that
// reached any call but the one that asked is *wrong* (WRONG_INCARNATION when
// it answered an earlier incarnation of the caller). A restarted node is
// sometimes renewed again soon after (a bounce): having made few calls, its
// next incarnation reuses the call ids its slow calls still wait on, so a
// misdirected answer would settle one of the newcomer's calls rather than
// vanish as an answer to no call.
//
// Settings (environment): SOAK_SECONDS (120), SOAK_NODES (8), SOAK_ANCHORS
// (2 nodes never restarted, so some are judged for memory), SOAK_RATE
// (operations per second per node, 250), SOAK_KILL_EVERY_MS (mean time
// between restarts, 4000, ±50%), SOAK_RESTARTS (weights of the kinds,
// kill:1,close:1,renew:1), SOAK_PAUSE_MS (pause before a killed node's new
// process, 200-1500), SOAK_CLOSE_PAUSE_MS (pause before a closed node's new
// process, 0-100), SOAK_BOUNCE (chance that a restarted node is renewed
// again, 0.5), SOAK_BOUNCE_MS (how long after it is up, 300-800),
// SOAK_SLOW_MS (800), SOAK_MAX_DOWN (most nodes down or restarting at once,
// 2), SOAK_WARMUP_SECONDS (min(20, 20% of the run)), SOAK_NODE_FLAGS (extra
// node options for the node processes), SOAK_TRACE (a file to write every
// restart, peer:up/down and failed entry to).
//
// A reply is *lost* when a call entry to peer P failed with TIMEOUT or
// PEER_DOWN (or NOT_CONNECTED although the caller saw P active when it
// called), while P's incarnation was up for the whole call and had been up
// for a settle period (2 × peerTimeout) before it, and the caller was not
// restarted during the call. Failures to peers that were restarted during
// the call, or had not been up long enough for the caller to see them, are
// counted by code only. Each lost reply is printed with both sides'
// event-loop stalls (and the CPU used meanwhile: little CPU means the process
// was not running) and their peer:up/down events, to tell a bilateral bug
// from a starved machine.
//
// Memory is judged twice, after gc(): heapUsed (the live JS objects: every
// table of the node, the JS side of every socket) and native memory, RSS
// minus V8's heapTotal (libzmq's sockets and pipes, Buffers, code), so a leak
// on either side fails the run. RSS itself is reported but not judged: under
// this load V8 reserves a larger young generation (heapTotal rises by ~25 MiB
// over the first minutes while heapUsed stays flat) and RSS follows; with
// SOAK_NODE_FLAGS=--max-semi-space-size=1 RSS stays flat too.
import { fork } from 'node:child_process'
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'

const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]))
const SECONDS = env('SOAK_SECONDS', 120)
const NODES = env('SOAK_NODES', 8)
const ANCHORS = env('SOAK_ANCHORS', 2)
const RATE = env('SOAK_RATE', 250)
const KILL_EVERY_MS = env('SOAK_KILL_EVERY_MS', 4000)
const [PAUSE_MIN, PAUSE_MAX] = (process.env.SOAK_PAUSE_MS || '200-1500').split('-').map(Number)
const MAX_DOWN = env('SOAK_MAX_DOWN', 2)
const WARMUP_MS = env('SOAK_WARMUP_SECONDS', Math.min(20, 0.2 * SECONDS)) * 1000
const TIMINGS = { pingInterval: 500, peerTimeout: 2000, callTimeout: 1000, joinInterval: 200, reconnectMin: 50, reconnectMax: 1000 }
const SETTLE_MS = 2 * TIMINGS.peerTimeout
// Slow calls (Slow.Echo, answered after 0 to SLOW_MS ms) keep answers pending across restarts; the rest are casts.
const MIX = { single: 0.45, multicast: 0.1, slow: 0.15, slowMulticast: 0.1 }
const SLOW_MS = env('SOAK_SLOW_MS', 800)
const RESTARTS = Object.fromEntries(
  (process.env.SOAK_RESTARTS || 'kill:1,close:1,renew:1').split(',').map((kv) => {
    const [kind, weight = '1'] = kv.split(':')
    if (!['kill', 'close', 'renew'].includes(kind)) throw new Error(`bad SOAK_RESTARTS kind ${kind}`)
    return [kind, Number(weight)]
  }),
)
const [CLOSE_PAUSE_MIN, CLOSE_PAUSE_MAX] = (process.env.SOAK_CLOSE_PAUSE_MS || '0-100').split('-').map(Number)
const BOUNCE = env('SOAK_BOUNCE', 0.5)
const [BOUNCE_MIN, BOUNCE_MAX] = (process.env.SOAK_BOUNCE_MS || '300-800').split('-').map(Number)
const MEMORY_LIMIT = 0.1
const NODE_FLAGS = (process.env.SOAK_NODE_FLAGS ?? '').split(' ').filter(Boolean) // extra node options for the node processes
const STALL_LOG_MS = 500
const NETWORK = 'soak'
const TRACE = process.env.SOAK_TRACE // a file: every link event, kill, restart and failed entry, one JSON line each
const settings = { SECONDS, NODES, ANCHORS, RATE, KILL_EVERY_MS, PAUSE_MIN, PAUSE_MAX, MAX_DOWN, WARMUP_MS, SLOW_MS, BOUNCE }
Object.assign(settings, { CLOSE_PAUSE_MIN, CLOSE_PAUSE_MAX, BOUNCE_MIN, BOUNCE_MAX }, RESTARTS)
for (const [k, v] of Object.entries(settings)) {
  if (!Number.isFinite(v) || v < 0) throw new Error(`bad soak setting ${k}: ${v}`)
}
if (NODES < 2 || ANCHORS > NODES) throw new Error(`need at least 2 nodes and at most ${NODES} anchors`)

const mib = (b) => (b / 1048576).toFixed(1)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => Date.now()

// --- ports ---------------------------------------------------------------------

/** Can we bind 127.0.0.1:port right now? */
function portFree(port) {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/**
 * `n` free ports below the ephemeral range. A port inside it could be taken
 * by an outgoing connection while its node is down (it is restarted on the
 * same port), or a reconnecting socket could even connect to itself.
 */
async function pickPorts(n) {
  let low = 32768
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  } catch {
    // Not Linux: keep the usual default.
  }
  const floor = 20000
  const ports = []
  let port = floor + Math.floor(Math.random() * Math.max(1, low - floor - 1000))
  for (let tries = 0; ports.length < n && tries < 2000; tries++, port++) {
    if (port >= low) port = floor
    if (await portFree(port)) ports.push(port)
  }
  if (ports.length < n) throw new Error(`found only ${ports.length} free ports of ${n}`)
  return ports
}

// --- processes -----------------------------------------------------------------

const traceOrigin = now()
if (TRACE) writeFileSync(TRACE, '')
const names = Array.from({ length: NODES }, (_, i) => `n${i}`)
const ports = await pickPorts(NODES)
const address = (i) => `tcp://127.0.0.1:${ports[i]}`
/** name → { index, anchor, child (while running), current and history (its incarnations) } */
const nodes = new Map()
/** Every process incarnation: { name, id, spawn, kill, pid, exited, mem: { start, end } } */
const incarnations = []
let stopping = false
let crashes = 0
let runStart = 0

/** A new incarnation of `name`, now its current one. */
function newIncarnation(name, how) {
  const node = nodes.get(name)
  const inc = {
    name,
    id: incarnations.length,
    how, // 'start', or the restart that made it: 'kill', 'close', 'renew'
    spawn: now(),
    kill: undefined,
    ready: undefined,
    exited: false,
    mem: {},
    stalls: [],
    links: [],
    lastUp: new Map(),
    pairs: new Set(),
    counters: { repliesDropped: 0, strayReplies: 0 },
  }
  incarnations.push(inc)
  node.history.push(inc)
  node.current = inc
  trace({ at: inc.spawn - traceOrigin, spawn: `${name}#${inc.id}`, how })
  return inc
}

function spawnNode(name, go, how = 'start') {
  const node = nodes.get(name)
  const inc = newIncarnation(name, how)
  const cfg = {
    name,
    incarnation: inc.id,
    network: NETWORK,
    port: ports[node.index],
    all: names,
    peers: names.filter((n) => n !== name).map((n) => ({ name: n, address: address(names.indexOf(n)) })),
    timings: TIMINGS,
    rate: RATE,
    mix: MIX,
    slowMs: SLOW_MS,
    warmupMs: WARMUP_MS,
    go,
    meshTimeoutMs: 15_000,
  }
  const child = fork(new URL('./soak-node.mjs', import.meta.url), [JSON.stringify(cfg)], {
    execArgv: ['--expose-gc', ...NODE_FLAGS],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  inc.pid = child.pid
  node.child = child
  node.restarting = false
  // Messages name their incarnation: a process renewed in place runs several, one after another.
  child.on('message', (msg) => onMessage(incarnations[msg.incarnation] ?? inc, msg))
  child.on('error', () => {})
  child.on('exit', (code, signal) => {
    const mine = node.history.filter((i) => i.pid === child.pid)
    for (const i of mine) {
      i.exited = true
      if (i.kill === undefined) i.kill = now()
    }
    const last = mine.at(-1)
    if (node.child === child) node.child = undefined
    if (stopping) return void (node.restarting = false)
    if (last.bindFailed) {
      log(`${name}#${last.id} could not bind port ${cfg.port} (${last.bindFailed}); retrying`)
      return void scheduleRestart(name, 500, last.how)
    }
    if (last.closedByUs) return void scheduleRestart(name, CLOSE_PAUSE_MIN + Math.random() * (CLOSE_PAUSE_MAX - CLOSE_PAUSE_MIN), 'close')
    if (last.killedByUs) return
    crashes++
    log(`${name}#${last.id} exited on its own (code ${code}, signal ${signal}); restarting`)
    scheduleRestart(name, 500, 'crash')
  })
  return inc
}

/** SIGKILL: the process and its connections vanish; a new process follows after PAUSE. */
function kill(name) {
  const node = nodes.get(name)
  const inc = node.current
  inc.killedByUs = true
  inc.kill = now()
  node.child.kill('SIGKILL')
  node.child = undefined
  restarts.kill++
  log(`kill ${name}#${inc.id} (up ${((inc.kill - inc.spawn) / 1000).toFixed(1)} s)`)
  trace({ at: inc.kill - traceOrigin, kill: `${name}#${inc.id}` })
  scheduleRestart(name, PAUSE_MIN + Math.random() * (PAUSE_MAX - PAUSE_MIN), 'kill')
}

/** close(), then the process exits; a new process follows after CLOSE_PAUSE (see the exit handler). */
function closeNode(name) {
  const node = nodes.get(name)
  const inc = node.current
  inc.killedByUs = true
  inc.closedByUs = true
  inc.kill = now()
  node.restarting = true
  node.child.send({ type: 'close' })
  restarts.close++
  log(`close ${name}#${inc.id} (up ${((inc.kill - inc.spawn) / 1000).toFixed(1)} s); a new process follows`)
  trace({ at: inc.kill - traceOrigin, close: `${name}#${inc.id}` })
}

/** close(), then at once a new node under the same name on the same port, in the same process. */
function renew(name, bounce = false) {
  const node = nodes.get(name)
  const old = node.current
  old.killedByUs = true
  old.kill = now()
  node.restarting = true
  restarts.renew++
  if (bounce) restarts.bounce++
  trace({ at: old.kill - traceOrigin, renew: `${name}#${old.id}` })
  const inc = newIncarnation(name, 'renew')
  inc.pid = old.pid
  inc.bounced = bounce
  node.child.send({ type: 'renew', incarnation: inc.id })
  log(
    `${bounce ? 'bounce' : 'renew'} ${name}#${old.id} (up ${((old.kill - old.spawn) / 1000).toFixed(1)} s) as ${name}#${inc.id}, same process`,
  )
}

const restartTimers = new Set()
function scheduleRestart(name, ms, how) {
  const t = setTimeout(() => {
    restartTimers.delete(t)
    if (!stopping) log(`restart ${name}#${spawnNode(name, true, how).id}`)
  }, ms)
  restartTimers.add(t)
}

/**
 * A restarted incarnation is, with probability BOUNCE, renewed again soon after it is up: it has made few
 * calls, so the next incarnation reuses the call ids its slow calls still wait on (a misdirected answer
 * would settle a call of the newcomer, not vanish as an answer to no call).
 */
function maybeBounce(inc) {
  if (inc.how === 'start' || inc.bounced || Math.random() >= BOUNCE) return
  const t = setTimeout(
    () => {
      restartTimers.delete(t)
      const node = nodes.get(inc.name)
      if (stopping || node.current !== inc || node.child === undefined || node.restarting || downCount() >= MAX_DOWN) return
      renew(inc.name, true)
    },
    BOUNCE_MIN + Math.random() * (BOUNCE_MAX - BOUNCE_MIN),
  )
  restartTimers.add(t)
}

/** Nodes not serving now: killed and not yet back, or in a graceful restart. */
const downCount = () => names.filter((n) => nodes.get(n).child === undefined || nodes.get(n).restarting).length

function killAll() {
  for (const t of restartTimers) clearTimeout(t)
  for (const node of nodes.values()) {
    if (node.child !== undefined && node.child.exitCode === null && node.child.signalCode === null) node.child.kill('SIGKILL')
  }
}
process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: killing every node`)
    killAll()
    process.exit(130)
  })
}

function log(line) {
  const t = runStart === 0 ? '' : `${((now() - runStart) / 1000).toFixed(1).padStart(6)}s `
  console.log(`${t}${line}`)
}

// --- accounting ----------------------------------------------------------------

const totals = {
  calls: 0,
  multicasts: 0,
  casts: 0,
  castsQueued: 0,
  castsReceived: 0,
  castsBad: 0,
  skipped: 0,
  entries: 0,
  replies: 0,
  repliesLive: 0,
  lost: 0,
  wrong: 0,
  wrongIncarnation: 0,
  slowCalls: 0,
  lateAnswers: 0,
  cpuMicros: 0,
}
const errors = {} // code → count, every failed entry
const dropped = {} // code → frame:dropped events
const rejects = {} // code → count, call() or cast() rejected
const failedBy = {} // `${code}: ${why}` → count
const lostEntries = []
const wrongEntries = []
let stallCount = 0
let stallWorst = 0
/** Restarts by kind; bounces are the renewals that followed a restart closely. */
const restarts = { kill: 0, close: 0, renew: 0, bounce: 0 }

/** Log-spaced latency histogram (2% buckets), bounded whatever the run's length. */
class Histogram {
  buckets = new Map()
  count = 0
  max = NaN
  add(ms) {
    this.max = this.count === 0 ? ms : Math.max(this.max, ms)
    const k = Math.round(Math.log(Math.max(ms, 0.001)) / Math.log(1.02))
    this.buckets.set(k, (this.buckets.get(k) ?? 0) + 1)
    this.count++
  }
  quantile(q) {
    if (this.count === 0) return NaN
    let seen = 0
    for (const k of [...this.buckets.keys()].sort((a, b) => a - b)) {
      seen += this.buckets.get(k)
      if (seen >= q * this.count) return 1.02 ** k
    }
    return NaN
  }
}
const latSingle = new Histogram()
const latMulti = new Histogram()
const latSlow = new Histogram()
const rejoin = new Histogram()
const falseDowns = {} // reason → peer:down events for a peer process that was still running
let endAt = 0

/** The incarnation of `name` that was running at `t`, if any. */
function incarnationAt(name, t) {
  let found
  for (const inc of nodes.get(name).history) if (inc.spawn <= t) found = inc
  return found !== undefined && (found.kill === undefined || found.kill >= t) ? found : undefined
}

/**
 * Why a failed entry is not a lost reply, or undefined if it is one. Runs
 * when the entry arrives: its call has ended, so a target not yet killed was
 * up for the whole call.
 */
function excuse(caller, entry) {
  const [peer, start, end, code, seen] = entry
  if (end > (caller.kill ?? Infinity)) return 'caller killed'
  const target = incarnationAt(names[peer], start)
  if (target === undefined) return 'target down at the call'
  if (target.kill !== undefined && target.kill <= end) return 'target killed during the call'
  if (start - target.spawn < SETTLE_MS) return `target up < ${SETTLE_MS} ms before the call`
  if (code === 'TIMEOUT' || code === 'PEER_DOWN') return undefined
  if (code === 'NOT_CONNECTED' && !seen) {
    return start - caller.spawn < SETTLE_MS
      ? 'caller (restarted) did not see the target yet'
      : 'settled caller did not see the settled target'
  }
  return 'other code'
}

function trace(record) {
  if (TRACE) appendFileSync(TRACE, JSON.stringify(record) + '\n')
}

function onBatch(inc, b) {
  if (b.rss !== undefined) inc.rss = b.rss
  if (TRACE) {
    const at = (t) => t - traceOrigin
    for (const [peer, t, what] of b.links) trace({ at: at(t), by: `${inc.name}#${inc.id}`, peer: names[peer], link: what })
    for (const [peer, start, end, code, seen, link] of b.entries) {
      if (code !== null) trace({ at: at(start), by: `${inc.name}#${inc.id}`, peer: names[peer], ms: end - start, code, seen, link })
    }
  }
  const summed = [
    'calls',
    'multicasts',
    'slowCalls',
    'casts',
    'castsQueued',
    'castsReceived',
    'castsBad',
    'skipped',
    'cpuMicros',
    'lateAnswers',
  ]
  for (const k of summed) totals[k] += b[k]
  // Counters of the node (not of the batch): the last report of each incarnation holds its totals.
  inc.counters = { repliesDropped: b.repliesDropped, strayReplies: b.strayReplies }
  for (const [code, n] of Object.entries(b.rejects)) rejects[code] = (rejects[code] ?? 0) + n
  for (const [code, n] of Object.entries(b.dropped ?? {})) dropped[code] = (dropped[code] ?? 0) + n
  for (const text of b.internal ?? []) log(`${inc.name}#${inc.id}: INTERNAL ${text}`)
  for (const ms of b.latSingle) latSingle.add(ms)
  for (const ms of b.latMulti) latMulti.add(ms)
  for (const ms of b.latSlow) latSlow.add(ms)
  for (const [from, to, cpuMs] of b.stalls) {
    inc.stalls.push([from, to, cpuMs])
    stallCount++
    stallWorst = Math.max(stallWorst, to - from)
    if (to - from >= STALL_LOG_MS) log(`${inc.name}#${inc.id}: event loop stalled ${to - from} ms, using ${cpuMs} ms of CPU`)
  }
  if (inc.stalls.length > 1000) inc.stalls.splice(0, inc.stalls.length - 1000)
  for (const event of b.links) onLinkEvent(inc, event)
  if (inc.links.length > 2000) inc.links.splice(0, inc.links.length - 2000)
  for (const entry of b.entries) {
    const [peer, start, end, code] = entry
    totals.entries++
    const why = peer < 0 ? 'no such peer' : excuse(inc, entry)
    if (code === null) {
      totals.replies++
      if (why === undefined || why === 'other code') totals.repliesLive++
      continue
    }
    errors[code] = (errors[code] ?? 0) + 1
    if (code === 'WRONG_REPLY' || code === 'WRONG_ENTRIES' || code === 'WRONG_INCARNATION') {
      totals.wrong++
      // An answer to a call of an earlier run of this caller, delivered to this one.
      if (code === 'WRONG_INCARNATION') totals.wrongIncarnation++
      if (wrongEntries.length < 20) wrongEntries.push({ caller: inc.name, incarnation: inc.id, peer: names[peer], start, end, code })
      continue
    }
    failedBy[`${code}: ${why ?? 'LOST'}`] = (failedBy[`${code}: ${why ?? 'LOST'}`] ?? 0) + 1
    if (why !== undefined) continue
    totals.lost++
    const target = incarnationAt(names[peer], start)
    // Evidence, not an excuse: event-loop stalls of either side around the call.
    const stalled = (who, from, to) =>
      who.stalls
        .filter(([a, b]) => a < to && b > from)
        .map(([a, b, cpu]) => `${b - a} ms (cpu ${cpu} ms) at ${((a - runStart) / 1000).toFixed(1)} s`)
    const detail = {
      caller: `${inc.name}#${inc.id}`,
      callerUpMs: start - inc.spawn,
      peer: `${names[peer]}#${target.id}`,
      peerUpMs: start - target.spawn,
      start: start - runStart,
      ms: end - start,
      code,
      callerLink: entry[5],
      callerStalls: stalled(inc, start, end),
      peerStalls: stalled(target, start - TIMINGS.peerTimeout, end),
      links: [
        ...inc.links
          .filter(([n, t]) => n === target.name && t > start - TIMINGS.peerTimeout && t < end)
          .map(([, t, w]) => `${w} at ${t - start} ms by caller`),
        ...target.links
          .filter(([n, t]) => n === inc.name && t > start - TIMINGS.peerTimeout && t < end)
          .map(([, t, w]) => `${w} at ${t - start} ms by peer`),
      ],
    }
    if (lostEntries.length < 50) lostEntries.push(detail)
    log(`LOST ${JSON.stringify(detail)}`)
  }
}

/**
 * peer:up and peer:down as the caller saw them. A down for a peer process that
 * is still running, after the caller had seen that very process up, is a
 * false alarm of liveness detection; an up after a restart times the rejoin.
 */
function onLinkEvent(inc, [peer, t, what]) {
  if (endAt !== 0 && t >= endAt) return
  const name = names[peer]
  inc.links.push([name, t, what])
  const target = incarnationAt(name, t)
  if (what === 'UP') {
    inc.lastUp.set(name, t)
    if (target === undefined || inc.pairs.has(target.id)) return
    inc.pairs.add(target.id)
    const since = Math.max(inc.spawn, target.spawn)
    if (since > runStart) rejoin.add(t - since)
    return
  }
  // Its own close() takes every peer down (CLOSED): no alarm of liveness detection.
  if (what === 'CLOSED') return
  if (target !== undefined && (inc.lastUp.get(name) ?? 0) >= target.spawn) {
    falseDowns[what] = (falseDowns[what] ?? 0) + 1
    log(`${inc.name}#${inc.id} declared ${name}#${target.id} down (${what}) though it was running`)
  }
}

const waiters = new Set()
function onMessage(inc, msg) {
  if (msg.type === 'batch') onBatch(inc, msg)
  else if (msg.type === 'mem') inc.mem[msg.label] = msg
  else if (msg.type === 'ready') {
    inc.ready = now()
    const node = nodes.get(inc.name)
    if (node.current === inc) node.restarting = false
    maybeBounce(inc)
  } else if (msg.type === 'bindFailed') inc.bindFailed = msg.code
  else if (msg.type === 'meshed') inc.meshed = msg
  else if (msg.type === 'drained') inc.drained = msg
  for (const w of [...waiters]) w()
}

/** Wait until `test()` holds, re-checked on every message and every 100 ms, at most `ms`. */
async function until(test, ms) {
  const deadline = now() + ms
  while (!test() && now() < deadline) {
    await new Promise((resolve) => {
      const wake = () => {
        waiters.delete(wake)
        clearTimeout(t)
        resolve()
      }
      const t = setTimeout(wake, Math.min(100, Math.max(0, deadline - now())))
      waiters.add(wake)
    })
  }
  return test()
}

// --- the run -------------------------------------------------------------------

const pc = (x) => `${Math.round(x * 100)}%`
console.log(
  `soak: ${NODES} node processes (${ANCHORS} never restarted) on 127.0.0.1 ports ${ports.join(', ')}, full mesh, ${SECONDS} s, ` +
    `${RATE} ops/s per node (${pc(MIX.single)} single-peer calls, ${pc(MIX.multicast)} multicasts, ${pc(MIX.slow)} slow single-peer calls, ` +
    `${pc(MIX.slowMulticast)} slow multicasts answered after 0-${SLOW_MS} ms, the rest casts)`,
)
console.log(
  `  timings: ${Object.entries(TIMINGS)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')} ms; settle ${SETTLE_MS} ms; ` +
    `a restart every ${KILL_EVERY_MS} ms ±50% (${Object.entries(RESTARTS)
      .map(([k, w]) => `${k} ${w}`)
      .join(', ')}): kill restarts after ${PAUSE_MIN}-${PAUSE_MAX} ms, close after ${CLOSE_PAUSE_MIN}-${CLOSE_PAUSE_MAX} ms ` +
    `(new process), renew at once (same process); ${pc(BOUNCE)} of restarted nodes renewed again ${BOUNCE_MIN}-${BOUNCE_MAX} ms after; ` +
    `at most ${MAX_DOWN} down; memory warm-up ${WARMUP_MS / 1000} s`,
)

names.forEach((name, index) => nodes.set(name, { index, anchor: index < ANCHORS, child: undefined, current: undefined, history: [] }))
for (const name of names) spawnNode(name, false)
const meshed = await until(() => names.every((n) => nodes.get(n).current.meshed !== undefined), 30_000)
const partial = names.filter((n) => nodes.get(n).current.meshed?.ok !== true)
if (!meshed || partial.length > 0) {
  console.error(`the mesh did not form: ${partial.join(', ')} did not see every peer`)
  stopping = true
  killAll()
  process.exit(1)
}
runStart = now()
for (const node of nodes.values()) node.child.send({ type: 'go' })
log(`mesh formed; load started`)

const runEnd = runStart + SECONDS * 1000
const restartCount = () => restarts.kill + restarts.close + restarts.renew
/** A restart kind, by the weights of SOAK_RESTARTS. */
function pickRestart() {
  const kinds = Object.entries(RESTARTS)
  let x = Math.random() * kinds.reduce((sum, [, w]) => sum + w, 0)
  for (const [kind, w] of kinds) if ((x -= w) < 0) return kind
  return kinds.at(-1)[0]
}
const progress = setInterval(() => {
  const up = NODES - downCount()
  log(
    `${up}/${NODES} up, ${restartCount()} restarts, ${totals.calls + totals.multicasts + totals.slowCalls} calls, ${totals.replies} replies, ` +
      `${totals.lost} lost, ${totals.wrong} wrong, ${Object.values(errors).reduce((a, b) => a + b, 0)} failed entries; ` +
      `rss of anchors ${names
        .slice(0, ANCHORS)
        .map((n) => mib(nodes.get(n).current.rss ?? 0))
        .join(', ')} MiB`,
  )
}, 10_000)
while (now() < runEnd) {
  await sleep(Math.min(runEnd - now(), KILL_EVERY_MS * (0.5 + Math.random())))
  if (now() >= runEnd) break
  const candidates = names.filter((n) => !nodes.get(n).anchor && nodes.get(n).child !== undefined && !nodes.get(n).restarting)
  if (downCount() >= MAX_DOWN || candidates.length === 0) continue
  const victim = candidates[Math.floor(Math.random() * candidates.length)]
  const how = pickRestart()
  if (how === 'kill') kill(victim)
  else if (how === 'close') closeNode(victim)
  else renew(victim)
}
clearInterval(progress)

// End: no more kills or restarts; memory is sampled under the same load as at the start, then calls drain.
stopping = true
for (const t of restartTimers) clearTimeout(t)
// A graceful restart under way finishes (a renewed node comes up; a closed one's process exits and stays down).
await until(() => names.every((n) => !nodes.get(n).restarting), 5000)
const live = incarnations.filter((i) => !i.exited && i.kill === undefined)
const alive = () => live.filter((i) => !i.exited)
for (const inc of live) nodes.get(inc.name).child?.send({ type: 'mem', label: 'end' })
await until(() => alive().every((i) => i.mem.end !== undefined), 10_000)
for (const inc of live) nodes.get(inc.name).child?.send({ type: 'drain' })
await until(() => alive().every((i) => i.drained !== undefined), 2 * (TIMINGS.callTimeout + SLOW_MS) + 5000)
const runSeconds = (now() - runStart) / 1000
endAt = now()
for (const inc of live) nodes.get(inc.name).child?.send({ type: 'exit' })
await until(() => live.every((i) => i.exited), 5000)
killAll()

// --- report --------------------------------------------------------------------

const sumCounters = (k) => incarnations.reduce((sum, i) => sum + (i.counters[k] ?? 0), 0)
const fmtMs = (ms) => (Number.isNaN(ms) ? '-' : ms < 10 ? ms.toFixed(2) : ms.toFixed(1))
const sorted = (o) => Object.entries(o).sort((a, b) => b[1] - a[1])
const pct = (a, b) => ((100 * (b - a)) / a).toFixed(1)
const lines = [
  '',
  `duration            ${runSeconds.toFixed(1)} s of load; ${incarnations.length} incarnations (${NODES} nodes, ${crashes} crashes)`,
  `restarts            ${restarts.kill} SIGKILL then a new process, ${restarts.close} close() then a new process, ` +
    `${restarts.renew} close() then a new node in the same process (${restarts.bounce} of them bounces soon after a restart)`,
  `CPU                 ${(totals.cpuMicros / 1e6 / runSeconds).toFixed(2)} cores on average for the nodes; ${stallCount} event-loop stalls over 200 ms, worst ${stallWorst} ms`,
  `calls made          ${totals.calls + totals.multicasts + totals.slowCalls} (${totals.calls} single-peer, ${totals.multicasts} multicasts, ` +
    `${totals.slowCalls} slow), ${totals.entries} peer entries; ${totals.skipped} operations skipped (in-flight cap, a stall, or a graceful restart)`,
  `replies             ${totals.replies} received, ${totals.repliesLive} of them from peers up (and settled) for the whole call`,
  `replies lost        ${totals.lost}`,
  `wrong replies       ${totals.wrong} (${totals.wrongIncarnation} of them answers to an earlier incarnation of the caller)`,
  `old answers         ${totals.lateAnswers} slow answers produced for an incarnation of the caller after a newer one had called the same peer; ` +
    `${sumCounters('repliesDropped')} answers dropped by handlers' nodes (caller gone), ${sumCounters('strayReplies')} stray replies reached callers`,
  `casts               ${totals.casts} made, queued for ${totals.castsQueued} peers, ${totals.castsReceived} delivered (killed nodes lose theirs), ${totals.castsBad} wrong`,
  `errors by code      ${
    sorted(errors)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ') || 'none'
  }`,
  ...sorted(failedBy).map(([k, n]) => `                    ${String(n).padStart(7)}  ${k}`),
  `frames dropped      ${
    sorted(dropped)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ') || 'none'
  } (frame:dropped events; INTERNAL ones, a failure of the node's own, fail the run)`,
  `rejected calls      ${
    sorted(rejects)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ') || 'none'
  }`,
  `liveness            false peer:down of running peers: ${
    sorted(falseDowns)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ') || 'none'
  }; a restarted node and a peer saw each other after p50 ${fmtMs(rejoin.quantile(0.5))} ms, p99 ${fmtMs(rejoin.quantile(0.99))} ms, max ${fmtMs(rejoin.max)} ms (${rejoin.count} pairs)`,
  `latency (ms)        single-peer p50 ${fmtMs(latSingle.quantile(0.5))} p99 ${fmtMs(latSingle.quantile(0.99))}; ` +
    `multicast p50 ${fmtMs(latMulti.quantile(0.5))} p99 ${fmtMs(latMulti.quantile(0.99))}; ` +
    `slow p50 ${fmtMs(latSlow.quantile(0.5))} p99 ${fmtMs(latSlow.quantile(0.99))} (successful calls)`,
  '',
  `memory after gc(), warm-up sample → end sample (judged: nodes never restarted; limit ${MEMORY_LIMIT * 100}% growth of heapUsed and of native memory, rss − heapTotal)`,
]
let memoryFailed = false
for (const inc of incarnations) {
  const { start, end } = inc.mem
  if (start === undefined || end === undefined) continue
  const judged = inc.id < NODES && !inc.killedByUs
  const heapGrowth = (end.heapUsed - start.heapUsed) / start.heapUsed
  // Everything outside V8's heap: libzmq's sockets and pipes, Buffers, code. A native leak shows here.
  const native = (m) => m.rss - m.heapTotal
  const nativeGrowth = (native(end) - native(start)) / native(start)
  const grew = heapGrowth >= MEMORY_LIMIT || nativeGrowth >= MEMORY_LIMIT
  if (judged && grew) memoryFailed = true
  lines.push(
    `  ${`${inc.name}#${inc.id}`.padEnd(8)} heap ${mib(start.heapUsed)} → ${mib(end.heapUsed)} MiB (${pct(start.heapUsed, end.heapUsed)}%)  ` +
      `native ${mib(native(start))} → ${mib(native(end))} MiB (${pct(native(start), native(end))}%)  ` +
      `rss ${mib(start.rss)} → ${mib(end.rss)} MiB (${pct(start.rss, end.rss)}%)  ` +
      `[heapTotal ${mib(start.heapTotal)} → ${mib(end.heapTotal)}, external ${mib(start.external)} → ${mib(end.external)}]  ` +
      (judged ? (grew ? 'FAIL' : 'ok') : `restarted at ${((inc.spawn - runStart) / 1000).toFixed(1)} s, not judged`),
  )
}
if (incarnations.some((i) => i.mem.start && i.mem.end && i.mem.end.rss > (1 + MEMORY_LIMIT) * i.mem.start.rss)) {
  lines.push(
    '  (RSS grows with heapTotal: V8 reserving a larger young generation under load, not live memory; heapUsed and native memory are what is judged. SOAK_NODE_FLAGS=--max-semi-space-size=1 keeps RSS flat too)',
  )
}
const judgedCount = incarnations.filter((i) => i.id < NODES && !i.killedByUs && i.mem.start && i.mem.end).length
if (judgedCount === 0) {
  memoryFailed = true
  lines.push('  no process lived through the whole run with both samples: nothing to judge')
}
if (lostEntries.length > 0) lines.push('', 'lost replies (first 50):', ...lostEntries.map((e) => `  ${JSON.stringify(e)}`))
if (wrongEntries.length > 0) lines.push('', 'wrong replies (first 20):', ...wrongEntries.map((e) => `  ${JSON.stringify(e)}`))
const failed = totals.lost > 0 || totals.wrong > 0 || totals.castsBad > 0 || crashes > 0 || memoryFailed || (dropped.INTERNAL ?? 0) > 0
lines.push('', failed ? 'soak FAILED' : 'soak passed')
console.log(lines.join('\n'))
process.exit(failed ? 1 : 0)
