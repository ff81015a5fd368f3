/**
 * Messages for the mistakes callers make, said where they are made: an
 * option name that does not exist (with the one probably meant), and a short
 * description of a value of the wrong kind.
 */

/** What `value` is, briefly, for a message: `300 (a number)`, `"b" (a string)`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return `an array of ${value.length}`
  switch (typeof value) {
    case 'string':
      return `${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)} (a string)`
    case 'number':
    case 'boolean':
    case 'bigint':
      return `${String(value)} (a ${typeof value})`
    case 'undefined':
      return 'undefined'
    case 'function':
      return 'a function'
    default:
      return 'an object'
  }
}

/**
 * The first key of `given` that is not in `known`, as a message naming
 * `where` and the likeliest meant key (from `aliases`, else the closest by
 * edit distance); undefined if every key is known. Runs over the object's
 * own enumerable keys only: an empty options object costs one empty loop.
 */
export function unknownOption(
  given: object,
  known: ReadonlySet<string>,
  where: string,
  aliases: Readonly<Record<string, string>> = {},
): string | undefined {
  for (const key in given) {
    if (known.has(key) || !Object.hasOwn(given, key)) continue
    const meant = Object.hasOwn(aliases, key) ? aliases[key] : closest(key, known, aliases)
    return `${JSON.stringify(key)} is not an option of ${where}${meant === undefined ? '' : `; did you mean ${meant}?`}`
  }
  return undefined
}

/** The known name nearest `key` (case aside), if it is near enough to be a typo; a typo of an alias (`timout`) means what the alias means. */
function closest(key: string, known: ReadonlySet<string>, aliases: Readonly<Record<string, string>>): string | undefined {
  let best: string | undefined
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1
  const lower = key.toLowerCase()
  const consider = (name: string, meant: string): void => {
    const d = distance(lower, name.toLowerCase())
    if (d < bestDistance) {
      best = meant
      bestDistance = d
    }
  }
  for (const name of known) consider(name, name)
  for (const [alias, meant] of Object.entries(aliases)) consider(alias, meant)
  return best
}

/** Levenshtein distance, with an adjacent swap counted as one edit. */
function distance(a: string, b: string): number {
  const rows: number[][] = []
  for (let i = 0; i <= a.length; i++) rows.push([i])
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1)
      rows[i]![j] = d
    }
  }
  return rows[a.length]![b.length]!
}
