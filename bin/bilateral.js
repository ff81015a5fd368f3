#!/usr/bin/env node
// The bilateral command: call, cast, ping and inspect running nodes over the
// mesh itself, serve a module's receivers, make keys. Exit status: 0 success,
// 1 a call failed or a peer could not be reached, 2 bad usage.
import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Bilateral, publicKeyOf } from '../dist/index.js'

const COMMON = `Peers are written NAME@ADDRESS: alpha@tcp://10.0.0.5:7000, or on a plaintext
mesh the ADDRESS alone (the node there says its name); for an encrypted node
KEY@tcp://..., its public key, where KEY may be @FILE (a .pub file).

Common options:
  --network NAME   the mesh's network name (default: $BILATERAL_NETWORK)
  --key FILE       our secret key file (from bilateral keygen): join encrypted
  --name NAME      our name on a plaintext mesh (default: bilateral-cli-<pid>)
  --timeout MS     how long to wait for the peer and its answer (default 5000)
  --json           print JSON instead of text
  -h, --help       this help`

const COMMANDS = {
  call: {
    usage: 'bilateral call PEER Type.Method [JSON-ARGS] [--meta k=v]... [--until first-ok|N] [--stream]',
    about: 'Call a method on PEER and print its result (--stream: each result as it arrives); exit 1 if it failed.',
    options: { meta: { type: 'string', multiple: true }, until: { type: 'string' }, stream: { type: 'boolean' } },
    positionals: [2, 3],
    check: ([, , json], o) => (parseJsonArg(json), parseMeta(o.meta), parseUntil(o.until)),
    run: call,
  },
  cast: {
    usage: 'bilateral cast PEER Type.Method [JSON-ARGS] [--meta k=v]...',
    about: 'Send a cast (no answer) to PEER.',
    options: { meta: { type: 'string', multiple: true } },
    positionals: [2, 3],
    check: ([, , json], o) => (parseJsonArg(json), parseMeta(o.meta)),
    run: cast,
  },
  ping: {
    usage: 'bilateral ping PEER [--count N]',
    about: "Time round trips to PEER's $node.Ping.",
    options: { count: { type: 'string' } },
    positionals: [1, 1],
    check: (_, o) => countOf(o),
    run: ping,
  },
  methods: {
    usage: 'bilateral methods PEER',
    about: 'List the receivers and methods PEER lets us call ($node.Info).',
    options: {},
    positionals: [1, 1],
    run: (node, peer, _args, o) => show(node, peer, '$node.Info', o, (info) => methodLines(info)),
  },
  peers: {
    usage: 'bilateral peers PEER',
    about: "List PEER's peers and their states ($node.Peers, if PEER serves it to us).",
    options: {},
    positionals: [1, 1],
    run: (node, peer, _args, o) => show(node, peer, '$node.Peers', o, (list) => list.map(peerLine)),
  },
  stats: {
    usage: 'bilateral stats PEER',
    about: "Print PEER's figures ($node.Stats, if PEER serves it to us).",
    options: {},
    positionals: [1, 1],
    run: (node, peer, _args, o) => show(node, peer, '$node.Stats', o, statLines),
  },
  watch: {
    usage: 'bilateral watch PEER [--interval MS] [--for MS]',
    about:
      "Print changes in PEER's peers (up, down, refused, ...) as they happen, read from $node.Peers every --interval ms (default 500).",
    options: { interval: { type: 'string' }, for: { type: 'string' } },
    positionals: [1, 1],
    check: (_, o) => (msOf(o.interval, '--interval'), o.for === undefined || msOf(o.for, '--for')),
    run: watch,
  },
  bench: {
    usage: 'bilateral bench PEER Type.Method [JSON-ARGS] [--count N] [--concurrency C]',
    about: 'Call a method N times (default 1000), C at a time (default 10), and print the rate and latency.',
    options: { count: { type: 'string' }, concurrency: { type: 'string' } },
    positionals: [2, 3],
    check: ([, , json], o) => (parseJsonArg(json), countOf(o, 1000), wholeOf(o.concurrency, '--concurrency', 10)),
    run: bench,
  },
  serve: {
    usage: 'bilateral serve MODULE --listen ADDRESS [--connect PEER]... [--seed ADDRESS]... [--mesh] [--introspect]',
    about:
      "Serve MODULE's exported classes (made with no arguments) and objects as receivers, until interrupted. --seed joins a mesh that forms itself through that member; --mesh makes this the first member.",
    options: {
      listen: { type: 'string', multiple: true },
      connect: { type: 'string', multiple: true },
      seed: { type: 'string', multiple: true },
      mesh: { type: 'boolean' },
      introspect: { type: 'boolean' },
    },
    positionals: [1, 1],
    // Each --connect is NAME@ADDRESS: a served node redials its peers by name.
    check: (_, o) => {
      for (const seed of o.seed ?? [])
        if (!/^[a-z]+:\/\/./.test(seed))
          throw new Usage(`--seed takes an ADDRESS, such as tcp://10.0.0.5:7000, not ${JSON.stringify(seed)}`)
      if ((o.seed !== undefined || o.mesh) && o.keypair !== undefined) throw new Usage('--seed and --mesh are for plaintext meshes for now')
      for (const text of o.connect ?? []) {
        if (parsePeer(text, o.keypair !== undefined).name === undefined)
          throw new Usage(`--connect takes NAME@ADDRESS: a served node redials its peers by name, so ${text} needs one`)
      }
    },
    run: serve,
    local: true,
  },
}

