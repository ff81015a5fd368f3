/**
 * Z85, the printable encoding ZeroMQ uses for CURVE keys (ZeroMQ RFC 32):
 * every 4 bytes, read as a big-endian 32-bit number, become 5 characters of
 * base 85. A 32-byte key is therefore 40 characters.
 */

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#'

/** Character code → digit value, or -1 for a character outside the alphabet. */
const DIGITS: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1)
  for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i
  return table
})()

const MAX_UINT32 = 0xffff_ffff

/** Encode `bytes` (whose length must be a multiple of 4) as Z85 text. */
export function z85Encode(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('z85Encode: expected a Uint8Array')
  if (bytes.length % 4 !== 0) throw new TypeError(`z85Encode: length must be a multiple of 4, got ${bytes.length}`)
  let text = ''
  for (let i = 0; i < bytes.length; i += 4) {
    // Big-endian 32-bit word; the top byte is multiplied, not shifted, so the value stays unsigned.
    let value = bytes[i]! * 0x100_0000 + ((bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!)
    const chunk = new Array<string>(5)
    for (let j = 4; j >= 0; j--) {
      chunk[j] = ALPHABET[value % 85]!
      value = Math.floor(value / 85)
    }
    text += chunk.join('')
  }
  return text
}

/** Decode Z85 `text` (whose length must be a multiple of 5) into bytes. */
export function z85Decode(text: string): Uint8Array {
  if (typeof text !== 'string') throw new TypeError('z85Decode: expected a string')
  if (text.length % 5 !== 0) throw new TypeError(`z85Decode: length must be a multiple of 5, got ${text.length}`)
  const bytes = new Uint8Array((text.length / 5) * 4)
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let value = 0
    for (let j = 0; j < 5; j++) {
      const code = text.charCodeAt(i + j)
      const digit = code < 128 ? DIGITS[code]! : -1
      if (digit < 0) throw new TypeError(`z85Decode: invalid character ${JSON.stringify(text[i + j])} at position ${i + j}`)
      value = value * 85 + digit
    }
    if (value > MAX_UINT32)
      throw new TypeError(`z85Decode: group at position ${i} (${JSON.stringify(text.slice(i, i + 5))}) exceeds 32 bits`)
    bytes[o] = value >>> 24
    bytes[o + 1] = (value >>> 16) & 0xff
    bytes[o + 2] = (value >>> 8) & 0xff
    bytes[o + 3] = value & 0xff
  }
  return bytes
}
