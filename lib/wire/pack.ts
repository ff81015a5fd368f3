/**
 * Packing frames into the parts of one message (PROTOCOL.md section 3):
 * frames share a part, each body right after its envelope, so a batch pays
 * ZeroMQ's per-part costs once.
 */

/**
 * A body up to this size travels in its envelope's part: copying it there
 * costs less than a part of its own (which zeromq.js either copies anyway,
 * up to 128 bytes, or pins and releases from another thread). A larger body
 * gets its own part and is never copied.
 */
export const INLINE_BODY = 16 * 1024

/**
 * The parts of one message carrying `frames` (each an envelope and, for
 * CALL, CAST and REPLY, a body), in order. Frames share a part, each body
 * right after its envelope, while the part stays within `limit` bytes; an
 * envelope whose body cannot join it (empty, over INLINE_BODY, or over
 * `limit`) ends its part, and the body follows as a part of its own.
 */
export function packFrames(frames: readonly (readonly Uint8Array[])[], limit: number): Uint8Array[] {
  const parts: Uint8Array[] = []
  let run: Uint8Array[] = []
  let bytes = 0
  const close = (): void => {
    if (run.length === 1) parts.push(run[0]!)
    else if (run.length > 1) parts.push(Buffer.concat(run, bytes))
    run = []
    bytes = 0
  }
  for (let i = 0; i < frames.length; i++) {
    const envelope = frames[i]![0]!
    const body = frames[i]![1]
    const inline = body !== undefined && body.length > 0 && body.length <= INLINE_BODY && envelope.length + body.length <= limit
    if (bytes + envelope.length + (inline ? body.length : 0) > limit) close()
    run.push(envelope)
    bytes += envelope.length
    if (inline) {
      run.push(body)
      bytes += body.length
    } else if (body !== undefined) {
      close()
      parts.push(body)
    }
  }
  close()
  return parts
}
