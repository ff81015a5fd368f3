// One node process of the soak mesh (bench/soak.mjs forks it): a Bilateral
// node on a fixed port that dials every other node and runs a steady
// open-loop load of single-peer calls, multicasts and casts, fast ones
// (Arith.SumDiff) and slow ones (Slow.Echo answers after a random 0 to
// slowMs ms, echoing the caller's incarnation and a nonce of the call, so a
// reply delivered to any call but the one that asked is seen). Every ~500 ms
// it sends the coordinator what happened since the last batch, so a SIGKILL
// loses at most one batch. Run with --expose-gc (memory samples are taken
// after gc()).
//
// The coordinator may also restart it gracefully: "close" closes the node and
// exits (a new process follows), "renew" closes the node and makes a new one
// under the same name on the same port, in this process, at once. Each node
// is one incarnation (the coordinator's number for it); its calls record
// into its own batch, so calls of a closed node that end later are still
// counted for it.
//   node --expose-gc bench/soak-node.mjs '<json config>'
import { Bilateral } from '../dist/index.js'

const cfg = JSON.parse(process.argv[2])
const { name, port, peers, timings, rate, mix, warmupMs, slowMs } = cfg
const peerNames = peers.map((p) => p.name)
const peerIndex = new Map(cfg.all.map((n, i) => [n, i]))
const BATCH_MS = 500
const TICK_MS = 20
// Open loop: calls are issued on schedule whatever their latency, but never more than a second's worth in flight.
const MAX_INFLIGHT = Math.max(50, rate)
// A slow call waits up to slowMs for its handler: it gets that much longer than the usual timeout.
const SLOW_TIMEOUT = timings.callTimeout + slowMs

/** What happened since the last batch; reset after each send. */
function freshBatch() {
  return {
    calls: 0,
    multicasts: 0,
    slowCalls: 0,
    casts: 0,
    castsQueued: 0,
    castsReceived: 0,
    castsBad: 0,
    skipped: 0,
    // Slow answers this node produced for an incarnation of the caller older than one that had already called it.
    lateAnswers: 0,
    rejects: {},
    // One tuple per call entry: [peer index, start ms, end ms, code or null, caller saw the peer active at the call,
    // and for a failed entry the direction of the caller's link to the peer when the call ended, or 'none'].
    entries: [],
    latSingle: [],
    latMulti: [],
    latSlow: [],
    // [from, to, CPU ms used meanwhile] for each gap of more than STALL_MS between 20 ms timer ticks.
    stalls: [],
    // [peer index, time, 'UP' or the peer:down reason]
    links: [],
    // frame:dropped events by code, and the text of the first few INTERNAL ones (a receive loop or handler of ours failed).
    dropped: {},
    internal: [],
  }
}

/** The incarnation this process runs now, and those closed whose last batch is still to be sent. */
let current
const unsent = new Set()
let inflight = 0

function makeIncarnation(incarnation) {
  const node = new Bilateral({ network: cfg.network, name, ...timings })
  const me = { incarnation, node, batch: freshBatch(), closing: false, newest: new Map() }
  node.register(
    {
      SumDiff: (a) => ({ S: a.A + a.B, D: a.A - a.B, by: name }),
      Note: (a) => {
        if (a.S === a.A + a.B) me.batch.castsReceived++
        else me.batch.castsBad++
      },
    },
    'Arith',
  )
  node.register(
    {
      Echo: (a, ctx) => {
        // The newest incarnation of this caller seen so far (the coordinator numbers them in order).
        if (a.inc > (me.newest.get(ctx.from) ?? -1)) me.newest.set(ctx.from, a.inc)
        return new Promise((resolve) =>
          setTimeout(() => {
            if (!me.closing && a.inc < me.newest.get(ctx.from)) me.batch.lateAnswers++
            resolve({ nonce: a.nonce, inc: a.inc, by: name })
          }, Math.random() * slowMs),
        )
      },
    },
    'Slow',
  )
  node.on('peer:up', (peer) => me.batch.links.push([peerIndex.get(peer), Date.now(), 'UP']))
  node.on('peer:down', (peer, reason) => me.batch.links.push([peerIndex.get(peer), Date.now(), reason]))
  node.on('frame:dropped', (error) => {
    me.batch.dropped[error.code] = (me.batch.dropped[error.code] ?? 0) + 1
    if (error.code === 'INTERNAL' && me.batch.internal.length < 5) me.batch.internal.push(`${Date.now()} ${error.message}`)
  })
  return me
}

let lastCpu = process.cpuUsage()

// Event-loop stalls, with the CPU time this process used during each: a stall
// spent computing is ours (or the GC's); one with little CPU means the process
// was not running (the host's other work, or swapping).
const STALL_MS = 200
let watchAt = Date.now()
let watchCpu = process.cpuUsage()
setInterval(() => {
  const t = Date.now()
  const cpu = process.cpuUsage()
  if (t - watchAt > STALL_MS) {
    const cpuMs = (cpu.user - watchCpu.user + cpu.system - watchCpu.system) / 1000
    current.batch.stalls.push([watchAt, t, Math.round(cpuMs)])
  }
  watchAt = t
  watchCpu = cpu
}, TICK_MS)

