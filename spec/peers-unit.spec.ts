/**
 * The peer table (PROTOCOL.md 12) without sockets: which link serves a peer
 * when both sides dial each other, and what a link going away does. Links
 * are real Link objects writing nowhere; diallers are fakes that record.
 * The same rules with real sockets: liveness.spec.ts ("simultaneous
 * cross-dials"), restarts.spec.ts ("the cross-dial switch").
 */
import { describe, expect, it } from 'vitest'
import type { DialState } from '../lib/mesh/dial.js'
import { Link } from '../lib/mesh/link.js'
import { PeerTable, type DialControl } from '../lib/mesh/peers.js'

class FakeDial implements DialControl {
  state: DialState = 'joining'
  readonly calls: string[] = []
  standby(): void {
    this.state = 'standby'
    this.calls.push('standby')
  }
  resume(): void {
    this.state = 'backoff'
    this.calls.push('resume')
  }
}

function link(peer: string, direction: 'inbound' | 'outbound'): Link {
  return new Link(
    peer,
    direction,
    {},
    () => Promise.resolve('sent'),
    { window: { messages: 64, bytes: 1 << 20 }, backlog: 1 << 20, queue: 100 },
    0,
  )
}

function table(ourName: string) {
  const events: unknown[][] = []
  const inbound = new Set<string>()
  const state = { closing: false }
  const t = new PeerTable<FakeDial>({
    name: ourName,
    get closing() {
      return state.closing
    },
    up: (peer, l) => void events.push(['up', peer, l.direction]),
    down: (peer, reason, l) => void events.push(['down', peer, reason, l.direction]),
    retireInbound: (l) => void events.push(['retire inbound', l.peer]),
    withdraw: (l) => void events.push(['withdraw outbound', l.peer]),
    holdsInbound: (name) => inbound.has(name),
  })
  return { t, events, inbound, state }
}

