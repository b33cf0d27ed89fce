/*
 * tensor_parallel.js: the workers of one model add up their partial products through a SharedArrayBuffer
 * (pychat_wasm/model/tensor_parallel.py says what each worker computes). Classic script, one namespace:
 *
 *     Pychat.TensorParallel.sharedBytes(workers)      -> the SharedArrayBuffer size the page allocates
 *     const c = Pychat.TensorParallel.collective({shared, rank, workers, heap: () => HEAPF32})   (in each worker)
 *     c.sum(address, length)                          float32 array at `address` of this worker's wasm heap
 *                                                     becomes the sum over the workers, in rank order
 *     c.gather(address, length, outAddress, total, start)   every worker's slice into out[total]
 *     c.fromFirst(value)                              rank 0's value, in every worker (e.g. "stop now")
 *     c.abort()                                       make every waiting worker throw: a worker failed
 *     Pychat.TensorParallel.abort(shared)             the same, from the page (a worker died)
 *     Pychat.TensorParallel.ABORT_MESSAGE             what the waiting workers throw then
 *     Pychat.TensorParallel.reset(shared)             after all workers failed alike: go on
 *
 * Python calls sum and gather with the addresses of its numpy arrays (worker_api.SharedMemoryCollective);
 * every worker makes the same calls in the same order. Each call is one barrier: the workers write their part
 * into their own slot, meet, and read all slots. Slots alternate between two sets, so a worker that runs ahead
 * into the next call cannot overwrite a slot somebody still reads (it would first have to pass the next
 * barrier, which needs everyone). The barrier spins first, for up to about a millisecond, then sleeps in
 * Atomics.wait, checking the abort flag. A token makes ~60 calls; a worker that went to sleep after 20000 spins
 * (one in six calls) took 11.7 tok/s where spinning 2^19 times (almost never sleeping) took 13.6.
 *
 * Layout: Int32 control words, then 2 sets of (workers slots + 1 gather window) of SLOT_FLOATS floats.
 */
(function (Pychat) {
  "use strict";

  const CONTROL_WORDS = 16;
  const ARRIVED = 0, GENERATION = 1, ABORTED = 2;
  const SLOT_FLOATS = 1 << 18;  // 1 MiB: a prefill chunk of 256 tokens x 1024 dims; longer arrays go in pieces
  const SPINS = 1 << 19;
  const WAIT_MS = 50;
  const ABORT_MESSAGE = "another worker of this model failed";

  const sharedBytes = (workers) => 4 * (CONTROL_WORDS + 2 * (workers + 1) * SLOT_FLOATS);

  function abort(shared) {
    const control = new Int32Array(shared, 0, CONTROL_WORDS);
    Atomics.store(control, ABORTED, 1);
    Atomics.notify(control, GENERATION);
  }

  /* After every worker answered the same failure (each aborted, none still waits): ready for the next call. */
  function reset(shared) {
    const control = new Int32Array(shared, 0, CONTROL_WORDS);
    Atomics.store(control, ARRIVED, 0);
    Atomics.store(control, ABORTED, 0);
  }

  function collective({shared, rank, workers, heap}) {
    const control = new Int32Array(shared, 0, CONTROL_WORDS);
    const floats = new Float32Array(shared, 4 * CONTROL_WORDS, 2 * (workers + 1) * SLOT_FLOATS);
    let calls = 0;

    function barrier() {
      const generation = Atomics.load(control, GENERATION);
      if (Atomics.add(control, ARRIVED, 1) === workers - 1) {  // the last to arrive lets everyone go
        Atomics.store(control, ARRIVED, 0);
        Atomics.add(control, GENERATION, 1);
        Atomics.notify(control, GENERATION);
        return;
      }
      for (let spin = 0; Atomics.load(control, GENERATION) === generation; spin++) {
        if (spin >= SPINS) {
          if (Atomics.load(control, ABORTED)) throw new Error(ABORT_MESSAGE);
          Atomics.wait(control, GENERATION, generation, WAIT_MS);
        }
      }
    }

    /* The slot set of the next call: slot r of worker r at base + r * SLOT_FLOATS, the window after them. */
    const nextBase = () => ((calls++) % 2) * (workers + 1) * SLOT_FLOATS;

    function sum(address, length) {
      for (let done = 0; done < length; done += SLOT_FLOATS) {
        const n = Math.min(SLOT_FLOATS, length - done);
        const base = nextBase();
        const first = address / 4 + done;
        floats.set(heap().subarray(first, first + n), base + rank * SLOT_FLOATS);
        barrier();
        const out = heap().subarray(first, first + n);
        out.set(floats.subarray(base, base + n));
        for (let r = 1; r < workers; r++) {
          const slot = base + r * SLOT_FLOATS;
          for (let i = 0; i < n; i++) out[i] += floats[slot + i];  // stored as float32 after each worker
        }
      }
    }

    function gather(address, length, outAddress, total, start) {
      for (let window = 0; window < total; window += SLOT_FLOATS) {
        const end = Math.min(window + SLOT_FLOATS, total);
        const base = nextBase() + workers * SLOT_FLOATS;
        const from = Math.max(start, window), to = Math.min(start + length, end);  // this worker's part here
        if (from < to) floats.set(heap().subarray(address / 4 + from - start, address / 4 + to - start), base + from - window);
        barrier();
        heap().set(floats.subarray(base, base + end - window), outAddress / 4 + window);
      }
    }

    function fromFirst(value) {
      const base = nextBase();
      if (rank === 0) floats[base] = value;
      barrier();
      return floats[base];
    }

    return {rank, workers, sum, gather, fromFirst, abort: () => abort(shared)};
  }

  Object.assign(Pychat, {TensorParallel: {sharedBytes, collective, abort, reset, ABORT_MESSAGE}});
})(self.Pychat = self.Pychat || {});