const USAGE = `Usage: bilateral COMMAND [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(8)} ${c.about}`)
  .join('\n')}
  keygen   Make a CURVE keypair (the same as bilateral-keygen; see bilateral keygen --help)

Run bilateral COMMAND --help for a command's usage.`

/** A mistake in how the command was used: one line on stderr, exit 2. */
class Usage extends Error {}
/** A failure of the work itself (a peer unreachable, a call failed): exit 1. */
class Failed extends Error {}

async function main(argv) {
  const [command, ...rest] = argv
  if (command === undefined || command === '-h' || command === '--help') {
    console.log(USAGE)
    return 0
  }
  if (command === 'keygen') {
    process.argv = [process.argv[0], 'bilateral-keygen', ...rest]
    await import('./bilateral-keygen.js')
    return undefined
  }
  const spec = COMMANDS[command]
  if (spec === undefined) throw new Usage(`unknown command ${JSON.stringify(command)} (see bilateral --help)`)
  let parsed
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        network: { type: 'string' },
        key: { type: 'string' },
        name: { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...spec.options,
      },
    })
  } catch (error) {
    throw new Usage(`${firstLine(error.message)} (see bilateral ${command} --help)`)
  }
  const o = parsed.values
  if (o.help) {
    console.log(`Usage: ${spec.usage}\n\n${spec.about}\n\n${COMMON}`)
    return 0
  }
  const [min, max] = spec.positionals
  const positionals = parsed.positionals
  if (positionals.length < min || positionals.length > max) throw new Usage(`usage: ${spec.usage}`)
  const timeout = o.timeout === undefined ? 5000 : Number(o.timeout)
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 2 ** 31 - 1) throw new Usage('--timeout takes a number of ms (see --help)')
  const network = o.network ?? process.env.BILATERAL_NETWORK
  if (network === undefined || network === '') throw new Usage('--network NAME is required (or set BILATERAL_NETWORK)')
  const keypair = o.key === undefined ? undefined : await keypairFrom(o.key)
  if (keypair !== undefined && o.name !== undefined)
    throw new Usage('--name is for plaintext meshes: an encrypted node is named by its key')
  const options = { ...o, timeout, network, keypair }
  // Every mistake in the command line is found before anything is dialled.
  spec.check?.(positionals, options)
  if (spec.local) return spec.run(positionals, options)
  const peer = parsePeer(positionals[0], keypair !== undefined)
  const node = new Bilateral({
    network,
    ...(keypair ? { keypair } : { name: o.name ?? `bilateral-cli-${process.pid}` }),
    introspection: false,
  })
  try {
    try {
      if (peer.name === undefined) {
        peer.name = await node.dial(peer.address, { timeout })
      } else {
        node.connect(peer.name, peer.address)
        await node.waitForPeers([peer.name], { timeout })
      }
    } catch (error) {
      throw new Failed(`cannot reach ${peer.shown}: ${firstLine(error.message)}`)
    }
    return await spec.run(node, peer, positionals.slice(1), options)
  } finally {
    await node.close()
  }
}

