// A job's page, followed live: the job's Server-Sent Events (the same stream as the API's,
// authenticated by the session), or polling its status every 2 s where EventSource is missing
// or keeps failing. Step states, pages and tokens are updated in place; changes of state (and
// every few pages) are said in a polite live region; when the job ends, the page's own
// server-rendered state and result replace the live part, without reloading. The Copy buttons
// copy a result's text and say so. Without JavaScript the page is complete as rendered.
(function () {
  "use strict";
  var root = document.getElementById("job");
  var labels = JSON.parse((document.getElementById("job-labels") || {}).textContent || "{}");
  var news = document.getElementById("job-news");
  var PAGES_EVERY = 5; // announce the pages read every this many pages (and the last)
  var POLL_MS = 2000;
  var ERRORS_BEFORE_POLLING = 3;

  function fill(template, values) {
    return String(template || "").replace(/%\((\w+)\)s/g, function (_, name) {
      return values[name] === undefined ? "" : String(values[name]);
    });
  }

  function stateClass(state) {
    if (state === "succeeded") return "state-ok";
    if (state === "failed" || state === "cancelled") return "state-bad";
    return "state-wait";
  }

  function stateLabel(state) {
    return (labels.states && labels.states[state]) || state;
  }

  function say(text) {
    if (news && text) news.textContent = text;
  }

  // --- copy -----------------------------------------------------------------------------------
  var copyNews = document.getElementById("copy-news");

  function copied(ok) {
    if (!copyNews) return;
    copyNews.textContent = "";
    // A new text each time, so that a second copy is announced too.
    window.setTimeout(function () {
      copyNews.textContent = ok ? labels.copied : labels.copy_failed;
    }, 50);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () { return true; },
        function () { return legacyCopy(text); }
      );
    }
    return Promise.resolve(legacyCopy(text));
  }

  function legacyCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok;
  }

  function showCopyButtons() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    copyText(source.textContent).then(copied);
  });
  showCopyButtons();

  if (!root || root.getAttribute("data-final") === "true") {
    if (root) root.setAttribute("data-live", "done");
    return;
  }

  // --- following the job ----------------------------------------------------------------------
  var last = { state: null, steps: [], pagesSaid: 0 };
  var ended = false;

  function setState(element, state) {
    if (!element) return;
    element.textContent = stateLabel(state);
    element.className = "state " + stateClass(state);
    element.setAttribute("data-state", state);
  }

  function progressText(step) {
    var p = step.progress || {};
    if (p.pages_total) return fill(labels.pages, { done: p.pages_done || 0, total: p.pages_total });
    if (p.tokens) return fill(labels.tokens, { tokens: p.tokens });
    return "—";
  }

  function update(job) {
    var said = [];
    setState(document.getElementById("job-state"), job.state);
    if (last.state !== null && job.state !== last.state) {
      said.push(fill(labels.job_state, { state: stateLabel(job.state) }));
    }
    last.state = job.state;
    (job.steps || []).forEach(function (step, index) {
      var row = document.querySelector('#steps tr[data-step="' + index + '"]');
      if (row) {
        setState(row.querySelector('[data-field="state"]'), step.state);
        row.querySelector('[data-field="progress"]').textContent = progressText(step);
        row.querySelector('[data-field="node"]').textContent = step.node || "—";
      }
      if (last.steps[index] !== undefined && last.steps[index] !== step.state) {
        var name = (labels.steps && labels.steps[step.name]) || step.name;
        said.push(fill(labels.step_state, { step: name, state: stateLabel(step.state) }));
      }
      last.steps[index] = step.state;
      var p = step.progress || {};
      if (step.name === "ocr" && p.pages_total) {
        var done = step.state === "succeeded" ? p.pages_total : p.pages_done || 0;
        var bar = document.getElementById("pages-progress");
        var text = document.getElementById("pages-text");
        var words = fill(labels.pages, { done: done, total: p.pages_total });
        if (bar) {
          bar.max = p.pages_total;
          bar.value = done;
          bar.textContent = done + " / " + p.pages_total;
        }
        if (text) text.textContent = words;
        if (done > last.pagesSaid && (done - last.pagesSaid >= PAGES_EVERY || done === p.pages_total)) {
          said.push(words);
          last.pagesSaid = done;
        }
      }
    });
    if (said.length) say(said.join(" "));
    if (["succeeded", "failed", "cancelled"].indexOf(job.state) >= 0) finish(job.state);
  }

  // The page as the server renders it now: its state, steps and result replace the live part.
  function finish(state) {
    if (ended) return;
    ended = true;
    stopPolling();
    if (source) source.close();
    fetch(root.getAttribute("data-page"), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("job-live");
        var live = document.getElementById("job-live");
        if (fresh && live) live.replaceWith(fresh);
        showCopyButtons();
        root.setAttribute("data-final", "true");
        say(fill(labels.ended, { state: stateLabel(state) }));
      })
      .catch(function () {
        say(fill(labels.ended, { state: stateLabel(state) }));
      });
  }

  var source = null;
  var timer = null;

  function poll() {
    fetch(root.getAttribute("data-status"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(update)
      .catch(function () { /* tried again at the next tick */ });
  }

  function startPolling() {
    if (timer || ended) return;
    root.setAttribute("data-live", "polling");
    poll();
    timer = window.setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (timer) window.clearInterval(timer);
    timer = null;
  }

  if (typeof window.EventSource === "function") {
    var errors = 0;
    root.setAttribute("data-live", "events");
    source = new EventSource(root.getAttribute("data-events"));
    source.addEventListener("open", function () { errors = 0; });
    source.addEventListener("job", function (event) {
      errors = 0;
      update(JSON.parse(event.data));
    });
    source.addEventListener("end", function (event) {
      source.close();
      finish(JSON.parse(event.data).state);
    });
    source.addEventListener("error", function () {
      // A stream closed after its time reconnects by itself. One closed for good (an answer
      // that is no event stream: signed out, the server away) or failing again and again is
      // left for polling.
      errors += 1;
      var closed = source.readyState === 2;
      if ((closed || errors >= ERRORS_BEFORE_POLLING) && !ended) {
        source.close();
        startPolling();
      }
    });
  } else {
    startPolling();
  }
})();
