// The execution page's live log: replays the stored output and follows the run over a websocket
// (/ws/executions/<id>/log), reconnecting with backoff from the last piece it has; where the
// socket cannot open (a proxy that blocks upgrades), it polls /executions/<id>/log/events.
// Text is only ever set with textContent: a job's output is data, never markup.
(function () {
  "use strict";

  var FINAL = ["success", "failed", "timed_out", "lost", "cancelled", "skipped", "missed"];
  var POLL_MS = 1000;
  var MAX_BACKOFF_MS = 10000;
  // sockets that failed to open in a row before the page falls back to polling
  var OPEN_FAILURES_BEFORE_POLLING = 2;

  // --- ANSI colours (SGR): 30-37 and 90-97 foregrounds, bold, reset ----------------------------
  function AnsiState() { this.fg = null; this.bold = false; }
  AnsiState.prototype.apply = function (params) {
    var codes = params === "" ? [0] : params.split(";").map(function (p) { return p === "" ? 0 : parseInt(p, 10); });
    for (var i = 0; i < codes.length; i++) {
      var code = codes[i];
      if (code === 0) { this.fg = null; this.bold = false; }
      else if (code === 1) { this.bold = true; }
      else if (code === 22) { this.bold = false; }
      else if (code === 39) { this.fg = null; }
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) { this.fg = code; }
      else if (code === 38 || code === 48) { break; }  // 256/true colour: not rendered, not misread
    }
  };
  AnsiState.prototype.classes = function () {
    var names = [];
    if (this.fg !== null) { names.push("ansi-" + this.fg); }
    if (this.bold) { names.push("ansi-bold"); }
    return names;
  };

  // Splits text into [text, classes] runs; an escape cut at the end of a piece waits for the next.
  function AnsiParser() { this.state = new AnsiState(); this.carry = ""; }
  AnsiParser.prototype.feed = function (text) {
    text = this.carry + text;
    this.carry = "";
    var runs = [];
    var pattern = /\x1b\[([0-9;]*)([A-Za-z])/g;
    var last = 0;
    var match;
    while ((match = pattern.exec(text)) !== null) {
      if (match.index > last) { runs.push([text.slice(last, match.index), this.state.classes()]); }
      if (match[2] === "m") { this.state.apply(match[1]); }  // other sequences (cursor moves) are dropped
      last = pattern.lastIndex;
    }
    var rest = text.slice(last);
    var open = rest.lastIndexOf("\x1b");
    if (open !== -1 && /^\x1b(\[[0-9;]*)?$/.test(rest.slice(open))) {
      this.carry = rest.slice(open);
      rest = rest.slice(0, open);
    }
    if (rest) { runs.push([rest, this.state.classes()]); }
    return runs;
  };

  // --- the viewer -------------------------------------------------------------------------------
  function LiveLog(section) {
    this.section = section;
    this.pre = section.querySelector("#log");
    this.stateLabel = section.querySelector("#log-state");
    this.followButton = section.querySelector("#log-follow");
    this.socketPath = section.getAttribute("data-socket");
    this.pollPath = section.getAttribute("data-poll");
    this.parsers = {};
    this.lastSeq = -1;  // the worker numbers a run's first piece 0
    this.following = true;
    this.finished = false;
    this.sawActive = false;
    this.backoff = 500;
    this.openFailures = 0;
    this.socket = null;
    var self = this;
    this.followButton.addEventListener("click", function () { self.setFollowing(!self.following); });
  }

  LiveLog.prototype.setState = function (state) {
    this.stateLabel.textContent = state;
    this.stateLabel.className = "log-state " + state;
    this.section.setAttribute("data-state", state);
  };

  LiveLog.prototype.setFollowing = function (on) {
    this.following = on;
    this.followButton.setAttribute("aria-pressed", on ? "true" : "false");
    this.followButton.textContent = on ? "Pause scrolling" : "Follow";
    if (on) { this.pre.scrollTop = this.pre.scrollHeight; }
  };

  LiveLog.prototype.append = function (event) {
    if (event.seq <= this.lastSeq) { return; }  // already shown (a replay after a reconnect)
    this.lastSeq = event.seq;
    var stream = event.stream || "stdout";
    var parser = this.parsers[stream] || (this.parsers[stream] = new AnsiParser());
    var fragment = document.createDocumentFragment();
    parser.feed(event.data).forEach(function (run) {
      var span = document.createElement("span");
      var classes = run[1].slice();
      if (stream !== "stdout") { classes.push(stream); }  // "stderr", or "system" for Jobplane's own lines
      if (classes.length) { span.className = classes.join(" "); }
      span.textContent = run[0];
      fragment.appendChild(span);
    });
    this.pre.appendChild(fragment);
    if (this.following) { this.pre.scrollTop = this.pre.scrollHeight; }
  };

  LiveLog.prototype.status = function (status) {
    var badge = document.getElementById("run-status");
    if (badge) {
      badge.textContent = status;
      badge.className = "badge s-" + status;
    }
    if (FINAL.indexOf(status) === -1) { this.sawActive = true; return; }
    if (this.finished) { return; }
    this.finished = true;
    this.setState("finished");
    // the run ended while watched: fetch the facts again (completed time, duration, exit code)
    if (this.sawActive && window.htmx) { window.htmx.trigger(document.body, "run-ended"); }
  };

  LiveLog.prototype.handle = function (event) {
    if (event.type === "log") { this.append(event); }
    else if (event.type === "status") { this.status(event.status); }
  };

  LiveLog.prototype.socketUrl = function () {
    var url = new URL(this.socketPath, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    if (this.lastSeq >= 0) { url.searchParams.set("after_seq", String(this.lastSeq)); }
    return url.toString();
  };

  LiveLog.prototype.connect = function () {
    var self = this;
    var opened = false;
    var socket;
    try {
      socket = new WebSocket(this.socketUrl());
    } catch (e) {  // blocked outright (a policy, an old proxy): poll instead
      this.poll();
      return;
    }
    this.socket = socket;
    socket.onopen = function () {
      opened = true;
      self.openFailures = 0;
      self.backoff = 500;
      self.setState("live");
    };
    socket.onmessage = function (message) {
      try { self.handle(JSON.parse(message.data)); } catch (e) { /* a malformed event: skip it */ }
    };
    socket.onclose = function () {
      self.socket = null;
      if (self.finished) { return; }
      if (!opened && ++self.openFailures >= OPEN_FAILURES_BEFORE_POLLING) { self.poll(); return; }
      self.setState("reconnecting");
      var wait = self.backoff;
      self.backoff = Math.min(self.backoff * 2, MAX_BACKOFF_MS);
      window.setTimeout(function () { self.connect(); }, wait);
    };
  };

  LiveLog.prototype.poll = function () {
    var self = this;
    this.setState("polling");
    var url = new URL(this.pollPath, window.location.href);
    if (this.lastSeq >= 0) { url.searchParams.set("after_seq", String(this.lastSeq)); }
    fetch(url.toString(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (body) {
        body.events.forEach(function (event) { self.append(event); });
        self.backoff = 500;
        if (body.more) { self.poll(); return; }
        self.status(body.status);
        if (!self.finished) { window.setTimeout(function () { self.poll(); }, POLL_MS); }
      })
      .catch(function () {
        if (self.finished) { return; }
        self.setState("reconnecting");
        var wait = self.backoff;
        self.backoff = Math.min(self.backoff * 2, MAX_BACKOFF_MS);
        window.setTimeout(function () { self.poll(); }, wait);
      });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.querySelector("section.live-log[data-socket]");
    if (!section) { return; }
    var viewer = new LiveLog(section);
    window.jobplaneLiveLog = viewer;  // for the browser tests and the curious
    if (!("WebSocket" in window)) { viewer.poll(); }
    else { viewer.connect(); }
  });
})();
