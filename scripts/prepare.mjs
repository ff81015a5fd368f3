// npm's `prepare` step: builds dist/ wherever npm prepares this package from
// source, which is `npm ci` or `npm install` in a clone, `npm pack`,
// installing from a git URL, and `npm i <path to a clone>` (npm runs a linked
// folder's prepare in that folder). A fresh clone has no node_modules: the
// compiler and the packages the build needs are installed first, from the
// lockfile, into the clone itself, where the package will resolve them.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const needed = ['typescript', 'zeromq', '@msgpack/msgpack', 'libsodium-wrappers', '@types/node']
const missing = needed.filter((name) => !existsSync(join(root, 'node_modules', name, 'package.json')))

if (missing.length > 0) {
  process.stderr.write(`bilateral: installing ${missing.join(', ')} into ${root} to build it\n`)
  // --ignore-scripts: no prepare again from inside this one; zeromq ships prebuilt binaries. --include=dev and the
  // environment without the outer command's global, omit and production settings (npm i -g, --omit=dev,
  // NODE_ENV=production): the clone needs its compiler whatever the install it is part of.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !/^npm_config_(global|location|omit|production|only|include)$/i.test(key)),
  )
  execFileSync('npm', ['ci', '--ignore-scripts', '--include=dev', '--no-audit', '--no-fund'], {
    cwd: root,
    env: { ...env, NODE_ENV: 'development' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
}
execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { cwd: root, stdio: 'inherit' })