const send = (msg) => {
  if (process.connected) process.send(msg)
}

/** Send `me`'s batch (and the node's counters), and start a new one. CPU and RSS are the process's, reported with the current one. */
function flushOne(me, process_) {
  // Counters stay readable after close(); an earlier release has neither.
  const { repliesDropped = 0, strayReplies = 0 } = me.node.stats()
  send({
    type: 'batch',
    incarnation: me.incarnation,
    ...me.batch,
    cpuMicros: process_?.cpuMicros ?? 0,
    rss: process_?.rss,
    inflight,
    repliesDropped,
    strayReplies,
  })
  me.batch = freshBatch()
}

function flush() {
  for (const me of unsent) flushOne(me)
  unsent.clear()
  const cpu = process.cpuUsage(lastCpu)
  lastCpu = process.cpuUsage()
  flushOne(current, { cpuMicros: cpu.user + cpu.system, rss: process.memoryUsage.rss() })
}

const randomInt = () => Math.floor(Math.random() * 2_000_001) - 1_000_000
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)]

/** Record one entry; a failed one also says which link served the peer when the call ended (for the coordinator's report). */
function pushEntry(me, peer, start, end, code, seen) {
  const entry = [peerIndex.get(peer) ?? -1, start, end, code, seen]
  if (code !== null) entry.push(me.node.links().find((l) => l.peer === peer)?.direction ?? 'none')
  me.batch.entries.push(entry)
}

/** Check one entry of a SumDiff call and record it. */
function record(me, r, A, B, start, end, seen) {
  let code = null
  if (!r.ok) code = r.error?.code ?? 'NO_CODE'
  else if (r.reply?.inc !== undefined && r.reply.inc !== me.incarnation) code = 'WRONG_INCARNATION'
  else if (r.reply?.S !== A + B || r.reply?.D !== A - B || r.reply?.by !== r.from) code = 'WRONG_REPLY'
  pushEntry(me, r.from, start, end, code, seen)
}

/** Check one entry of a Slow.Echo call: its reply must carry our incarnation and the call's nonce, from the peer asked. */
function recordSlow(me, r, nonce, start, end, seen) {
  let code = null
  if (!r.ok) code = r.error?.code ?? 'NO_CODE'
  else if (r.reply?.inc !== me.incarnation) code = 'WRONG_INCARNATION'
  else if (r.reply?.nonce !== nonce || r.reply?.by !== r.from) code = 'WRONG_REPLY'
  pushEntry(me, r.from, start, end, code, seen)
}

async function singleCall(me) {
  const peer = pick(peerNames)
  const A = randomInt()
  const B = randomInt()
  const seen = me.node.activeConnections().includes(peer)
  const start = Date.now()
  const t = performance.now()
  me.batch.calls++
  inflight++
  try {
    const results = await me.node.call([peer], 'Arith.SumDiff', { A, B })
    const end = Date.now()
    if (results.length !== 1 || results[0].from !== peer) {
      me.batch.entries.push([peerIndex.get(peer), start, end, 'WRONG_ENTRIES', seen])
      return
    }
    if (results[0].ok) me.batch.latSingle.push(performance.now() - t)
    record(me, results[0], A, B, start, end, seen)
  } catch (error) {
    countRejection(me, error)
  } finally {
    inflight--
  }
}

/** A call that rejected outright (no entries): counted by its code. */
function countRejection(me, error) {
  const code = error.code ?? error.name
  me.batch.rejects[code] = (me.batch.rejects[code] ?? 0) + 1
}

async function multicast(me) {
  const A = randomInt()
  const B = randomInt()
  const expected = me.node.activeConnections()
  const start = Date.now()
  const t = performance.now()
  me.batch.multicasts++
  inflight++
  try {
    const results = await me.node.call([], 'Arith.SumDiff', { A, B })
    const end = Date.now()
    me.batch.latMulti.push(performance.now() - t)
    // `to` empty means every peer active at the call: exactly those, once each.
    const from = results.map((r) => r.from).sort()
    if (from.join() !== expected.sort().join()) me.batch.entries.push([-1, start, end, 'WRONG_ENTRIES', true])
    for (const r of results) record(me, r, A, B, start, end, true)
  } catch (error) {
    countRejection(me, error)
  } finally {
    inflight--
  }
}

/** A slow call to one peer (`all` false) or to every active peer (one call id for all of them). */
async function slowCall(me, all) {
  const nonce = Math.floor(Math.random() * 2 ** 52)
  const to = all ? [] : [pick(peerNames)]
  const expected = all ? me.node.activeConnections() : to
  const seen = all ? true : me.node.activeConnections().includes(to[0])
  const start = Date.now()
  const t = performance.now()
  me.batch.slowCalls++
  inflight++
  try {
    const results = await me.node.call(to, 'Slow.Echo', { inc: me.incarnation, nonce }, { timeout: SLOW_TIMEOUT })
    const end = Date.now()
    const from = results.map((r) => r.from).sort()
    if (from.join() !== expected.sort().join()) me.batch.entries.push([all ? -1 : peerIndex.get(to[0]), start, end, 'WRONG_ENTRIES', seen])
    else if (results.every((r) => r.ok)) me.batch.latSlow.push(performance.now() - t)
    for (const r of results) recordSlow(me, r, nonce, start, end, seen)
  } catch (error) {
    countRejection(me, error)
  } finally {
    inflight--
  }
}

