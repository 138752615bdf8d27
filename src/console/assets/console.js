// iocsync console: the live log stream. Every page works without this file.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !window.EventSource) { return; }
  var pause = document.getElementById("pause-scroll");
  var max = 2000;
  var levels = { ERROR: "lv-error", WARN: "lv-warn", INFO: "lv-info", DEBUG: "lv-debug" };
  function scroll() { if (!pause || !pause.checked) { log.scrollTop = log.scrollHeight; } }
  function add(line) {
    var div = document.createElement("div");
    div.className = "line " + (levels[line.level] || "lv-trace");
    var at = document.createElement("span");
    at.className = "at";
    at.textContent = (line.at || "").substring(11, 19);
    var lv = document.createElement("span");
    lv.className = "lv";
    lv.textContent = line.level;
    div.appendChild(at);
    div.appendChild(document.createTextNode(" "));
    div.appendChild(lv);
    div.appendChild(document.createTextNode(" " + line.message));
    log.appendChild(div);
    while (log.childNodes.length > max) { log.removeChild(log.firstChild); }
    scroll();
  }
  scroll();
  var source = new EventSource(log.getAttribute("data-stream"));
  source.onmessage = function (ev) {
    try { add(JSON.parse(ev.data)); } catch (e) { /* a malformed line is skipped */ }
  };
  source.addEventListener("lagged", function (ev) {
    add({ level: "WARN", at: "", message: "(" + ev.data + " lines skipped: the stream fell behind)" });
  });
})();