/** NAME@ADDRESS, the name a key literal or @FILE when encrypted; plaintext, ADDRESS alone (its name undefined until dialled). */
function parsePeer(text, encrypted) {
  // An endpoint alone (ipc://@name included): NAME@ADDRESS never starts with a transport.
  if (/^[a-z]+:\/\//.test(text)) {
    if (encrypted) throw new Usage(`an encrypted peer is KEY@ADDRESS (KEY its public key or @FILE), not ${JSON.stringify(text)} alone`)
    return { name: undefined, address: text, shown: text }
  }
  const m = /^(.+)@([a-z]+:\/\/.+)$/.exec(text)
  if (m === null) throw new Usage(`peer ${JSON.stringify(text)} must be NAME@ADDRESS or ADDRESS, such as alpha@tcp://127.0.0.1:7000`)
  let name = m[1]
  if (name.startsWith('@') && existsSync(name.slice(1))) name = readFileSync(name.slice(1), 'utf8').trim()
  if (encrypted && name.length !== 40)
    throw new Usage(`an encrypted peer is named by its 40-character public key (or @FILE): ${JSON.stringify(m[1])}`)
  return { name, address: m[2], shown: `${name.length > 16 ? `${name.slice(0, 8)}…` : name}@${m[2]}` }
}

async function keypairFrom(file) {
  let secretKey
  try {
    secretKey = readFileSync(file, 'utf8').trim()
  } catch (error) {
    throw new Usage(`cannot read --key ${file}: ${firstLine(error.message)}`)
  }
  try {
    return { publicKey: await publicKeyOf(secretKey), secretKey }
  } catch {
    throw new Usage(`--key ${file} does not hold a secret key (make one with bilateral keygen --out FILE)`)
  }
}

function parseJsonArg(text) {
  if (text === undefined) return null
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new Usage(`the arguments must be JSON: ${firstLine(error.message)}`)
  }
}

function parseMeta(pairs = []) {
  if (pairs.length === 0) return undefined
  const meta = {}
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new Usage(`--meta takes key=value, not ${JSON.stringify(pair)}`)
    meta[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return meta
}

function parseUntil(text) {
  if (text === undefined) return undefined
  if (text === 'first-ok') return text
  const k = Number(text)
  if (Number.isInteger(k) && k > 0) return { ok: k }
  throw new Usage('--until takes first-ok or a number of replies')
}

async function call(node, peer, [method, json], o) {
  const args = parseJsonArg(json)
  const options = { timeout: o.timeout, meta: parseMeta(o.meta), until: parseUntil(o.until) }
  const asJson = (r) => (r.ok ? r : { from: r.from, ok: false, error: errorJson(r.error) })
  const line = (r) => (r.ok ? `${r.from}\tok\t${JSON.stringify(r.reply)}` : `${r.from}\t${r.error.code}\t${firstLine(r.error.message)}`)
  if (o.stream) {
    // One line a result as it settles (JSON lines with --json).
    let failed = false
    for await (const r of node.stream([peer.name], method, args, options)) {
      failed ||= !r.ok
      console.log(o.json ? JSON.stringify(asJson(r)) : line(r))
    }
    return failed ? 1 : 0
  }
  const results = await node.call([peer.name], method, args, options)
  if (o.json) console.log(JSON.stringify(results.map(asJson)))
  else for (const r of results) console.log(line(r))
  return results.some((r) => !r.ok) ? 1 : 0
}

async function cast(node, peer, [method, json], o) {
  const sent = await node.cast([peer.name], method, parseJsonArg(json), { meta: parseMeta(o.meta) })
  if (o.json) console.log(JSON.stringify({ sent }))
  else console.log(sent.length > 0 ? `sent to ${sent.join(', ')}` : 'not sent')
  return sent.length > 0 ? 0 : 1
}

async function ping(node, peer, _args, o) {
  const count = countOf(o)
  const times = []
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    await node.request(peer.name, '$node.Ping', null, { timeout: o.timeout }).catch((error) => {
      throw new Failed(`${peer.shown}: ${error.code}: ${firstLine(error.message)}`)
    })
    times.push(performance.now() - t0)
  }
  if (o.json) console.log(JSON.stringify({ peer: peer.name, ms: times.map((t) => Number(t.toFixed(3))) }))
  else for (const t of times) console.log(`${peer.shown}\t${t.toFixed(3)} ms`)
  return 0
}

