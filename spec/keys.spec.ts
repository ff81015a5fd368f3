import { curveKeyPair, Dealer, Router } from 'zeromq'
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeypair, isZ85Key, publicKeyOf } from '../lib/crypto.js'
import { BilateralError } from '../lib/errors.js'
import { z85Decode } from '../lib/z85.js'

describe('CURVE keys', () => {
  it('generateKeypair gives two distinct 40-character Z85 keys of 32 bytes', async () => {
    const { publicKey, secretKey } = await generateKeypair()
    for (const key of [publicKey, secretKey]) {
      expect(key).toHaveLength(40)
      expect(isZ85Key(key)).toBe(true)
      expect(z85Decode(key)).toHaveLength(32)
    }
    expect(publicKey).not.toBe(secretKey)
    expect((await generateKeypair()).secretKey).not.toBe(secretKey)
  })

  it('publicKeyOf derives the public key from the secret key', async () => {
    for (let i = 0; i < 10; i++) {
      const { publicKey, secretKey } = await generateKeypair()
      expect(await publicKeyOf(secretKey)).toBe(publicKey)
    }
  })

  it('agrees with keypairs made by libzmq itself', async () => {
    const { publicKey, secretKey } = curveKeyPair()
    expect(isZ85Key(publicKey) && isZ85Key(secretKey)).toBe(true)
    expect(await publicKeyOf(secretKey)).toBe(publicKey)
  })

  it('publicKeyOf rejects a malformed secret key with INVALID_ARGUMENT', async () => {
    const { secretKey } = await generateKeypair()
    for (const bad of ['', 'HelloWorld', secretKey.slice(1), `${secretKey}0`, `${secretKey.slice(0, 39)} `, '#'.repeat(40), 42, null]) {
      const error = await publicKeyOf(bad as string).catch((e: unknown) => e)
      expect(error, String(bad)).toBeInstanceOf(BilateralError)
      expect((error as BilateralError).code).toBe('INVALID_ARGUMENT')
    }
  })

  it('isZ85Key accepts only 40-character Z85 strings', () => {
    expect(isZ85Key('0'.repeat(40))).toBe(true)
    expect(isZ85Key('0'.repeat(35))).toBe(false)
    expect(isZ85Key('0'.repeat(45))).toBe(false)
    expect(isZ85Key(`${'0'.repeat(39)}~`)).toBe(false)
    expect(isZ85Key('#'.repeat(40))).toBe(false)
    expect(isZ85Key(undefined)).toBe(false)
    expect(isZ85Key(new Uint8Array(32))).toBe(false)
  })
})

describe('generated keys as ZeroMQ CURVE keys', () => {
  const sockets: (Router | Dealer)[] = []
  afterEach(() => {
    for (const socket of sockets.splice(0)) socket.close()
  })

  async function curveServer(secretKey: string): Promise<{ router: Router; endpoint: string }> {
    const router = new Router({ curveServer: true, curveSecretKey: secretKey, linger: 0 })
    sockets.push(router)
    await router.bind('tcp://127.0.0.1:*')
    return { router, endpoint: router.lastEndpoint! }
  }

  function curveClient(serverKey: string, client: { publicKey: string; secretKey: string }, endpoint: string): Dealer {
    const dealer = new Dealer({ curveServerKey: serverKey, curvePublicKey: client.publicKey, curveSecretKey: client.secretKey, linger: 0 })
    sockets.push(dealer)
    dealer.connect(endpoint)
    return dealer
  }

  it('a Dealer and a Router exchange a message both ways over CURVE', async () => {
    const server = await generateKeypair()
    const client = await generateKeypair()
    const { router, endpoint } = await curveServer(server.secretKey)
    const dealer = curveClient(server.publicKey, client, endpoint)
    expect(router.securityMechanism).toBe('curve')
    expect(dealer.securityMechanism).toBe('curve')

    await dealer.send('hello')
    const [routingId, request] = await router.receive()
    expect(request!.toString()).toBe('hello')
    await router.send([routingId!, 'world'])
    const [reply] = await dealer.receive()
    expect(reply!.toString()).toBe('world')
  })

  it('a client holding the wrong server key never gets through', async () => {
    const server = await generateKeypair()
    const impostor = await generateKeypair()
    const client = await generateKeypair()
    const { router, endpoint } = await curveServer(server.secretKey)
    const dealer = curveClient(impostor.publicKey, client, endpoint)
    // Synchronise on the handshake failing (the server cannot prove the key we expect), not on time.
    const failed = new Promise<string>((resolve) => {
      for (const type of ['handshake:error:protocol', 'handshake:error:auth', 'handshake:error:other'] as const) {
        router.events.on(type, () => resolve(type))
      }
    })
    let delivered = false
    void router.receive().then(
      () => (delivered = true),
      () => undefined,
    )
    void dealer.send('hello').catch(() => undefined)
    await failed
    expect(delivered).toBe(false)
  })
})