async function cast(me) {
  const A = randomInt()
  const B = randomInt()
  me.batch.casts++
  try {
    const to = Math.random() < 0.5 ? [pick(peerNames)] : []
    me.batch.castsQueued += (await me.node.cast(to, 'Arith.Note', { A, B, S: A + B })).length
  } catch (error) {
    countRejection(me, error)
  }
}

function oneOp() {
  const me = current
  // While a graceful restart closes the node, nothing is called (the coordinator counts the node as down).
  if (inflight >= MAX_INFLIGHT || me.closing) {
    me.batch.skipped++
    return
  }
  let x = Math.random()
  if ((x -= mix.single) < 0) void singleCall(me)
  else if ((x -= mix.multicast) < 0) void multicast(me)
  else if ((x -= mix.slow) < 0) void slowCall(me, false)
  else if ((x -= mix.slowMulticast) < 0) void slowCall(me, true)
  else void cast(me)
}

let loadTimer
let batchTimer
let loadStarted = 0
let issued = 0
function startLoad() {
  loadStarted = performance.now()
  loadTimer = setInterval(() => {
    const due = Math.floor(((performance.now() - loadStarted) * rate) / 1000) - issued
    // After a stall, catch up by at most one tick's worth more: a burst would measure the stall twice.
    const n = Math.min(due, Math.ceil((2 * rate * TICK_MS) / 1000))
    for (let i = 0; i < n; i++) oneOp()
    if (due > n) current.batch.skipped += due - n
    issued += due
  }, TICK_MS)
  setTimeout(() => sampleMemory('start'), warmupMs).unref()
}

function sampleMemory(label) {
  global.gc()
  global.gc()
  const m = process.memoryUsage()
  send({
    type: 'mem',
    incarnation: current.incarnation,
    label,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    rss: m.rss,
    external: m.external,
    at: Date.now(),
  })
}

/** Stop issuing, wait (bounded) for calls in flight, report the last batch. */
async function drain() {
  clearInterval(loadTimer)
  const until = performance.now() + 2 * SLOW_TIMEOUT + 1000
  while (inflight > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
  clearInterval(batchTimer)
  flush()
  send({ type: 'drained', incarnation: current.incarnation, inflight })
}

/** Close the current node: its pending calls end CLOSED (recorded in its batch), its handlers' late results are dropped. */
async function closeCurrent() {
  const me = current
  me.closing = true
  await me.node.close()
  unsent.add(me)
}

/** Make incarnation `incarnation`'s node, listen on our port, dial every peer. False if the port cannot be bound. */
async function startNode(incarnation) {
  current = makeIncarnation(incarnation)
  try {
    await current.node.listen(`tcp://127.0.0.1:${port}`)
  } catch (error) {
    send({ type: 'bindFailed', incarnation, code: error.code, message: error.message })
    return false
  }
  for (const p of peers) current.node.connect(p.name, p.address)
  send({ type: 'ready', incarnation, at: Date.now() })
  return true
}

process.on('message', async (msg) => {
  if (msg.type === 'go') startLoad()
  else if (msg.type === 'mem') sampleMemory(msg.label)
  else if (msg.type === 'drain') await drain()
  else if (msg.type === 'close') {
    await closeCurrent()
    flush()
    exitAfterSending(0)
  } else if (msg.type === 'renew') {
    await closeCurrent()
    if (!(await startNode(msg.incarnation))) {
      flush()
      exitAfterSending(3)
    }
  } else if (msg.type === 'exit') {
    setTimeout(() => process.exit(0), 2000).unref()
    await current.node.close()
    process.exit(0)
  }
})
/** Exit once every message sent so far has left (IPC sends are asynchronous). */
function exitAfterSending(code) {
  if (!process.connected) process.exit(code)
  process.send({ type: 'exiting', incarnation: current.incarnation }, () => process.exit(code))
}

// The coordinator is gone (killed, or exited without cleaning up): do not linger.
process.on('disconnect', () => process.exit(1))

if (!(await startNode(cfg.incarnation))) exitAfterSending(3)
else {
  batchTimer = setInterval(flush, BATCH_MS)
  if (cfg.go) startLoad()
  else {
    // First start: tell the coordinator once the whole mesh is seen (or not, after a bounded wait).
    const seen = await current.node.waitForPeers(peerNames, { timeout: cfg.meshTimeoutMs }).then(
      () => true,
      () => false,
    )
    send({ type: 'meshed', incarnation: current.incarnation, ok: seen, active: current.node.connectionCount() })
  }
}
