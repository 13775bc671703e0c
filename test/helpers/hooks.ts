// uvu swallows an error thrown by a `before` hook (its runner returns from a
// finally block): the suite then reports "0 / N" with no reason at all, e.g.
// when the lab cannot come up or a port is taken. Imported for its effect,
// this makes uvu's `test.before` print the error before uvu drops it, so a
// suite that cannot start fails saying why.
import { test } from 'uvu';

type Hook = Parameters<typeof test.before>[0];

const register = test.before;

function loud(fn: Hook): Hook {
  return async (ctx) => {
    try {
      await fn(ctx);
    } catch (e) {
      const text = e instanceof Error ? (e.stack ?? e.message) : String(e);
      process.stdout.write(`\n  BEFORE HOOK FAILED (no test of this suite ran): ${text.split('\n').join('\n    ')}\n`);
      throw e;
    }
  };
}

test.before = Object.assign((fn: Hook) => register(loud(fn)), { each: register.each });
