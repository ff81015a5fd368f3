#!/usr/bin/env node
// Make ZeroMQ CURVE keypairs (40-character Z85 strings) for bilateral, or
// print the public key of an existing secret key. Exit codes: 0 success,
// 2 failure (bad usage, refusing to overwrite, unreadable or invalid key file).
import { closeSync, fchmodSync, lstatSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { generateKeypair, isZ85Key, publicKeyOf } from '../dist/crypto.js'

const USAGE = `Usage: bilateral-keygen [--json] [--out FILE [--force]]
       bilateral-keygen [--json] --public FILE

Make a new CURVE keypair (Z85, 40 characters each), or show a secret key's public key.

  (no options)     print "public: <key>" and "secret: <key>"
  --json           print JSON instead: {"publicKey":"...","secretKey":"..."}
                   (with --out or --public: {"publicKey":"..."})
  --out FILE       write the secret key to FILE (mode 0600) and the public key
                   to FILE.pub (mode 0644); print only the public key
  --force          with --out, overwrite FILE and FILE.pub if they exist
  --public FILE    print the public key of the secret key stored in FILE
  -h, --help       show this help

Exit status: 0 on success, 2 on any failure.`

/** A failure the user should see as one line on stderr, exiting 2. */
class Failure extends Error {}

function firstLine(message) {
  return String(message).split('\n', 1)[0]
}

function describe(error) {
  return error?.code && error?.message ? firstLine(error.message) : firstLine(error)
}

/** Create `file` afresh with exactly `mode` (not subject to umask) holding `text`. */
function writeNew(file, text, mode, force) {
  if (force) rmSync(file, { force: true })
  let fd
  try {
    fd = openSync(file, 'wx', mode)
  } catch (error) {
    if (error?.code === 'EEXIST') throw new Failure(`${file} exists; use --force to overwrite`)
    throw new Failure(`cannot write ${file}: ${describe(error)}`)
  }
  try {
    fchmodSync(fd, mode)
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
}

function printPublic(publicKey, json) {
  console.log(json ? JSON.stringify({ publicKey }) : `public: ${publicKey}`)
}

async function main(argv) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        json: { type: 'boolean' },
        out: { type: 'string' },
        force: { type: 'boolean' },
        public: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (error) {
    throw new Failure(`${describe(error)} (see --help)`)
  }
  const { json = false, out, force = false, public: publicFile, help = false } = parsed.values

  if (help) {
    console.log(USAGE)
    return
  }
  if (publicFile !== undefined && out !== undefined) throw new Failure('--public and --out cannot be used together (see --help)')
  if (force && out === undefined) throw new Failure('--force only applies to --out (see --help)')
  if (out === '' || publicFile === '') throw new Failure('file name must not be empty (see --help)')

  if (publicFile !== undefined) {
    // FILE.pub holds a public key, which is a valid Z85 key too: its "public key" would be a wrong one, printed without complaint.
    if (publicFile.endsWith('.pub')) {
      throw new Failure(
        `${publicFile} is a public key file; give the secret key file (${publicFile.slice(0, -4)}), whose public key is ${publicFile}`,
      )
    }
    let text
    try {
      text = readFileSync(publicFile, 'utf8')
    } catch (error) {
      throw new Failure(`cannot read ${publicFile}: ${describe(error)}`)
    }
    const secretKey = text.trim()
    if (!isZ85Key(secretKey)) throw new Failure(`${publicFile} does not hold a 40-character Z85 secret key`)
    const publicKey = await publicKeyOf(secretKey)
    console.log(json ? JSON.stringify({ publicKey }) : publicKey)
    return
  }

  const { publicKey, secretKey } = await generateKeypair()
  if (out !== undefined) {
    const pubFile = `${out}.pub`
    if (!force) {
      // Check both before writing either, so a refusal leaves nothing behind.
      for (const file of [out, pubFile]) {
        if (lstatSync(file, { throwIfNoEntry: false }) !== undefined) throw new Failure(`${file} exists; use --force to overwrite`)
      }
    }
    writeNew(out, `${secretKey}\n`, 0o600, force)
    writeNew(pubFile, `${publicKey}\n`, 0o644, force)
    printPublic(publicKey, json)
    return
  }

  if (json) console.log(JSON.stringify({ publicKey, secretKey }))
  else console.log(`public: ${publicKey}\nsecret: ${secretKey}`)
}

try {
  await main(process.argv.slice(2))
} catch (error) {
  const reason = error instanceof Failure ? error.message : describe(error)
  process.stderr.write(`bilateral-keygen: ${reason}\n`)
  process.exitCode = 2
}
