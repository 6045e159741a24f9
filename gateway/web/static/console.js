// SenseGate 值班台: the live board (server-sent events), the alarm sound, one-tap forms.
// A static file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  var board = document.getElementById("board");
  var live = document.getElementById("live");
  var soundButton = document.getElementById("sound");
  var audio = null; // an AudioContext, once someone tapped 启用声音 (browsers need a gesture)
  var beeping = null;

  function current() {
    return board ? board.querySelector(".board") : null;
  }

  // ---------------------------------------------------------------- the alarm sound

  function beep() {
    if (!audio) return;
    var now = audio.currentTime;
    [0, 0.25].forEach(function (offset) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = offset ? 660 : 880;
      gain.gain.setValueAtTime(0.15, now + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, now + offset + 0.2);
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start(now + offset);
      osc.stop(now + offset + 0.2);
    });
  }

  function updateAlarm() {
    var b = current();
    var alarm = !!b && b.getAttribute("data-alarm") === "1";
    document.body.classList.toggle("alarm", alarm);
    if (alarm && audio && !beeping) {
      beep();
      beeping = setInterval(beep, 1500);
    } else if ((!alarm || !audio) && beeping) {
      clearInterval(beeping);
      beeping = null;
    }
    document.body.setAttribute("data-beeping", beeping ? "1" : "0");
  }

  if (soundButton) {
    soundButton.addEventListener("click", function () {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      audio = audio || new Ctx();
      audio.resume();
      soundButton.classList.add("on");
      soundButton.textContent = document.body.getAttribute("data-sound-on");
      updateAlarm();
    });
  }

  // ---------------------------------------------------------------- ages

  function ageText(seconds, units) {
    var s = Math.max(0, Math.floor(seconds));
    var zh = document.body.getAttribute("data-lang") === "zh";
    var sp = zh ? "" : " ";
    if (s < 60) return s + sp + units[0];
    if (s < 3600) return Math.floor(s / 60) + sp + units[1];
    if (s < 86400) {
      var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
      return h + sp + units[2] + (zh && m ? m + units[1] : "");
    }
    return Math.floor(s / 86400) + sp + units[3];
  }

  function updateAges() {
    if (!board) return;
    var units = (board.getAttribute("data-units") || "s,min,h,d").split(",");
    var now = Date.now() / 1000;
    board.querySelectorAll(".age[data-at]").forEach(function (el) {
      el.textContent = ageText(now - parseFloat(el.getAttribute("data-at")), units);
    });
  }

  // ---------------------------------------------------------------- the live board

  function replaceBoard(html) {
    // Keep what a person is in the middle of: an open 处置 form and what they typed in it.
    var open = {};
    board.querySelectorAll("details.resolve[open]").forEach(function (d) {
      var area = d.querySelector("textarea");
      open[d.getAttribute("data-id")] = {
        text: area ? area.value : "",
        focused: area && document.activeElement === area
      };
    });
    board.innerHTML = html;
    Object.keys(open).forEach(function (id) {
      var d = board.querySelector('details.resolve[data-id="' + id + '"]');
      if (!d) return;
      d.open = true;
      var area = d.querySelector("textarea");
      if (area) {
        area.value = open[id].text;
        if (open[id].focused) area.focus();
      }
    });
    updateAges();
    updateAlarm();
  }

  if (board && window.EventSource) {
    var events = new EventSource(board.getAttribute("data-events"));
    events.addEventListener("board", function (e) { replaceBoard(e.data); });
    events.addEventListener("expired", function () { window.location.href = "/login?next=/"; });
    events.onopen = function () { live.classList.add("on"); live.removeAttribute("title"); };
    // EventSource reconnects by itself (the server says retry: 3000).
    events.onerror = function () { live.classList.remove("on"); live.title = live.getAttribute("data-offline"); };
  }

  // ---------------------------------------------------------------- one tap

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("act") || !window.fetch) return;
    e.preventDefault();
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "Accept": "application/json" },
      credentials: "same-origin"
    }).then(function (r) {
      return r.json().then(function (result) {
        if (!result.ok) window.alert(result.error || r.status);
        // On the board the event stream brings the change; elsewhere show it now.
        if (!board || !window.EventSource) window.location.reload();
      });
    }).catch(function () {
      form.submit(); // the network or the script failed: the plain form still works
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  });

  updateAges();
  updateAlarm();
  setInterval(updateAges, 10000);
})();