function countOf(o, otherwise = 3) {
  return wholeOf(o.count, '--count', otherwise)
}

function wholeOf(text, flag, otherwise) {
  const n = text === undefined ? otherwise : Number(text)
  if (!Number.isInteger(n) || n < 1) throw new Usage(`${flag} takes a whole number`)
  return n
}

function msOf(text, flag, otherwise = 500) {
  const n = text === undefined ? otherwise : Number(text)
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 31 - 1) throw new Usage(`${flag} takes a number of ms`)
  return n
}

async function watch(node, peer, _args, o) {
  const interval = msOf(o.interval, '--interval')
  const until = o.for === undefined ? Infinity : performance.now() + msOf(o.for, '--for')
  let stop = false
  const end = () => (stop = true)
  process.once('SIGINT', end)
  process.once('SIGTERM', end)
  const known = new Map()
  while (!stop && performance.now() < until) {
    let list
    try {
      list = await node.request(peer.name, '$node.Peers', null, { timeout: o.timeout })
    } catch (error) {
      const why =
        error.code === 'NO_SUCH_METHOD' ? 'it does not serve $node.Peers to us (see its introspection option)' : firstLine(error.message)
      throw new Failed(`${peer.shown}: ${error.code}: ${why}`)
    }
    const seen = new Set()
    for (const p of list) {
      seen.add(p.name)
      const state = `${p.state}${p.code == null ? '' : ` ${p.code}`}`
      if (known.get(p.name) === state) continue
      known.set(p.name, state)
      print(o, { at: new Date().toISOString(), peer: p.name, state: p.state, code: p.code ?? undefined, why: p.why ?? undefined })
    }
    for (const name of [...known.keys()]) {
      if (seen.has(name)) continue
      known.delete(name)
      print(o, { at: new Date().toISOString(), peer: name, state: 'forgotten' })
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(interval, until - performance.now()))))
  }
  return 0
}

function print(o, event) {
  if (o.json) console.log(JSON.stringify(event))
  else console.log([event.at, event.peer, event.state, event.code ?? '', event.why ?? ''].join('\t').trimEnd())
}

async function bench(node, peer, [method, json], o) {
  const args = parseJsonArg(json)
  const count = countOf(o, 1000)
  const concurrency = wholeOf(o.concurrency, '--concurrency', 10)
  const times = []
  const failures = new Map()
  let next = 0
  const t0 = performance.now()
  const worker = async () => {
    while (next < count) {
      next++
      const t = performance.now()
      const [result] = await node.call([peer.name], method, args, { timeout: o.timeout })
      times.push(performance.now() - t)
      if (!result.ok) failures.set(result.error.code, (failures.get(result.error.code) ?? 0) + 1)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  const seconds = (performance.now() - t0) / 1000
  times.sort((a, b) => a - b)
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))]
  const report = {
    calls: count,
    concurrency,
    perSecond: Math.round(count / seconds),
    p50Ms: Number(at(0.5).toFixed(3)),
    p99Ms: Number(at(0.99).toFixed(3)),
    failed: Object.fromEntries(failures),
  }
  if (o.json) console.log(JSON.stringify(report))
  else {
    console.log(`${report.calls} calls, ${concurrency} at a time: ${report.perSecond}/s, p50 ${report.p50Ms} ms, p99 ${report.p99Ms} ms`)
    for (const [code, n] of failures) console.log(`failed\t${code}\t${n}`)
  }
  return failures.size > 0 ? 1 : 0
}

