/**
 * The accepting side (PROTOCOL.md 10.2) as a state machine, without sockets:
 * a manual clock and a host that records what is sent to each routing id and
 * what the mesh is told. One test a row, or a few rows that share an event,
 * named by the row. Admission itself (2.3, the ZAP handler) has its own
 * suites with real sockets (strangers.spec.ts, fds.spec.ts); here it is a
 * fake that records.
 */
import { encode } from '@msgpack/msgpack'
import { describe, expect, it } from 'vitest'
import type { Clock } from '../lib/clock.js'
import { Acceptor, type AcceptHost, type JoinVerifier } from '../lib/mesh/accept.js'
import type { Admission } from '../lib/mesh/admission.js'
import type { DialState } from '../lib/mesh/dial.js'
import { Link } from '../lib/mesh/link.js'
import { Codec } from '../lib/wire/codec.js'
import {
  FrameType,
  Part,
  TICK,
  TOCK,
  encodeCall,
  encodeChallenge,
  encodeCredit,
  encodeJoin,
  encodePart,
  encodeStay,
  type Frame,
  type Join,
} from '../lib/wire/frames.js'

const JOIN_INTERVAL = 200
const JOIN_TIMEOUT = 1000
const STALL_TIMEOUT = 5000
const MAX_MESSAGE_SIZE = 64 * 1024
const INCARNATION = new Uint8Array(16).fill(5)

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 10_000
  return {
    now: () => now,
    setTimer: () => undefined,
    clearTimer: () => {},
    hold: () => () => {},
    advance: (ms) => void (now += ms),
  }
}

const codec = new Codec()
type Event = [string, ...unknown[]]

function rig(options: { maxPeers?: number; verifier?: JoinVerifier; dialState?: DialState; servedByDial?: boolean; gone?: boolean } = {}) {
  const clock = manualClock()
  const sent = new Map<string, Frame[][]>()
  const events: Event[] = []
  const live = new Map<string, Link>()
  const admission = {
    wasClosed: () => false,
    appeared: () => {},
    closed: (key: string) => void events.push(['admission closed', key]),
    reappeared: () => {},
  }
  const state = { gone: options.gone ?? false, revoked: false }
  const host: AcceptHost = {
    clock,
    timing: { joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT, stallTimeout: STALL_TIMEOUT },
    network: 'unit',
    name: 'us',
    maxPeers: options.maxPeers ?? 100,
    maxMessage: MAX_MESSAGE_SIZE + 2 * 256 * 1024,
    maxMessageSize: MAX_MESSAGE_SIZE,
    verifier: options.verifier,
    admission: admission as unknown as Admission,
    send(routingId, parts) {
      const key = routingId.toString('latin1')
      if (!sent.has(key)) sent.set(key, [])
      sent.get(key)!.push(codec.decodeMessage(parts))
      return Promise.resolve(state.gone ? 'gone' : 'sent')
    },
    stay: () => encodeStay({ network: 'unit', name: 'us', incarnation: INCARNATION }),
    makeLink: (join, write) =>
      new Link(join.name, 'inbound', join, write, { window: { messages: 64, bytes: 1 << 20 }, backlog: 1 << 20, queue: 1000 }, clock.now()),
    peerCount: () => live.size,
    isPeer: (name) => live.has(name),
    servedByDial: () => options.servedByDial ?? false,
    dialState: () => options.dialState,
    up: (link) => (live.set(link.peer, link), void events.push(['up', link.peer])),
    lost: (link, reason) => (live.delete(link.peer), void events.push(['lost', link.peer, reason])),
    crossed: (link) => {
      live.delete(link.peer)
      events.push(['crossed', link.peer])
      acceptor.crossedLink(link)
    },
    data: (link, frame) => void events.push(['data', link.peer, frame.type, link.state]),
    consumed: () => {},
    refused: (name, error) => void events.push(['refused', name, error.code]),
    dropped: (error) => void events.push(['dropped', error.code]),
    revoked: () => state.revoked,
    failed: (error) => {
      throw error
    },
  }
  const acceptor = new Acceptor(host)
  let next = 0
  /** A new connection: libzmq's connect notification. Returns its routing id and helpers. */
  const connection = () => {
    const id = Buffer.from([0, 0, 0, 0, ++next])
    acceptor.connected(id)
    const key = id.toString('latin1')
    return {
      id,
      send: (...parts: Uint8Array[]) =>
        acceptor.message(
          id,
          parts.map((p) => Buffer.from(p)),
        ),
      received: (): Frame[][] => sent.get(key) ?? [],
      types: (): FrameType[] => (sent.get(key) ?? []).map((m) => m[0]!.type),
      parts: (): string[] =>
        (sent.get(key) ?? []).filter((m) => m[0]!.type === FrameType.PART).map((m) => (m[0] as { reason: string }).reason),
    }
  }
  const settle = () => new Promise((resolve) => setImmediate(resolve))
  /** A connection whose JOIN (with `fields`) was handled. */
  const joined = async (fields: Partial<Join> = {}) => {
    const c = connection()
    c.send(join(fields))
    await settle()
    return c
  }
  return { clock, acceptor, events, live, state, connection, joined, settle, of: (t: string) => events.filter((e) => e[0] === t) }
}

