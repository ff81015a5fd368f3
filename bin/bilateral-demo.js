#!/usr/bin/env node
// A three-node mesh on loopback, in one process. Each node listens on a port
// the system picks and dials the next node in a ring, so every pair shares one
// connection and every node is called over links it dialled and links it
// accepted. Then each node calls Arith.SumDiff on all the others.
import { Bilateral } from '../dist/index.js'

class Arith {
  SumDiff(args) {
    return { S: args.A + args.B, D: args.A - args.B }
  }
}

const names = ['alpha', 'beta', 'gamma']
const nodes = names.map((name) => new Bilateral({ network: 'demo', name }))
const started = performance.now()
const addresses = await Promise.all(nodes.map((node) => node.listen('tcp://127.0.0.1:*')))
for (const [i, node] of nodes.entries()) {
  node.register(new Arith())
  const next = (i + 1) % nodes.length
  node.connect(names[next], addresses[next])
  console.log(`${node.name} listens on ${addresses[i]} and dials ${names[next]}`)
}
await Promise.all(
  nodes.map((node) =>
    node.waitForPeers(
      names.filter((n) => n !== node.name),
      { timeout: 5000 },
    ),
  ),
)
console.log(`mesh of ${nodes.length} joined in ${(performance.now() - started).toFixed(1)} ms\n`)

let failures = 0
for (const [i, node] of nodes.entries()) {
  const args = { A: 100 * (i + 1), B: 250 }
  const t0 = performance.now()
  const results = await node.call([], 'Arith.SumDiff', args, { timeout: 5000 })
  const ms = (performance.now() - t0).toFixed(2)
  console.log(`${node.name} called Arith.SumDiff(${JSON.stringify(args)}) on everyone: ${results.length} answers in ${ms} ms`)
  for (const r of results) {
    if (r.ok) console.log(`  ${r.from.padEnd(6)} -> S=${r.reply.S} D=${r.reply.D}`)
    else (failures++, console.log(`  ${r.from.padEnd(6)} -> error ${r.error.code}: ${r.error.message}`))
  }
  if (results.length !== nodes.length - 1) failures++
}
await Promise.all(nodes.map((node) => node.close()))
if (failures > 0) {
  console.error(`demo failed: ${failures} missing or failed answers`)
  process.exitCode = 1
}
