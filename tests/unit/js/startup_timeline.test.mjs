/*
 * web/startup_timeline.js: a start's phases from marks taken by the page and its workers on one clock (ms since
 * 1970). The expected phases are worked out by hand from the marks: each runs from the mark before it (the first
 * from the navigation), so those on the path add up to the total, whatever order the marks arrive in.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const clock = {now: 0};
const performance = {timeOrigin: 1_000_000, now: () => clock.now};
const {StartupTimeline} = loadWebScripts(["startup_timeline.js"], {performance}).Pychat;
const at = (ms) => 1_000_000 + ms;  // a mark's time on the shared clock, `ms` after the navigation

test("phases run from mark to mark and add up to the total, in time order however they arrive", () => {
  const timeline = new StartupTimeline();
  timeline.mark("page scripts", at(250));
  timeline.marks([["Pyodide", at(1750)], ["worker start", at(300)]]);  // a worker's marks, late and unsorted
  timeline.alongside("IndexedDB read", at(400), at(520));
  clock.now = 2000;
  timeline.finish();
  assert.deepEqual(plain(timeline.report()), {
    total: 2, finished: true,
    phases: [{name: "page scripts", seconds: 0.25}, {name: "worker start", seconds: 0.05},
             {name: "Pyodide", seconds: 1.45}, {name: "ready", seconds: 0.25}],
    alongside: [{name: "IndexedDB read", seconds: 0.12}],
  });
});

test("a restart's timeline starts at the restart; nothing is recorded once it is finished", () => {
  const timeline = new StartupTimeline({origin: at(10_000)});
  timeline.mark("app start", at(10_100));
  clock.now = 10_600;
  timeline.finish("ready");
  timeline.mark("fit check", at(20_000));  // a model switched later: no start
  timeline.alongside("sha256 check", at(20_000), at(20_500));
  assert.deepEqual(plain(timeline.report()), {
    total: 0.6, finished: true,
    phases: [{name: "app start", seconds: 0.1}, {name: "ready", seconds: 0.5}], alongside: [],
  });
});

test("an unfinished timeline reports what it has so far", () => {
  const timeline = new StartupTimeline();
  assert.deepEqual(plain(timeline.report()), {total: 0, finished: false, phases: [], alongside: []});
});
