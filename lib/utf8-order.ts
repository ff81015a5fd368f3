/**
 * Order two strings as their UTF-8 bytes compare (`Buffer.compare` of
 * `Buffer.from` each), without making the buffers: names are ordered so on
 * the wire (who dials whom, a table's hash), and these comparisons run for
 * every member at every pass over a table. Below U+D800, code units, code
 * points and UTF-8 bytes all sort alike; a difference at or above it (a
 * surrogate, or what sorts after one) is settled by the bytes themselves.
 */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    if (x < 0xd800 && y < 0xd800) return x < y ? -1 : 1
    return Buffer.compare(Buffer.from(a), Buffer.from(b))
  }
  // One is the other's start in code units, and so in bytes (a lone high surrogate at its end is EF BF BD, below any lead byte of a pair).
  return a.length < b.length ? -1 : 1
}
