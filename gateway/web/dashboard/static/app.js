// The dashboard's only script: it enhances pages that work without it.
// - action forms (data-async) post in the background and show the answer in #flash;
// - a thread page follows its thread live (Server-Sent Events) and appends new events;
// - elements with data-refresh reload their content every data-every ms (list rows, health);
// - a model turn's context loads when its <details> opens.
(function () {
  "use strict";

  function csrf() {
    return document.body.dataset.csrf || "";
  }

  function flash(text, bad) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text || "";
    el.classList.toggle("hidden", !text);
    el.classList.toggle("error", !!bad);
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.matches("form[data-async]")) return;
    ev.preventDefault();
    var data = new URLSearchParams(new FormData(form));
    if (ev.submitter && ev.submitter.name) data.set(ev.submitter.name, ev.submitter.value);
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRF-Token": csrf() },
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        flash(body.message || (r.ok ? "Done." : "That did not work (" + r.status + ")."), !r.ok);
        if (r.ok) {
          form.classList.add("sent");  // stays disabled until the live update replaces it
          refreshAll();
        } else {
          buttons.forEach(function (b) { b.disabled = false; });
        }
      });
    }).catch(function (err) {
      flash("Network error: " + err, true);
      buttons.forEach(function (b) { b.disabled = false; });
    });
  });

  // ---------------------------------------------------------------- live thread
  function follow(timeline) {
    if (!window.EventSource) return;
    var live = document.getElementById("live");
    var source = new EventSource(timeline.dataset.stream + "?after=" + timeline.dataset.count);
    source.addEventListener("open", function () { if (live) live.hidden = false; });
    source.addEventListener("error", function () { if (live) live.hidden = true; });
    source.addEventListener("gone", function () { source.close(); });
    source.addEventListener("update", function (msg) {
      var u = JSON.parse(msg.data);
      Object.keys(u.replace).forEach(function (i) {
        var old = document.getElementById("ev-" + i);
        if (old) old.outerHTML = u.replace[i];
      });
      timeline.insertAdjacentHTML("beforeend", u.items);
      timeline.dataset.count = u.count;
      document.getElementById("thread-header").innerHTML = u.header;
      var actions = document.getElementById("actions");
      // Swap the action panel only when what it offers changed: keep a half-typed answer.
      if (actions && actions.dataset.key !== u.actions_key) {
        actions.innerHTML = u.actions;
        actions.dataset.key = u.actions_key;
      }
    });
  }

  // ---------------------------------------------------------------- refreshing parts
  var refreshers = [];

  function refresher(el) {
    var every = Number(el.dataset.every) || 5000;
    var last = null;
    var timer = null;
    function tick() {
      clearTimeout(timer);
      var busy = el.contains(document.activeElement) && document.activeElement !== document.body;
      if (document.hidden || busy) {
        timer = setTimeout(tick, every);
        return;
      }
      fetch(el.dataset.refresh, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (html !== null && html !== last) {
            el.innerHTML = html;
            last = html;
          }
        })
        .catch(function () {})
        .then(function () { timer = setTimeout(tick, every); });
    }
    timer = setTimeout(tick, every);
    return tick;
  }

  function refreshAll() {
    refreshers.forEach(function (tick) { tick(); });
  }

  // ---------------------------------------------------------------- context windows
  document.addEventListener("toggle", function (ev) {
    var d = ev.target;
    if (!(d instanceof HTMLDetailsElement) || !d.open || !d.dataset.src || d.dataset.loaded) return;
    d.dataset.loaded = "1";
    var pre = d.querySelector("pre");
    fetch(d.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : "Could not load it (" + r.status + ")."; })
      .then(function (text) { pre.textContent = text; })
      .catch(function () { pre.textContent = "Could not load it."; d.dataset.loaded = ""; });
  }, true);

  document.addEventListener("DOMContentLoaded", function () {
    var timeline = document.getElementById("timeline");
    if (timeline && timeline.dataset.stream) follow(timeline);
    document.querySelectorAll("[data-refresh]").forEach(function (el) { refreshers.push(refresher(el)); });
  });
})();
