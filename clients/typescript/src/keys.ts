// Key lists checked by the compiler, for the `*_KEYS` constants beside the body interfaces.

/**
 * Lists every key of `T` exactly once, checked by the compiler: a key of `T` left out of the list
 * is a type error, and so is a key that `T` does not have.
 */
export function keysOf<T>() {
  return <const K extends readonly (keyof T)[]>(
    keys: K & (Exclude<keyof T, K[number]> extends never ? unknown : { missing: Exclude<keyof T, K[number]> }),
  ): K => keys;
}
