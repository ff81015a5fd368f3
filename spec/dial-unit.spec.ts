/**
 * The dialling side (PROTOCOL.md 10.1) as a state machine, without sockets:
 * a manual clock, fake ports and a host that records. One test a row (or a
 * few rows that share an event), named by the row. The rows that are the
 * mesh's (D2, D21, D24, D25: which link serves the peer) and liveness's
 * (D11, D13) are decided outside the dialler; the real-socket suites cover
 * them (liveness.spec.ts, restarts.spec.ts).
 */
import { encode } from '@msgpack/msgpack'
import { describe, expect, it } from 'vitest'
import { manualClock } from './manual-clock.js'
import { Dialler, type DialHost, type DialPort } from '../lib/mesh/dial.js'
import { JoinPace } from '../lib/mesh/join-pace.js'
import { Link } from '../lib/mesh/link.js'
import type { DialEvents } from '../lib/mesh/sockets.js'
import { Codec } from '../lib/wire/codec.js'
import {
  FrameType,
  Part,
  TICK,
  TOCK,
  encodeChallenge,
  encodeCredit,
  encodeJoin,
  encodePart,
  encodeReply,
  encodeStay,
  type Frame,
} from '../lib/wire/frames.js'

const JOIN_INTERVAL = 200
const JOIN_TIMEOUT = 5000
const RECONNECT_MIN = 100
const RECONNECT_MAX = 1000
const NETWORK = 'unit'
const INCARNATION = new Uint8Array(16).fill(3)

const codec = new Codec()

/** A socket that records what is sent on it (decoded) and whether it was closed. */
class FakePort implements DialPort {
  connected = false
  readonly sent: Frame[][] = []
  closed: 'delivering' | 'at once' | undefined
  constructor(readonly events: DialEvents) {}
  send(parts: Uint8Array[]): Promise<'sent'> {
    this.sent.push(codec.decodeMessage(parts))
    return Promise.resolve('sent')
  }
  close(deliver?: boolean): void {
    this.closed = deliver === true ? 'delivering' : 'at once'
  }
  /** The types of the frames sent, one message each. */
  types(): FrameType[] {
    return this.sent.map((m) => m[0]!.type)
  }
  /** Deliver a message to the dialler, as the socket would. */
  receive(...parts: Uint8Array[]): void {
    this.events.message(parts.map((p) => Buffer.from(p)))
  }
}

type Event = [string, ...unknown[]]

/** A dialler of `peer` at `address` with a host that records, its sockets fake. */
function rig(options: { named?: boolean; served?: boolean; clock?: ReturnType<typeof manualClock>; pace?: JoinPace } = {}) {
  const clock = options.clock ?? manualClock()
  const ports: FakePort[] = []
  const events: Event[] = []
  const joins: { target: string | undefined; challenge: Uint8Array | undefined }[] = []
  const state = { served: options.served ?? false, openFails: false }
  const host: DialHost = {
    clock,
    timing: { joinInterval: JOIN_INTERVAL, reconnectMin: RECONNECT_MIN, reconnectMax: RECONNECT_MAX },
    pace: options.pace ?? new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT }),
    open(_address, _peer, portEvents) {
      if (state.openFails) throw new Error('EMFILE: too many open files')
      const port = new FakePort(portEvents)
      ports.push(port)
      return port
    },
    join(target, challenge) {
      joins.push({ target, challenge })
      return encodeJoin({ network: NETWORK, name: 'us', target, incarnation: INCARNATION })
    },
    checkStay(peer, address, stay) {
      if (peer !== undefined && stay.name !== peer) return { code: 'WRONG_NAME', message: `expected ${peer} at ${address}` }
      if (stay.network !== NETWORK) return { code: 'NETWORK_MISMATCH', message: 'not our network' }
      return undefined
    },
    named: (dialler) => void events.push(['named', dialler.peer]),
    makeLink: (peer, address, stay, write) =>
      new Link(
        peer,
        'outbound',
        stay,
        write,
        { window: { messages: 64, bytes: 1 << 20 }, backlog: 1 << 20, queue: 1000 },
        clock.now(),
        address,
      ),
    up: (_dialler, link) => void events.push(['up', link.peer]),
    lost: (link, reason) => void events.push(['lost', link.peer, reason]),
    served: () => state.served,
    refused: (_peer, error) => void events.push(['refused', error.code]),
    attempt: () => void events.push(['attempt']),
    backoff: (_peer, ms) => void events.push(['backoff', ms]),
    data: (link, frame) => void events.push(['data', frame.type, link.state]),
    dropped: (_peer, error) => void events.push(['dropped', error.code]),
    consumed: () => {},
    failed: (error) => {
      throw error
    },
  }
  const named = options.named ?? true
  const dialler = new Dialler(host, named ? 'peer' : undefined, 'tcp://10.0.0.9:7000')
  const port = (): FakePort => ports[ports.length - 1]!
  const of = (type: string): Event[] => events.filter((e) => e[0] === type)
  return {
    clock,
    dialler,
    ports,
    port,
    events,
    of,
    joins,
    state,
    /** The socket's connection completes its handshake. */
    connect(): void {
      port().connected = true
      port().events.connected()
    },
    /** Start, connect the socket, and have the JOIN answered with STAY: ACTIVE. */
    active(): FakePort {
      dialler.start(true)
      port().connected = true
      port().events.connected()
      port().receive(stay())
      expect(dialler.state).toBe('active')
      return port()
    },
  }
}

