/*
 * app.js: the page's start-up and its status line. It reads manifest.json, opens the model cache, and starts
 * the three controllers: models.js (the model in use and the Python workers that hold it), chat.js (the
 * conversation and the answer being written) and train_panel.js (training, in a worker of its own, which
 * hands each model it makes to the models). New builds of the app are offered by app_update.js.
 * The page never waits on Python synchronously: everything Python does happens in worker.js.
 *
 * Start-up phases shown in #status[data-phase]: downloading, verifying, starting, loading, ready
 * (then generating / stopping during an answer, error when nothing works).
 *
 * self.pychat: a read-only view for the browser console and the end-to-end tests (manifest, store, python,
 * model, ready, startup (where the start's seconds went: startup_timeline.js), generating, turn, conversations,
 * conversation, chat).
 */
(function (Pychat) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const {alertBox} = Pychat.PageUI;
  const status = {phase: "starting", text: ""};
  let manifest = null;

  /* The status line, with Python's start-up progress until a model is ready; no arguments: shown again. */
  function setPhase(phase = status.phase, text = status.text) {
    Object.assign(status, {phase, text});
    const python = models.ready || !models.pythonStatus ? "" : ` (Python: ${models.pythonStatus})`;
    $("status").dataset.phase = phase;
    $("status").textContent = text + python;
    const idle = models.idle();
    $("send").disabled = !idle;
    $("stop").disabled = !chat.generating;
    $("model-url-add").disabled = !idle;
    $("model-file").disabled = !idle;
  }

  const models = new Pychat.ModelController({setPhase, alertBox, answers: {
    busy: () => chat.generating, done: () => chat.turn, loaded: () => chat.showStoredBudget()}});
  const chat = new Pychat.ChatController({models, setPhase, alertBox});

  self.pychat = Object.freeze({
    get manifest() { return manifest; },
    get store() { return models.store; },
    get python() { return models.python; },
    get model() { return models.model; },
    get ready() { return models.ready; },
    get startup() { return models.timeline.report(); },
    get generating() { return chat.generating; },
    get turn() { return chat.turn; },
    get conversations() { return chat.conversations; },
    get conversation() { return chat.conversation; },
    chat,
  });

  async function start() {
    models.timeline.mark("page scripts");
    new Pychat.SettingsDialog($("settings-dialog"), $("settings-open")).wire();
    const updates = new Pychat.AppUpdates({chat, models, setPhase});
    Pychat.PageUI.foldPanelsOnNarrowScreens();
    Pychat.PageUI.registerServiceWorker().then((registration) => registration && updates.watch(registration));
    let store;
    try {
      const response = await fetch("manifest.json");
      if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}`);
      manifest = await response.json();
      store = await Pychat.ModelStore.openOrKeepInMemory();
    } catch (error) {
      setPhase("error", "The app could not start");
      alertBox("error", `The app could not start: ${error.message}`);
      return;
    }
    await chat.restore(manifest);
    chat.wire();
    new Pychat.TrainPanel({boot: manifest.boot, defaults: manifest.finetune_defaults,
                           onModel: (name, bytes) => models.addTrainedModel(name, bytes),
                           onAdapter: (name, bytes, base) => models.adapters.addTrained(name, bytes, base),
                           base: {current: () => models.model, read: (spec) => models.store.readVerified(spec.id)}}).wire();
    await models.start(manifest, store);
  }

  start();
})(self.Pychat = self.Pychat || {});
