// Live pages without a build step: follow the page's server-sent events, list each new event, and
// refresh the page's live part (server-rendered, escaped HTML) at most twice a second.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch) { return; }
  var list = document.getElementById("events");
  var KEPT = 500;  // events listed; the registry keeps the record
  var pending = null;
  function refresh() {
    pending = null;
    fetch(live.dataset.src, { headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () { /* the next event tries again */ });
  }
  var source = new EventSource(live.dataset.stream);
  // a browser keeps at most 6 connections to one host: a stream left open by each page visited
  // would stall the seventh page
  window.addEventListener("pagehide", function () { source.close(); });
  source.addEventListener("event", function (message) {
    if (live.dataset.reload) { source.close(); window.location.reload(); return; }  // the awaited run started
    var event = JSON.parse(message.data);
    if (list) {
      var item = document.createElement("li");
      item.className = "ev ev-" + event.kind.replace(/[^a-z_]/g, "");
      item.textContent = event.at + " " + event.kind + ": " + event.message;  // text, never HTML
      list.insertBefore(item, list.firstChild);
      while (list.children.length > KEPT) { list.removeChild(list.lastChild); }
    }
    if (!pending) { pending = setTimeout(refresh, 500); }
  });
  document.body.dataset.live = "following";
})();