const stay = (name = 'peer', network = NETWORK): Uint8Array =>
  encodeStay({ network, name, incarnation: INCARNATION, maxPart: 1 << 20, window: { messages: 64, bytes: 1 << 20 } })
const part = (reason: string): Uint8Array => encodePart(reason, 'why')
const reply = (id: number): Uint8Array[] => [encodeReply(id), encode(null)]

describe('dialling side, PROTOCOL.md 10.1', () => {
  it('D1: opens a socket and queues a JOIN at once; if no socket can be made, start(first) throws and nothing remains', () => {
    const r = rig()
    r.dialler.start(true)
    expect(r.ports).toHaveLength(1)
    expect(r.port().types()).toEqual([FrameType.JOIN])
    expect(r.joins).toEqual([{ target: 'peer', challenge: undefined }])
    expect(r.dialler.state).toBe('joining')
    const broken = rig()
    broken.state.openFails = true
    expect(() => broken.dialler.start(true)).toThrow(/EMFILE/)
    expect(broken.ports).toHaveLength(0)
  })

  it('D3: the join timer re-sends JOIN only while connected, after joinInterval, then 2× and 4× it, then every 4×', () => {
    const r = rig()
    r.dialler.start(true)
    r.clock.advance(JOIN_INTERVAL * 3)
    expect(r.port().types()).toEqual([FrameType.JOIN])
    r.port().connected = true
    const joins = () =>
      r
        .port()
        .types()
        .filter((t) => t === FrameType.JOIN).length
    // The timer's next turn, at 4 J: a re-send; then 2 J later, 4 J later, and 4 J again.
    r.clock.advance(JOIN_INTERVAL)
    expect(joins()).toBe(2)
    r.clock.advance(2 * JOIN_INTERVAL - 1)
    expect(joins()).toBe(2)
    r.clock.advance(1)
    expect(joins()).toBe(3)
    r.clock.advance(4 * JOIN_INTERVAL - 1)
    expect(joins()).toBe(3)
    r.clock.advance(1)
    expect(joins()).toBe(4)
    r.clock.advance(4 * JOIN_INTERVAL)
    expect(joins()).toBe(5)
  })

  it('D3: a fresh JOIN (the connection dropped and came back) starts the re-sends over at joinInterval', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.clock.advance(JOIN_INTERVAL + 2 * JOIN_INTERVAL)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN, FrameType.JOIN])
    // D30: the drop notice; the JOIN queues for the next connection, and goes again joinInterval after it, not 4 J.
    r.port().events.dropped()
    expect(r.port().types()).toHaveLength(4)
    r.clock.advance(JOIN_INTERVAL)
    expect(r.port().types()).toHaveLength(5)
  })

  it('D3: while STAYs take this node longer than joinInterval, a dialler waits that long (mean + 4 deviations) before its first re-send', () => {
    const clock = manualClock()
    const pace = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    // One dial of this node's answered 400 ms after its JOIN was queued (a busy listener): 400 + 4 × 200 = 1,200 ms.
    const first = rig({ clock, pace })
    first.dialler.start(true)
    first.connect()
    clock.advance(400)
    first.port().receive(stay())
    expect(first.dialler.state).toBe('active')
    expect(pace.wait(0)).toBe(1200)
    // Another dial: no re-send at joinInterval, one at 1,200 ms, then 2× and 4× that.
    const second = rig({ clock, pace })
    second.dialler.start(true)
    second.connect()
    const joins = () =>
      second
        .port()
        .types()
        .filter((t) => t === FrameType.JOIN).length
    clock.advance(1199)
    expect(joins()).toBe(1)
    clock.advance(1)
    expect(joins()).toBe(2)
    clock.advance(2 * 1200)
    expect(joins()).toBe(3)
    clock.advance(4 * 1200)
    expect(joins()).toBe(4)
  })

  it('D3: the time STAYs take counts for at most joinTimeout / 4, so a slow listener still gets re-sends before its deadline', () => {
    const pace = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    const r = rig({ pace })
    r.dialler.start(true)
    r.connect()
    r.clock.advance(4000)
    r.port().receive(stay())
    const again = rig({ clock: r.clock, pace })
    again.dialler.start(true)
    again.connect()
    r.clock.advance(JOIN_TIMEOUT / 4 - 1)
    expect(again.port().types()).toEqual([FrameType.JOIN])
    r.clock.advance(1)
    expect(again.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
  })

  /** Quick STAYs (5 ms) until the first re-send is back at joinInterval; how many it took, at most 100. */
  function quickAnswersUntilBack(pace: JoinPace): number {
    let answers = 0
    while (pace.wait(0) > JOIN_INTERVAL && answers < 100) {
      pace.answered(5)
      answers++
    }
    return answers
  }

  it('D3: STAYs that are quick again bring the first re-send back to joinInterval; a STAY after re-sends times the fresh JOIN', () => {
    const pace = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    pace.answered(1000)
    expect(pace.wait(0)).toBe(JOIN_TIMEOUT / 4)
    const answers = quickAnswersUntilBack(pace)
    // The mean moves an eighth of the way each answer and the deviation a quarter: back within about thirty quick answers.
    expect(answers).toBeGreaterThan(3)
    expect(answers).toBeLessThan(40)
    expect(pace.wait(0)).toBe(JOIN_INTERVAL)
    expect(pace.wait(1)).toBe(2 * JOIN_INTERVAL)
    expect(pace.wait(5)).toBe(4 * JOIN_INTERVAL)
    // A dialler whose JOIN was re-sent (at 200 ms): its STAY at 300 ms is timed from the fresh JOIN, 300 + 4 × 150 ms.
    const fresh = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    const r = rig({ pace: fresh })
    r.dialler.start(true)
    r.connect()
    r.clock.advance(300)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    r.port().receive(stay())
    expect(fresh.wait(0)).toBe(900)
  })

  it('D3: a JOIN that waits for its connection is timed from when the connection comes up, not from when it was queued', () => {
    const pace = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    const r = rig({ pace })
    r.dialler.start(true)
    // Two seconds connecting (a listener not up yet, libzmq's reconnect back-off), then a STAY 100 ms after the handshake.
    r.clock.advance(2000)
    r.connect()
    r.clock.advance(100)
    r.port().receive(stay())
    expect(r.dialler.state).toBe('active')
    expect(pace.wait(0)).toBe(300)
    // The connection drops and comes back 3 s later: the JOIN queued at the drop is timed from the new connection.
    r.port().connected = false
    r.port().events.dropped()
    r.clock.advance(3000)
    r.connect()
    r.clock.advance(100)
    r.port().receive(stay())
    expect(r.dialler.state).toBe('active')
    expect(pace.wait(0)).toBeLessThan(400)
  })

  it('D3: a STAY however late counts as joinTimeout / 4, and a time that is not a number is not counted', () => {
    const pace = new JoinPace({ joinInterval: JOIN_INTERVAL, joinTimeout: JOIN_TIMEOUT })
    pace.answered(Number.NaN)
    pace.answered(Number.POSITIVE_INFINITY)
    pace.answered(-5)
    expect(pace.wait(0)).toBe(JOIN_INTERVAL)
    // Ten minutes (a listener holding its STAY back): no more than joinTimeout / 4, so quick STAYs bring it back as soon.
    pace.answered(600_000)
    expect(pace.wait(0)).toBe(JOIN_TIMEOUT / 4)
    const answers = quickAnswersUntilBack(pace)
    expect(answers).toBeLessThan(40)
  })

  it('D4: a STAY with our network and name makes the link, up; join timer stopped; last-heard and last-TICK are now', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.clock.advance(50)
    r.port().receive(stay())
    expect(r.dialler.state).toBe('active')
    expect(r.of('up')).toEqual([['up', 'peer']])
    const link = r.dialler.link!
    expect(link.lastHeard).toBe(r.clock.now())
    expect(link.lastTick).toBe(r.clock.now())
    expect(link.address).toBe('tcp://10.0.0.9:7000')
    r.clock.advance(JOIN_INTERVAL * 5)
    expect(r.port().types()).toEqual([FrameType.JOIN])
  })

  it.each([
    ['D5', 'WRONG_NAME', stay('someone-else')],
    ['D6', 'NETWORK_MISMATCH', stay('peer', 'elsewhere')],
  ])('%s, JOINING: PART and refused(%s), then JOIN again after the back-off on the same socket', (_, code, answer) => {
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.port().receive(answer)
    expect(r.port().sent[1]).toEqual([{ type: FrameType.PART, reason: code, message: expect.any(String) }])
    expect(r.of('refused')).toEqual([['refused', code]])
    expect(r.dialler.state).toBe('joining')
    expect(r.dialler.refused).toBe(true)
    // Nothing before the back-off ends, however often the join timer would have fired.
    const wait = r.of('backoff')[0]![1] as number
    expect(wait).toBeGreaterThanOrEqual(RECONNECT_MIN / 2)
    expect(wait).toBeLessThanOrEqual(RECONNECT_MIN)
    r.clock.advance(wait - 1)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.PART])
    r.clock.advance(1)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.PART, FrameType.JOIN])
    expect(r.ports).toHaveLength(1)
  })

  it('a refusal read before the monitor says the connection is up still says why when it does', () => {
    // The handshake's event comes from the socket's monitor, which races the data: it must not wipe the refusal out.
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.port().receive(stay('peer', 'elsewhere'))
    const why = r.dialler.lastFailure
    expect(why).toContain('not our network')
    r.port().events.connected()
    expect(r.dialler.lastFailure).toBe(why)
    // A failure only to connect is over once connected.
    const fresh = rig()
    fresh.dialler.start(true)
    fresh.port().events.unreachable('no connection')
    expect(fresh.dialler.lastFailure).toContain('no connection')
    fresh.port().events.connected()
    expect(fresh.dialler.lastFailure).toBeUndefined()
  })

  it.each([
    ['D5', 'WRONG_NAME', stay('someone-else')],
    ['D6', 'NETWORK_MISMATCH', stay('peer', 'elsewhere')],
  ])('%s, STANDBY: PART and refused(%s), nothing more', (_, code, answer) => {
    const r = rig({ served: true })
    r.dialler.start(true)
    r.dialler.standby()
    r.port().receive(answer)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.PART])
    expect(r.of('refused')).toEqual([['refused', code]])
    expect(r.dialler.state).toBe('standby')
  })

  it('D7: JOINING, PART CROSS: standby', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().receive(part(Part.CROSS))
    expect(r.dialler.state).toBe('standby')
    expect(r.of('lost')).toEqual([])
  })

  it('D8: JOINING, a refusal other than TIMEOUT: refused(reason), JOIN again after back-off on the same socket', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.port().receive(part(Part.OVERLOADED))
    expect(r.of('refused')).toEqual([['refused', 'OVERLOADED']])
    expect(r.dialler.state).toBe('joining')
    r.clock.advance(RECONNECT_MIN)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    expect(r.ports).toHaveLength(1)
  })

  it('D9: JOINING, PART NOT_JOINED: JOIN now on the same socket, cutting a back-off short', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.port().receive(part(Part.OVERLOADED))
    expect(r.port().types()).toEqual([FrameType.JOIN])
    r.port().receive(part(Part.NOT_JOINED))
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    expect(r.ports).toHaveLength(1)
  })

  it('D10: JOINING, PART CLOSE or an unknown reason: ignored', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().receive(part(Part.CLOSE))
    r.port().receive(part('SOMETHING_NEW'))
    expect(r.dialler.state).toBe('joining')
    expect(r.events.filter((e) => e[0] !== 'attempt')).toEqual([])
    expect(r.port().types()).toEqual([FrameType.JOIN])
  })

  it('D12: ACTIVE, PART CROSS: down(PART), standby', () => {
    const r = rig()
    r.active().receive(part(Part.CROSS))
    expect(r.of('lost')).toEqual([['lost', 'peer', 'PART']])
    expect(r.dialler.state).toBe('standby')
  })

  it('D14: PART TIMEOUT: refused(TIMEOUT); ACTIVE, down(PART); the socket is closed and a new one follows the back-off', () => {
    const joining = rig()
    joining.dialler.start(true)
    joining.port().receive(part(Part.TIMEOUT))
    expect(joining.of('refused')).toEqual([['refused', 'TIMEOUT']])
    expect(joining.port().closed).toBeDefined()
    expect(joining.dialler.state).toBe('backoff')
    const active = rig()
    active.active().receive(part(Part.TIMEOUT))
    expect(active.of('refused')).toEqual([['refused', 'TIMEOUT']])
    expect(active.of('lost')).toEqual([['lost', 'peer', 'PART']])
    expect(active.port().closed).toBeDefined()
    active.clock.advance(RECONNECT_MAX)
    expect(active.ports).toHaveLength(2)
    expect(active.port().types()).toEqual([FrameType.JOIN])
  })

  it.each([
    [Part.AUTH, 'AUTH'],
    [Part.NETWORK_MISMATCH, 'PART'],
  ])('D15: ACTIVE, PART %s: refused, down(%s), the socket closed', (reason, down) => {
    const r = rig()
    const port = r.active()
    port.receive(part(reason))
    expect(r.of('refused')).toEqual([['refused', reason]])
    expect(r.of('lost')).toEqual([['lost', 'peer', down]])
    expect(port.closed).toBeDefined()
    expect(r.dialler.state).toBe('backoff')
  })

  it('D16: ACTIVE, PART NOT_JOINED: down(PART), JOIN now on the same socket', () => {
    const r = rig()
    const port = r.active()
    port.receive(part(Part.NOT_JOINED))
    expect(r.of('lost')).toEqual([['lost', 'peer', 'PART']])
    expect(r.dialler.state).toBe('joining')
    expect(port.types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    expect(r.ports).toHaveLength(1)
  })

  it('D17: ACTIVE, PART CLOSE or an unknown reason: down(PART), the socket closed', () => {
    for (const reason of [Part.CLOSE, 'SOMETHING_NEW']) {
      const r = rig()
      const port = r.active()
      port.receive(part(reason))
      expect(r.of('lost')).toEqual([['lost', 'peer', 'PART']])
      expect(port.closed).toBeDefined()
      expect(r.dialler.state).toBe('backoff')
    }
  })

  it('D18: ACTIVE, STAY: ignored', () => {
    const r = rig()
    const port = r.active()
    const link = r.dialler.link
    port.receive(stay())
    expect(r.dialler.link).toBe(link)
    expect(r.of('up')).toHaveLength(1)
  })

  it('D19: STANDBY, PART of any reason: ignored', () => {
    const r = rig({ served: true })
    r.dialler.start(true)
    r.dialler.standby()
    for (const reason of [Part.CROSS, Part.AUTH, Part.TIMEOUT, Part.NOT_JOINED, Part.CLOSE]) r.port().receive(part(reason))
    expect(r.dialler.state).toBe('standby')
    expect(r.events.filter((e) => e[0] !== 'attempt')).toEqual([])
  })

  it('D20: STANDBY, a STAY that passes the checks: a link retired at once, PART CROSS on it, the standby timer restarted', () => {
    const r = rig({ served: true })
    r.dialler.start(true)
    r.dialler.standby()
    r.clock.advance(JOIN_INTERVAL - 10)
    r.port().receive(stay())
    expect(r.dialler.link?.state).toBe('retired')
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.PART])
    expect(r.port().sent[1]![0]).toMatchObject({ reason: Part.CROSS })
    expect(r.of('up')).toEqual([])
    // Restarted: stragglers get a whole joinInterval from now.
    r.clock.advance(JOIN_INTERVAL - 1)
    expect(r.port().closed).toBeUndefined()
    r.clock.advance(1)
    expect(r.port().closed).toBeDefined()
  })

  it('D22: STANDBY, the timer fires while the peer is served: the socket closes and no timer remains', () => {
    const r = rig({ served: true })
    r.dialler.start(true)
    r.dialler.standby()
    r.clock.advance(JOIN_INTERVAL)
    expect(r.port().closed).toBeDefined()
    expect(r.dialler.state).toBe('standby')
    expect(r.clock.pending()).toBe(0)
  })

  it('D23: STANDBY, the timer fires while no other link serves the peer: it starts over after a back-off', () => {
    const r = rig({ served: false })
    r.dialler.start(true)
    r.dialler.standby()
    r.clock.advance(JOIN_INTERVAL)
    expect(r.ports[0]!.closed).toBeDefined()
    expect(r.dialler.state).toBe('backoff')
    r.clock.advance(RECONNECT_MAX)
    expect(r.ports).toHaveLength(2)
    expect(r.dialler.state).toBe('joining')
  })

  it('D26, D27: TICK is answered TOCK in any state; TOCK and JOIN are ignored', () => {
    const r = rig()
    r.dialler.start(true)
    r.port().receive(TICK)
    r.port().receive(TOCK)
    r.port().receive(encodeJoin({ network: NETWORK, name: 'x' }))
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.TOCK])
    const port = r.active()
    port.receive(TICK)
    expect(port.types().at(-1)).toBe(FrameType.TOCK)
  })

  it("D28: data frames count on the socket's current link, live or retired; before any STAY they are ignored", () => {
    const r = rig({ served: true })
    r.dialler.start(true)
    r.port().receive(...reply(1))
    expect(r.of('data')).toEqual([])
    r.port().receive(stay())
    r.port().receive(...reply(2))
    expect(r.of('data')).toEqual([['data', FrameType.REPLY, 'live']])
    r.dialler.standby()
    r.port().receive(...reply(3))
    expect(r.of('data')).toEqual([
      ['data', FrameType.REPLY, 'live'],
      ['data', FrameType.REPLY, 'retired'],
    ])
  })

  it('D29: a CHALLENGE is answered with a JOIN at once while joining, and only after the back-off after a refusal', () => {
    const nonce = new Uint8Array(24).fill(9)
    const r = rig()
    r.dialler.start(true)
    r.port().connected = true
    r.port().receive(encodeChallenge(nonce))
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    expect(r.joins.at(-1)!.challenge).toEqual(nonce)
    r.port().receive(part(Part.OVERLOADED))
    const other = new Uint8Array(24).fill(4)
    r.port().receive(encodeChallenge(other))
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN])
    r.clock.advance(RECONNECT_MIN)
    expect(r.port().types()).toEqual([FrameType.JOIN, FrameType.JOIN, FrameType.JOIN])
    expect(r.joins.at(-1)!.challenge).toEqual(other)
  })

  it('D30: the connection drops: the link ends (ACTIVE: down(HEARTBEAT)), the nonce is forgotten, a JOIN queues for the next connection', () => {
    const r = rig()
    const port = r.active()
    port.receive(encodeChallenge(new Uint8Array(24).fill(1)))
    const link = r.dialler.link!
    port.events.dropped()
    expect(r.of('lost')).toEqual([['lost', 'peer', 'HEARTBEAT']])
    expect(link.state).toBe('closed')
    expect(r.dialler.state).toBe('joining')
    expect(port.types().at(-1)).toBe(FrameType.JOIN)
    expect(r.joins.at(-1)!.challenge).toBeUndefined()
    expect(r.ports).toHaveLength(1)
    // Backing off after a refusal, the JOIN waits for the back-off instead.
    const refused = rig()
    refused.dialler.start(true)
    refused.port().receive(part(Part.OVERLOADED))
    refused.port().events.dropped()
    expect(refused.port().types()).toEqual([FrameType.JOIN])
  })

  it('D31: a failed handshake reports AUTH or HANDSHAKE, closes the socket, and a new one follows the back-off', () => {
    for (const code of ['AUTH', 'HANDSHAKE'] as const) {
      const r = rig()
      r.dialler.start(true)
      r.port().events.failed({ code, why: 'no', address: 'tcp://10.0.0.9:7000' })
      expect(r.of('refused')).toEqual([['refused', code]])
      expect(r.ports[0]!.closed).toBeDefined()
      expect(r.dialler.lastRefusal).toBe(code)
      r.clock.advance(RECONNECT_MAX)
      expect(r.ports).toHaveLength(2)
    }
  })

  it('D32, D33: a message that decodes refreshes last-heard first; one that does not is dropped and nothing is sent', () => {
    const r = rig()
    const port = r.active()
    r.clock.advance(500)
    port.receive(TOCK)
    expect(r.dialler.link!.lastHeard).toBe(r.clock.now())
    const sent = port.sent.length
    port.receive(new Uint8Array([0xc1, 0xc1]))
    expect(r.of('dropped')).toEqual([['dropped', 'MALFORMED']])
    expect(port.sent.length).toBe(sent)
  })

  it('D34: the back-off ends: a new socket and a JOIN; if none can be made, refused(SOCKET) and back off again', () => {
    const r = rig()
    r.active().receive(part(Part.CLOSE))
    expect(r.dialler.state).toBe('backoff')
    r.state.openFails = true
    r.clock.advance(r.dialler.retryAt - r.clock.now())
    expect(r.of('refused')).toEqual([['refused', 'SOCKET']])
    expect(r.dialler.state).toBe('backoff')
    expect(r.ports).toHaveLength(1)
    r.state.openFails = false
    r.clock.advance(r.dialler.retryAt - r.clock.now())
    expect(r.ports).toHaveLength(2)
    expect(r.port().types()).toEqual([FrameType.JOIN])
  })

  it("D35: a CREDIT grows the credit of the socket's current link", () => {
    const r = rig()
    r.active().receive(encodeCredit(5, 500))
    const credit = (r.dialler.link as unknown as { credit: { messages: number; bytes: number } }).credit
    expect(credit).toEqual({ messages: 64 + 5, bytes: (1 << 20) + 500 })
  })

  for (const [parted, closed] of [
    [true, 'delivering'],
    [false, 'at once'],
  ] as const) {
    it(`D36, D37: stopped ${parted ? 'after a PART, its socket closes giving what is queued time to leave' : 'with no PART sent (a member that left, a dial that never came up), its socket closes at once'}, and nothing happens after`, () => {
      const r = rig()
      const port = r.active()
      r.dialler.stop(parted)
      expect(r.dialler.state).toBe('stopped')
      expect(port.closed).toBe(closed)
      expect(r.clock.pending()).toBe(0)
      port.receive(stay())
      port.events.dropped()
      expect(r.of('lost')).toEqual([])
    })
  }

  it('a dial by address alone: its JOIN names no target; the first STAY names it, and from then on it dials that name', () => {
    const r = rig({ named: false })
    r.dialler.start(true)
    expect(r.joins.at(-1)!.target).toBeUndefined()
    r.port().connected = true
    r.port().receive(stay('found'))
    expect(r.of('named')).toEqual([['named', 'found']])
    expect(r.dialler.peer).toBe('found')
    expect(r.of('up')).toEqual([['up', 'found']])
    r.port().events.dropped()
    expect(r.joins.at(-1)!.target).toBe('found')
  })

  it.each([Part.CROSS, Part.DUPLICATE])(
    'a dial by address alone answered PART %s: the node there is one of our peers already; ALREADY_CONNECTED, and it stops',
    (reason) => {
      const r = rig({ named: false })
      r.dialler.start(true)
      expect(r.dialler.peer).toBe('tcp://10.0.0.9:7000')
      expect(r.dialler.unnamed).toBe(true)
      r.port().receive(part(reason))
      expect(r.of('refused')).toEqual([['refused', 'ALREADY_CONNECTED']])
      expect(r.dialler.state).toBe('stopped')
      expect(r.dialler.lastFailure).toContain('one of our peers, linked to us already')
      // One of this release says who it is.
      const told = rig({ named: false })
      told.dialler.start(true)
      told.port().receive(encodePart(reason, 'x', 'found'))
      expect(told.dialler.lastFailure).toContain('"found", linked to us already')
    },
  )
})
