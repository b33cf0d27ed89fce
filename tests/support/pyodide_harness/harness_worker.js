/* Test worker: boots Python through the product's web/pyodide_runtime.js, loads browser_checks.py and
 * runs its checks on request. Messages: {id, type: "boot", indexURL, wheelURLs, checksURL, fixturesURL}
 * and {id, type: "run", name, args}; each is answered with {id, result} or {id, error}. */
"use strict";
importScripts("pyodide_runtime.js");

let py = null;

async function boot({indexURL, wheelURLs, checksURL, fixturesURL}) {
  py = await self.Pychat.bootPython({indexURL, wheelURLs, onStatus: (status) => postMessage({status})});
  const checksSource = await (await fetch(checksURL)).text();
  py.set("_checks_source", checksSource);
  py.runPython(`
import sys, types
browser_checks = types.ModuleType("browser_checks")
sys.modules["browser_checks"] = browser_checks
exec(compile(_checks_source, "browser_checks.py", "exec"), browser_checks.__dict__)
del _checks_source
`);
  py.runPython(`browser_checks.FIXTURES_URL = ${JSON.stringify(fixturesURL)}`);
  return py.versions;
}

async function run({name, args}) {
  py.set("_check_name", name);
  py.set("_check_args", JSON.stringify(args));
  // JSON text, parsed by the test in Python: JavaScript numbers would round 64-bit integers.
  return await py.runPythonAsync("await browser_checks.run_check(_check_name, _check_args)");
}

onmessage = async ({data}) => {
  try {
    const result = data.type === "boot" ? await boot(data) : await run(data);
    postMessage({id: data.id, result});
  } catch (error) {
    postMessage({id: data.id, error: String((error && error.stack) || error)});
  }
};