describe('peer table, PROTOCOL.md 12', () => {
  it('rule 1: the first link to become live serves the peer; up again for the same link changes nothing', () => {
    const { t, events } = table('alpha')
    const first = link('beta', 'inbound')
    t.up(first)
    t.up(first)
    expect(t.liveLink('beta')).toBe(first)
    expect(events).toEqual([['up', 'beta', 'inbound']])
    expect(t.activeCount()).toBe(1)
  })

  it('rule 2 (D25): an inbound link coming up puts our dialler in standby only if the peer sorts first', () => {
    const low = table('beta')
    const dial = new FakeDial()
    low.t.entry('alpha').dialler = dial
    low.t.up(link('alpha', 'inbound'))
    expect(dial.calls).toEqual(['standby'])
    const high = table('alpha')
    const ours = new FakeDial()
    high.t.entry('beta').dialler = ours
    high.t.up(link('beta', 'inbound'))
    expect(ours.calls).toEqual([])
  })

  it('rule 3: both links up, the one dialled by the node sorting first survives, with no down and up', () => {
    // We are alpha (L): our outbound link wins, the inbound one is parted and retired.
    const l = table('alpha')
    const inboundL = link('beta', 'inbound')
    const outboundL = link('beta', 'outbound')
    l.t.entry('beta').dialler = new FakeDial()
    l.t.up(inboundL)
    l.t.up(outboundL)
    expect(l.t.liveLink('beta')).toBe(outboundL)
    expect(l.events).toEqual([
      ['up', 'beta', 'inbound'],
      ['retire inbound', 'beta'],
    ])
    // We are beta (H): alpha's dial (our inbound link) wins; ours is withdrawn and our dialler stands by.
    const h = table('beta')
    const dial = new FakeDial()
    h.t.entry('alpha').dialler = dial
    const outboundH = link('alpha', 'outbound')
    const inboundH = link('alpha', 'inbound')
    h.t.up(outboundH)
    h.t.up(inboundH)
    expect(h.t.liveLink('alpha')).toBe(inboundH)
    expect(h.events).toEqual([
      ['up', 'alpha', 'outbound'],
      ['withdraw outbound', 'alpha'],
    ])
    expect(dial.calls).toEqual(['standby'])
  })

  it('names compare bytewise in UTF-8: uppercase before lowercase, and a multibyte name after ASCII', () => {
    expect(table('Zed').t.weDialFirst('alpha')).toBe(true)
    expect(table('alpha').t.weDialFirst('Zed')).toBe(false)
    expect(table('z').t.weDialFirst('é')).toBe(true)
    expect(table('ab').t.weDialFirst('abc')).toBe(true)
  })

  it('a live link that closed is replaced by the next one to come up', () => {
    const { t, events } = table('alpha')
    const old = link('beta', 'outbound')
    t.up(old)
    old.close()
    const fresh = link('beta', 'inbound')
    t.up(fresh)
    expect(t.liveLink('beta')).toBe(fresh)
    expect(events).toEqual([
      ['up', 'beta', 'outbound'],
      ['up', 'beta', 'inbound'],
    ])
  })

  it('D24: the live inbound link lost, the peer is down and a standby dialler starts over; not while closing, and not for our own link', () => {
    const { t, events, state } = table('beta')
    const dial = new FakeDial()
    t.entry('alpha').dialler = dial
    const inbound = link('alpha', 'inbound')
    t.up(inbound)
    t.lost(inbound, 'HEARTBEAT')
    expect(events.at(-1)).toEqual(['down', 'alpha', 'HEARTBEAT', 'inbound'])
    expect(inbound.state).toBe('closed')
    expect(dial.calls).toEqual(['standby', 'resume'])
    // While closing, nothing is resumed.
    const again = link('alpha', 'inbound')
    t.up(again)
    state.closing = true
    t.lost(again, 'CLOSED')
    expect(dial.calls).toEqual(['standby', 'resume', 'standby'])
    // An outbound link lost: its dialler decides for itself.
    state.closing = false
    const ours = link('alpha', 'outbound')
    dial.state = 'active'
    t.up(ours)
    t.lost(ours, 'PART')
    expect(dial.calls).toEqual(['standby', 'resume', 'standby'])
  })

  it('a link that is not the live one going away changes nothing but itself', () => {
    const { t, events } = table('alpha')
    const live = link('beta', 'outbound')
    t.up(live)
    const retired = link('beta', 'inbound')
    t.lost(retired, 'PART')
    t.crossed(retired)
    expect(retired.state).toBe('closed')
    expect(t.liveLink('beta')).toBe(live)
    expect(events).toEqual([['up', 'beta', 'outbound']])
  })

  it('A17: the live inbound link parted CROSS no longer serves: the peer is down (PART), a standby dialler starts over', () => {
    const { t, events } = table('beta')
    const dial = new FakeDial()
    t.entry('alpha').dialler = dial
    const inbound = link('alpha', 'inbound')
    t.up(inbound)
    t.crossed(inbound)
    expect(t.liveLink('alpha')).toBeUndefined()
    expect(events.at(-1)).toEqual(['down', 'alpha', 'PART', 'inbound'])
    expect(dial.calls).toEqual(['standby', 'resume'])
    // It stays open a moment for stragglers (retired by the accepting side), so it is not closed here.
    expect(inbound.state).not.toBe('closed')
  })

  it('an entry is forgotten once no dialler, no live link and no inbound link of the accepting side refer to it', () => {
    const { t, inbound } = table('alpha')
    const l = link('beta', 'inbound')
    t.up(l)
    inbound.add('beta')
    t.lost(l, 'PART')
    expect(t.get('beta')).toBeDefined()
    inbound.delete('beta')
    t.forgetIfUnused(t.get('beta')!)
    expect(t.get('beta')).toBeUndefined()
    expect(t.size).toBe(0)
  })
})