async function show(node, peer, method, o, lines) {
  let value
  try {
    value = await node.request(peer.name, method, null, { timeout: o.timeout })
  } catch (error) {
    const why =
      error.code === 'NO_SUCH_METHOD' ? `it does not serve ${method} to us (see its introspection option)` : firstLine(error.message)
    throw new Failed(`${peer.shown}: ${error.code}: ${why}`)
  }
  if (o.json) console.log(JSON.stringify(value))
  else for (const line of lines(value)) console.log(line)
  return 0
}

const methodLines = (info) => Object.entries(info.receivers).flatMap(([receiver, methods]) => methods.map((m) => `${receiver}.${m}`))
const peerLine = (p) =>
  [p.name, p.state, p.direction, p.address ?? '-', p.rtt == null ? '-' : `${p.rtt.toFixed(1)} ms`, p.why ?? ''].join('\t')
const statLines = (stats) =>
  Object.entries(stats)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${k}\t${v}`)

async function serve([module], o) {
  if (o.listen === undefined && o.connect === undefined && o.seed === undefined)
    throw new Usage('serve needs --listen ADDRESS, --connect PEER or --seed ADDRESS')
  let exports
  try {
    exports = await import(pathToFileURL(resolve(module)).href)
  } catch (error) {
    throw new Usage(`cannot load ${module}: ${firstLine(error.message)}`)
  }
  const node = new Bilateral({
    network: o.network,
    ...(o.keypair ? { keypair: o.keypair } : { name: o.name ?? `bilateral-serve-${process.pid}` }),
    ...(o.introspect ? { introspection: { methods: ['Ping', 'Info', 'Health', 'Peers', 'Stats'] } } : {}),
    ...(o.seed !== undefined || o.mesh ? { seeds: o.seed ?? [] } : {}),
  })
  const served = []
  for (const [name, value] of Object.entries(exports)) {
    const receiverName = name === 'default' ? undefined : name
    const receiver = typeof value === 'function' && value.prototype !== undefined ? new value() : value
    if (receiver === null || typeof receiver !== 'object') continue
    served.push(...node.register(receiver, receiverName ?? receiver.constructor?.name))
  }
  if (served.length === 0) throw new Usage(`${module} exports no class or object to serve`)
  for (const address of o.listen ?? []) console.log(`listening ${await node.listen(address)}`)
  for (const text of o.connect ?? []) {
    const peer = parsePeer(text, o.keypair !== undefined)
    node.connect(peer.name, peer.address)
  }
  console.log(`serving ${served.join(' ')} as ${node.name}`)
  await new Promise((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await node.close()
  return 0
}

function errorJson(error) {
  return { code: error.code, message: error.message, ...(error.remoteCode ? { remoteCode: error.remoteCode } : {}) }
}

function firstLine(text) {
  return String(text).split('\n', 1)[0]
}

try {
  const code = await main(process.argv.slice(2))
  if (code !== undefined) process.exitCode = code
} catch (error) {
  if (error instanceof Usage) {
    process.stderr.write(`bilateral: ${error.message}\n`)
    process.exitCode = 2
  } else {
    process.stderr.write(`bilateral: ${error instanceof Failed ? error.message : firstLine(error?.stack ?? error)}\n`)
    process.exitCode = 1
  }
}
