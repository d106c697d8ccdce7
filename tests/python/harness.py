"""The runner shared by the Python test files: every `test_*` function of a module, in order
(a coroutine under a 60 s limit), one line each ("ok   NAME" / "FAIL NAME: ERROR (line N: the
failing line of that file)"), then "N passed, N failed". Returns the number failed."""

import asyncio
import traceback


async def run(module_globals, filename):
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_")]
    passed = failed = 0
    for name, f in tests:
        try:
            r = f()
            if asyncio.iscoroutine(r):
                await asyncio.wait_for(r, 60)
            print(f"ok   {name}", flush=True)
            passed += 1
        except Exception as e:  # noqa: BLE001 - each test reports its own failure
            # Where in the test file it failed: an assert's own line says what was checked.
            here = [t for t in traceback.extract_tb(e.__traceback__) if t.filename == filename]
            at = f" (line {here[-1].lineno}: {here[-1].line})" if here else ""
            print(f"FAIL {name}: {type(e).__name__}: {e}{at}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return failed