const join = (fields: Partial<Join> = {}): Uint8Array =>
  encodeJoin({
    network: 'unit',
    name: 'them',
    target: 'us',
    incarnation: INCARNATION,
    maxPart: 1 << 20,
    window: { messages: 64, bytes: 1 << 20 },
    ...fields,
  })
const call = (id: number): Uint8Array[] => [encodeCall(id, 'A.B'), encode(null)]

describe('accepting side, PROTOCOL.md 10.2', () => {
  it.each([
    ['A1', { network: 'elsewhere' }, Part.NETWORK_MISMATCH],
    ['A2', { target: 'someone-else' }, Part.WRONG_NAME],
    ['A3', { name: '' }, Part.PROTOCOL],
    ['A3', { name: 'n'.repeat(256) }, Part.PROTOCOL],
    ['A4', { name: 'us' }, Part.LOOPBACK],
  ] as const)('%s: JOIN %j is refused with PART %s and reported; the connection stays unjoined', async (_, fields, reason) => {
    const r = rig()
    const c = r.connection()
    c.send(join(fields))
    await r.settle()
    expect(c.parts()).toEqual([reason])
    expect(r.of('refused')).toEqual([['refused', expect.any(String), reason]])
    expect(r.of('up')).toEqual([])
    expect(r.acceptor.counts()).toMatchObject({ unjoined: 1, inbound: 0 })
  })

  it('A5, A31: an encrypted node challenges each connection, and refuses a JOIN whose proof fails with AUTH and a new challenge', async () => {
    let nonces = 0
    const verifier: JoinVerifier = {
      nonce: () => new Uint8Array(24).fill(++nonces),
      verify: (j, nonce) => (j.proof !== undefined && nonce !== undefined && j.proof[0] === nonce[0] ? undefined : 'bad proof'),
    }
    const r = rig({ verifier })
    const c = r.connection()
    expect(c.types()).toEqual([FrameType.CHALLENGE])
    c.send(join({ proof: new Uint8Array(64).fill(99) }))
    await r.settle()
    expect(c.parts()).toEqual([Part.AUTH])
    expect(r.of('refused')).toEqual([['refused', 'them', 'AUTH']])
    expect(c.types()).toEqual([FrameType.CHALLENGE, FrameType.PART, FrameType.CHALLENGE])
    // The latest nonce (2) answered: joined.
    r.clock.advance(JOIN_INTERVAL)
    c.send(join({ proof: new Uint8Array(64).fill(2) }))
    await r.settle()
    expect(r.of('up')).toEqual([['up', 'them']])
  })

  it('A10: a JOIN that passes makes the link, with the JOIN’s terms, answers STAY and tells the mesh up', async () => {
    const r = rig()
    const c = r.connection()
    c.send(join({ callTimeout: 1234 }))
    await r.settle()
    expect(c.types()).toEqual([FrameType.STAY])
    expect(r.of('up')).toEqual([['up', 'them']])
    const link = r.live.get('them')!
    expect(link.direction).toBe('inbound')
    expect(link.peerCallTimeout).toBe(1234)
    expect(r.acceptor.linkOf('them')).toBe(link)
  })

  it('A6: a JOIN again on the joined connection is answered STAY; one under another name is PROTOCOL', async () => {
    const r = rig()
    const c = await r.joined()
    c.send(join())
    expect(c.types()).toEqual([FrameType.STAY, FrameType.STAY])
    c.send(join({ name: 'other' }))
    expect(c.parts()).toEqual([Part.PROTOCOL])
    expect(r.of('up')).toHaveLength(1)
  })

  it('A7: a new peer when maxPeers are joined is refused OVERLOADED', async () => {
    const r = rig({ maxPeers: 1 })
    const a = r.connection()
    a.send(join({ name: 'first' }))
    await r.settle()
    const b = r.connection()
    b.send(join({ name: 'second' }))
    await r.settle()
    expect(b.parts()).toEqual([Part.OVERLOADED])
    expect(r.of('refused')).toEqual([['refused', 'second', 'OVERLOADED']])
  })

  it('A8: a JOIN under a name joined on another connection probes it: alive, DUPLICATE; gone, the new one takes the name', async () => {
    const alive = rig()
    const first = alive.connection()
    first.send(join())
    await alive.settle()
    const second = alive.connection()
    second.send(join())
    await alive.settle()
    expect(first.types()).toEqual([FrameType.STAY, FrameType.TOCK])
    expect(second.parts()).toEqual([Part.DUPLICATE])
    const dead = rig()
    const old = dead.connection()
    old.send(join())
    await dead.settle()
    dead.state.gone = true
    const fresh = dead.connection()
    fresh.send(join())
    await dead.settle()
    expect(dead.of('lost')).toEqual([['lost', 'them', 'LOST']])
    expect(dead.of('up')).toEqual([
      ['up', 'them'],
      ['up', 'them'],
    ])
    expect(fresh.types()).toEqual([FrameType.STAY])
  })

  it('A9: a JOIN from a peer whose live link we dialled is parted CROSS, whatever the names, and nothing is reported', async () => {
    const r = rig({ servedByDial: true })
    const c = await r.joined()
    expect(c.parts()).toEqual([Part.CROSS])
    expect(r.events).toEqual([])
  })

  it('A11: before joining, anything but a JOIN message is dropped unread, and so are JOINs beyond four a joinInterval', async () => {
    const r = rig()
    const c = r.connection()
    c.send(TOCK)
    c.send(encodePart(Part.CLOSE, 'x'))
    c.send(encodeCredit(1, 1))
    c.send(join(), encode(null))
    c.send(new Uint8Array([1, 2, 3]))
    expect(c.received()).toEqual([])
    for (let i = 0; i < 6; i++) c.send(join({ network: 'elsewhere' }))
    await r.settle()
    expect(c.parts()).toEqual([Part.NETWORK_MISMATCH, Part.NETWORK_MISMATCH, Part.NETWORK_MISMATCH, Part.NETWORK_MISMATCH])
    expect(r.acceptor.dropped).toBeGreaterThanOrEqual(7)
  })

  it('A12: what a joined peer would send, from an unjoined connection, is told NOT_JOINED at most once a joinInterval', () => {
    const r = rig()
    const c = r.connection()
    c.send(...call(1))
    c.send(TICK)
    c.send(encodeStay({ network: 'unit', name: 'x' }))
    expect(c.parts()).toEqual([Part.NOT_JOINED])
    r.clock.advance(JOIN_INTERVAL)
    c.send(TICK)
    expect(c.parts()).toEqual([Part.NOT_JOINED, Part.NOT_JOINED])
  })

  it('A13, A14: a joined TICK is answered TOCK (unless the key is revoked); TOCK, STAY and CHALLENGE do nothing', async () => {
    const r = rig()
    const c = await r.joined()
    c.send(TICK)
    c.send(TOCK)
    c.send(encodeStay({ network: 'unit', name: 'them' }))
    c.send(encodeChallenge(new Uint8Array(24)))
    expect(c.types()).toEqual([FrameType.STAY, FrameType.TOCK])
    r.state.revoked = true
    c.send(TICK)
    expect(c.types()).toEqual([FrameType.STAY, FrameType.TOCK])
  })

  it('A15, A21: data frames are handled as from the joined peer, after last-heard is set', async () => {
    const r = rig()
    const c = await r.joined()
    r.clock.advance(300)
    c.send(...call(7))
    expect(r.of('data')).toEqual([['data', 'them', FrameType.CALL, 'live']])
    expect(r.live.get('them')!.lastHeard).toBe(r.clock.now())
  })

  it('A16, A17: PART CROSS is ignored while our dial to the peer is joining; otherwise the link is retired and the peer down', async () => {
    const joining = rig({ dialState: 'joining' })
    const a = joining.connection()
    a.send(join())
    await joining.settle()
    a.send(encodePart(Part.CROSS, 'x'))
    expect(joining.of('crossed')).toEqual([])
    expect(joining.acceptor.linkOf('them')).toBeDefined()
    const r = rig({ dialState: 'active' })
    const c = await r.joined()
    const link = r.live.get('them')!
    c.send(encodePart(Part.CROSS, 'x'))
    expect(r.of('crossed')).toEqual([['crossed', 'them']])
    expect(link.state).toBe('retired')
    expect(r.acceptor.linkOf('them')).toBeUndefined()
  })

  for (const [reason, down] of [
    [Part.CLOSE, 'PART'],
    [Part.AUTH, 'AUTH'],
  ] as const) {
    it(`A18: PART ${reason} ends the link, the peer down ${down}, and frames after it in the message are not read`, async () => {
      const r = rig()
      const c = await r.joined()
      const link = r.live.get('them')!
      c.send(encodePart(reason, 'bye'), encodeCall(1, 'A.B'), encode(null))
      expect(r.of('lost')).toEqual([['lost', 'them', down]])
      expect(r.of('data')).toEqual([])
      expect(link.state).toBe('closed')
      expect(r.acceptor.counts()).toMatchObject({ unjoined: 1, inbound: 0 })
    })
  }

  it('A20: our dial won: PART CROSS on the inbound link, which is retired', async () => {
    const r = rig()
    const c = await r.joined()
    const link = r.live.get('them')!
    r.acceptor.retire(link)
    expect(c.parts()).toEqual([Part.CROSS])
    expect(link.state).toBe('retired')
  })

  it('A22, A23: another version is told VERSION (unjoined: at most once a joinInterval); another failure to decode is dropped and reported', async () => {
    const r = rig()
    const c = r.connection()
    const v2 = encode([2, FrameType.JOIN, 'unit', 'them'])
    c.send(v2)
    c.send(v2)
    expect(c.parts()).toEqual([Part.VERSION])
    c.send(join())
    await r.settle()
    c.send(encode([2, FrameType.TICK]))
    expect(c.parts()).toEqual([Part.VERSION, Part.VERSION])
    c.send(new Uint8Array([0x93, 0xc1, 0xc1]))
    expect(r.of('dropped').length).toBe(2)
    expect(c.parts()).toEqual([Part.VERSION, Part.VERSION])
    expect(r.acceptor.linkOf('them')).toBeDefined()
  })

  it('A24–A26, A28, A29: a retired link still carries data; TICK, PART and undecodable messages change nothing; it ends after 2 × joinInterval', async () => {
    const r = rig()
    const c = await r.joined()
    const link = r.live.get('them')!
    r.acceptor.retire(link)
    const before = c.received().length
    c.send(...call(3))
    c.send(TICK)
    c.send(encodePart(Part.CLOSE, 'x'))
    c.send(new Uint8Array([0x93, 0xc1, 0xc1]))
    expect(r.of('data')).toEqual([['data', 'them', FrameType.CALL, 'retired']])
    expect(c.received().length).toBe(before)
    expect(r.of('lost')).toEqual([])
    r.acceptor.expire(r.clock.now() + 2 * JOIN_INTERVAL - 1)
    expect(link.state).toBe('retired')
    r.acceptor.expire(r.clock.now() + 2 * JOIN_INTERVAL + 1)
    expect(link.state).toBe('closed')
    expect(r.acceptor.counts()).toMatchObject({ unjoined: 1 })
  })

  it('A27: a JOIN on a retired connection ends the retired link and is read as a first JOIN', async () => {
    const r = rig()
    const c = await r.joined()
    const link = r.live.get('them')!
    r.acceptor.retire(link)
    r.live.delete('them')
    c.send(join())
    await r.settle()
    expect(link.state).toBe('closed')
    expect(r.of('up')).toHaveLength(2)
    expect(r.acceptor.linkOf('them')).not.toBe(link)
  })

  it('A32, A34: not joined within joinTimeout, a connection is ignored, told TIMEOUT once, and read no more', async () => {
    const r = rig()
    const c = r.connection()
    r.acceptor.expire(r.clock.now() + JOIN_TIMEOUT + 1)
    expect(r.acceptor.counts()).toMatchObject({ ignored: 1 })
    c.send(join())
    c.send(join())
    await r.settle()
    expect(c.parts()).toEqual([Part.TIMEOUT])
    expect(r.of('up')).toEqual([])
  })

  it('A33: a message beyond every limit ends the link, down(PROTOCOL), and the connection is ignored', async () => {
    const r = rig()
    const c = await r.joined()
    c.send(...Array.from({ length: 1025 }, () => new Uint8Array(1)))
    expect(r.of('lost')).toEqual([['lost', 'them', 'PROTOCOL']])
    expect(r.of('dropped')).toEqual([['dropped', 'PROTOCOL']])
    expect(r.acceptor.counts()).toMatchObject({ ignored: 1, inbound: 0 })
    c.send(...call(1))
    expect(r.of('data')).toEqual([])
  })

  it('A35, A36: the disconnect notification forgets the connection and a joined peer is down(HEARTBEAT); a faked one is not believed', async () => {
    const r = rig()
    const c = await r.joined()
    r.acceptor.disconnected(c.id)
    expect(r.of('lost')).toEqual([['lost', 'them', 'HEARTBEAT']])
    expect(r.acceptor.counts().connections).toBe(0)
    // Its routing id speaks again: the peer sent the notification itself; it is ignored, counted again.
    c.send(join())
    expect(r.acceptor.counts()).toMatchObject({ connections: 1, ignored: 1 })
    r.acceptor.disconnected(c.id)
    expect(r.acceptor.counts().connections).toBe(1)
  })

  it('A37, A38: the connect notification makes a connection; one empty part from a known one is dropped', () => {
    const r = rig()
    const c = r.connection()
    expect(r.acceptor.counts()).toMatchObject({ connections: 1, unjoined: 1 })
    r.acceptor.connected(c.id)
    expect(r.acceptor.counts()).toMatchObject({ connections: 1 })
    expect(r.acceptor.dropped).toBe(1)
  })

  it('A39: CREDIT on a joined link grows its credit', async () => {
    const r = rig()
    const c = await r.joined()
    c.send(encodeCredit(3, 300))
    const credit = (r.live.get('them') as unknown as { credit: { messages: number; bytes: number } }).credit
    expect(credit).toEqual({ messages: 64 + 3, bytes: (1 << 20) + 300 })
  })

  it('A30: close() ends every link and forgets every connection', async () => {
    const r = rig()
    const c = await r.joined()
    const link = r.live.get('them')!
    r.acceptor.close()
    expect(link.state).toBe('closed')
    expect(r.acceptor.counts()).toEqual({ connections: 0, unjoined: 0, ignored: 0, inbound: 0 })
    expect(c.received().length).toBe(1)
  })
})
