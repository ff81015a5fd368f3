// One node of the soak mesh (bench/soak.mjs forks it): a Bilateral node on a
// fixed port that dials every other node and runs a steady open-loop load of
// single-peer calls, multicasts and casts. Every ~500 ms it sends the
// coordinator what happened since the last batch, so a SIGKILL loses at most
// one batch. Run with --expose-gc (memory samples are taken after gc()).
//   node --expose-gc bench/soak-node.mjs '<json config>'
import { Bilateral } from '../dist/index.js'

const cfg = JSON.parse(process.argv[2])
const { name, incarnation, port, peers, timings, rate, mix, warmupMs } = cfg
const peerNames = peers.map((p) => p.name)
const peerIndex = new Map(cfg.all.map((n, i) => [n, i]))
const BATCH_MS = 500
const TICK_MS = 20
// Open loop: calls are issued on schedule whatever their latency, but never more than a second's worth in flight.
const MAX_INFLIGHT = Math.max(50, rate)

const node = new Bilateral({ network: cfg.network, name, ...timings })
let castsReceived = 0
let castsBad = 0
node.register(
  {
    SumDiff: (a) => ({ S: a.A + a.B, D: a.A - a.B, by: name }),
    Note: (a) => {
      if (a.S === a.A + a.B) castsReceived++
      else castsBad++
    },
  },
  'Arith',
)

/** What happened since the last batch; reset after each send. */
let batch = freshBatch()
function freshBatch() {
  return {
    calls: 0,
    multicasts: 0,
    casts: 0,
    castsQueued: 0,
    skipped: 0,
    rejects: {},
    // One tuple per call entry: [peer index, start ms, end ms, code or null, caller saw the peer active at the call].
    entries: [],
    latSingle: [],
    latMulti: [],
    // [from, to, CPU ms used meanwhile] for each gap of more than STALL_MS between 20 ms timer ticks.
    stalls: [],
    // [peer index, time, 'UP' or the peer:down reason]
    links: [],
  }
}
let inflight = 0
node.on('peer:up', (peer) => batch.links.push([peerIndex.get(peer), Date.now(), 'UP']))
node.on('peer:down', (peer, reason) => batch.links.push([peerIndex.get(peer), Date.now(), reason]))
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
    batch.stalls.push([watchAt, t, Math.round(cpuMs)])
  }
  watchAt = t
  watchCpu = cpu
}, TICK_MS)

const send = (msg) => {
  if (process.connected) process.send(msg)
}

function flush() {
  const cpu = process.cpuUsage(lastCpu)
  lastCpu = process.cpuUsage()
  send({
    type: 'batch',
    incarnation,
    ...batch,
    castsReceived,
    castsBad,
    cpuMicros: cpu.user + cpu.system,
    rss: process.memoryUsage.rss(),
    inflight,
  })
  batch = freshBatch()
  castsReceived = castsBad = 0
}

const randomInt = () => Math.floor(Math.random() * 2_000_001) - 1_000_000
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)]

/** Check one entry of a SumDiff call and record it. */
function record(r, A, B, start, end, seen) {
  let code = null
  if (!r.ok) code = r.error?.code ?? 'NO_CODE'
  else if (r.reply?.S !== A + B || r.reply?.D !== A - B || r.reply?.by !== r.from) code = 'WRONG_REPLY'
  batch.entries.push([peerIndex.get(r.from) ?? -1, start, end, code, seen])
}

async function singleCall() {
  const peer = pick(peerNames)
  const A = randomInt()
  const B = randomInt()
  const seen = node.activeConnections().includes(peer)
  const start = Date.now()
  const t = performance.now()
  batch.calls++
  inflight++
  try {
    const results = await node.call([peer], 'Arith.SumDiff', { A, B })
    const end = Date.now()
    if (results.length !== 1 || results[0].from !== peer) {
      batch.entries.push([peerIndex.get(peer), start, end, 'WRONG_ENTRIES', seen])
      return
    }
    if (results[0].ok) batch.latSingle.push(performance.now() - t)
    record(results[0], A, B, start, end, seen)
  } catch (error) {
    countRejection(error)
  } finally {
    inflight--
  }
}

/** A call that rejected outright (no entries): counted by its code. */
function countRejection(error) {
  const code = error.code ?? error.name
  batch.rejects[code] = (batch.rejects[code] ?? 0) + 1
}

async function multicast() {
  const A = randomInt()
  const B = randomInt()
  const expected = node.activeConnections()
  const start = Date.now()
  const t = performance.now()
  batch.multicasts++
  inflight++
  try {
    const results = await node.call([], 'Arith.SumDiff', { A, B })
    const end = Date.now()
    batch.latMulti.push(performance.now() - t)
    // `to` empty means every peer active at the call: exactly those, once each.
    const from = results.map((r) => r.from).sort()
    if (from.join() !== expected.sort().join()) batch.entries.push([-1, start, end, 'WRONG_ENTRIES', true])
    for (const r of results) record(r, A, B, start, end, true)
  } catch (error) {
    countRejection(error)
  } finally {
    inflight--
  }
}

async function cast() {
  const A = randomInt()
  const B = randomInt()
  batch.casts++
  try {
    const to = Math.random() < 0.5 ? [pick(peerNames)] : []
    batch.castsQueued += (await node.cast(to, 'Arith.Note', { A, B, S: A + B })).length
  } catch (error) {
    countRejection(error)
  }
}

function oneOp() {
  if (inflight >= MAX_INFLIGHT) {
    batch.skipped++
    return
  }
  const x = Math.random()
  if (x < mix.single) void singleCall()
  else if (x < mix.single + mix.multicast) void multicast()
  else void cast()
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
    if (due > n) batch.skipped += due - n
    issued += due
  }, TICK_MS)
  setTimeout(() => sampleMemory('start'), warmupMs).unref()
}

function sampleMemory(label) {
  global.gc()
  global.gc()
  const m = process.memoryUsage()
  send({ type: 'mem', incarnation, label, heapUsed: m.heapUsed, heapTotal: m.heapTotal, rss: m.rss, external: m.external, at: Date.now() })
}

/** Stop issuing, wait (bounded) for calls in flight, report the last batch. */
async function drain() {
  clearInterval(loadTimer)
  const until = performance.now() + 2 * timings.callTimeout + 1000
  while (inflight > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
  clearInterval(batchTimer)
  flush()
  send({ type: 'drained', incarnation, inflight })
}

process.on('message', async (msg) => {
  if (msg.type === 'go') startLoad()
  else if (msg.type === 'mem') sampleMemory(msg.label)
  else if (msg.type === 'drain') await drain()
  else if (msg.type === 'exit') {
    setTimeout(() => process.exit(0), 2000).unref()
    await node.close()
    process.exit(0)
  }
})
// The coordinator is gone (killed, or exited without cleaning up): do not linger.
process.on('disconnect', () => process.exit(1))

try {
  await node.listen(`tcp://127.0.0.1:${port}`)
} catch (error) {
  send({ type: 'bindFailed', incarnation, code: error.code, message: error.message })
  process.exit(3)
}
for (const p of peers) node.connect(p.name, p.address)
batchTimer = setInterval(flush, BATCH_MS)
send({ type: 'ready', incarnation })
if (cfg.go) startLoad()
else {
  // First start: tell the coordinator once the whole mesh is seen (or not, after a bounded wait).
  const seen = await node.waitForPeers(peerNames, { timeout: cfg.meshTimeoutMs }).then(
    () => true,
    () => false,
  )
  send({ type: 'meshed', incarnation, ok: seen, active: node.connectionCount() })
}
