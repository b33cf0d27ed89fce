/*
 * wllama_bench.js: load a GGUF model in wllama and time greedy completions, for bench_browser.py.
 *
 *     await window.wllamaBench.load({modelURL, nThreads})          -> {seconds, threads}  (threads it runs)
 *     await window.wllamaBench.complete({prompt, maxTokens})       -> {text, firstTokenSeconds, timings}
 *
 * The prompt is already rendered with the model's chat template, so both engines see the same tokens.
 */
import {Wllama, LoggerWithoutDebug} from "/wllama/index.js";

let wllama = null;

async function load({modelURL, nThreads}) {
  const started = performance.now();
  wllama = new Wllama({default: "/wllama/wasm/wllama.wasm"}, {logger: LoggerWithoutDebug, suppressNativeLog: true});
  await wllama.loadModelFromUrl(new URL(modelURL, location.href).href,
                                {n_threads: nThreads, n_ctx: 1024, n_gpu_layers: 0, useCache: false});
  return {seconds: (performance.now() - started) / 1000, threads: wllama.getNumThreads()};
}

async function complete({prompt, maxTokens}) {
  const started = performance.now();
  let firstToken = null;
  let text = "";
  let timings = null;
  await wllama.createCompletion({
    prompt, max_tokens: maxTokens, temperature: 0, temp: 0, top_k: 1, penalty_repeat: 1.0, stream: true,
    onData: (chunk) => {
      const piece = chunk.choices && chunk.choices[0] ? chunk.choices[0].text : "";
      if (piece && firstToken === null) firstToken = (performance.now() - started) / 1000;
      text += piece || "";
      if (chunk.timings) timings = chunk.timings;
    },
  });
  return {text, firstTokenSeconds: firstToken, totalSeconds: (performance.now() - started) / 1000, timings};
}

window.wllamaBench = {load, complete};
window.wllamaBenchReady = true;
