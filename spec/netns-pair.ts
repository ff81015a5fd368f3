import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'

// Two "hosts" for the multi-host tests: network namespaces a and b joined by
// a veth pair. Needs root on Linux with iproute2; the tests skip otherwise.

export const canNetns = process.platform === 'linux' && process.getuid?.() === 0 && spawnSync('ip', ['netns', 'list']).status === 0

const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'pipe' })

/** Names and addresses of a pair on `subnet` (`10.231.77`, say), unique to this run; `make()` builds it, `remove()` takes it down. */
export function namespacePair(tag: string, subnet: string) {
  const id = randomBytes(3).toString('hex')
  const ns = { a: `${tag}-a-${id}`, b: `${tag}-b-${id}` }
  const veth = { a: `${tag}a${id}`, b: `${tag}b${id}` }
  const addr = { a: `${subnet}.1`, b: `${subnet}.2` }
  return {
    ns,
    veth,
    addr,
    make(): void {
      ip('netns', 'add', ns.a)
      ip('netns', 'add', ns.b)
      ip('link', 'add', veth.a, 'type', 'veth', 'peer', 'name', veth.b)
      ip('link', 'set', veth.a, 'netns', ns.a)
      ip('link', 'set', veth.b, 'netns', ns.b)
      for (const side of ['a', 'b'] as const) {
        ip('-n', ns[side], 'addr', 'add', `${addr[side]}/24`, 'dev', veth[side])
        ip('-n', ns[side], 'link', 'set', veth[side], 'up')
        ip('-n', ns[side], 'link', 'set', 'lo', 'up')
      }
    },
    /** Cut (false) or restore (true) the link, from side a. */
    link(up: boolean): void {
      ip('-n', ns.a, 'link', 'set', veth.a, up ? 'up' : 'down')
    },
    remove(): void {
      for (const space of [ns.a, ns.b]) spawnSync('ip', ['netns', 'del', space])
    },
  }
}
