// The page at GET /: send a chosen image or clip to this service's POST /detect or
// POST /detect/video and draw the answer. Plain JavaScript, no dependencies, no build step.
// The bearer token is read from its field when a request is sent and goes only into the
// Authorization header: the page writes nothing to the browser's storage.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const CLIP_EXTENSION = /\.(mp4|m4v|mov|avi|mkv|webm)$/i;
  const FRAMES_SHOWN = 120; // annotated frames drawn for a clip; the JSON holds them all
  const JSON_LINES_SHOWN = 500;
  const FRAME_WIDTH = 480; // canvas pixels of one annotated clip frame (shown smaller)
  const SEEK_TIMEOUT_MS = 3000;
  const BOX_COLOUR = "#00e676"; // faces without a track
  const LANDMARK_COLOUR = "#ffd600";
  const TRACK_COLOURS = ["#ff5252", "#40c4ff", "#ffd740", "#69f0ae", "#e040fb",
                         "#ff6e40", "#b2ff59", "#18ffff", "#ff4081", "#7c4dff"];
  const STATUS_HINTS = {
    400: "The service could not use this file",
    401: "This service needs a bearer token",
    404: "Route not found",
    405: "Method not allowed",
    413: "Too large for this service",
    415: "Not a supported file type",
    422: "A parameter was refused",
    500: "The service failed",
    503: "The detector is not available right now; try again in a moment",
  };

  const body = document.body;
  let chosen = null; // the File to send
  let runAgain = false; // a file chosen while a request was running is sent when it ends

  // ---- choosing a file ----------------------------------------------------------------

  function choose(file) {
    if (!file) return;
    chosen = file;
    $("file-name").textContent = `${file.name} (${formatBytes(file.size)})`;
    $("run").disabled = false;
    run();
  }

  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  // A file dropped beside the drop zone must not make the browser leave the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); run(); });

  if (body.dataset.tokenRequired === "true") $("token-field").hidden = false;
  window.addEventListener("error", (event) => showError(null, `page error: ${event.message}`));
  window.addEventListener("unhandledrejection", (event) => {
    showError(null, `page error: ${event.reason && event.reason.message || event.reason}`);
    finish("error");
  });

  // ---- one request ----------------------------------------------------------------------

  function isClip(file) {
    return file.type.startsWith("video/") || CLIP_EXTENSION.test(file.name);
  }

  async function run() {
    if (!chosen) return;
    if (body.dataset.state === "busy") { runAgain = true; return; }
    const file = chosen;
    const clip = isClip(file);
    for (const [id, name] of [["min-face-size", "min_face_size"], ["fps", "frames/s"]]) {
      if ($(id).validity.badInput) { // the field holds text that is no number: its value reads as ""
        clearResult();
        showError(null, `${name} must be a number`);
        return finish("error");
      }
    }
    const query = new URLSearchParams();
    const minFaceSize = $("min-face-size").value.trim();
    if (minFaceSize) query.set("min_face_size", minFaceSize); // the service checks the range
    const fps = $("fps").value.trim();
    if (clip && fps) query.set("fps", fps);
    const headers = { "Content-Type": file.type || "application/octet-stream" };
    const token = $("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;

    clearResult();
    body.dataset.state = "busy";
    $("run").textContent = "Detecting\u2026";
    const started = performance.now();
    let response;
    try {
      // Relative to the page, as its assets are: right under any Serve route prefix.
      response = await fetch(`${clip ? "detect/video" : "detect"}?${query}`, {
        method: "POST", headers, body: file, cache: "no-store", credentials: "omit",
      });
    } catch (error) {
      showError(null, `could not reach the service (${error.message})`);
      return finish("error");
    }
    if (!response.ok) {
      await showErrorAnswer(response);
      return finish("error");
    }
    try {
      if (clip) await showClip(file, response, started);
      else await showImage(file, response, started);
    } catch (error) {
      showError(null, `could not show the answer: ${error.message}`);
      return finish("error");
    }
    finish(body.dataset.state === "busy" ? "done" : body.dataset.state);
  }

  function finish(state) {
    body.dataset.state = state;
    body.dataset.runs = String(Number(body.dataset.runs) + 1);
    $("run").textContent = "Detect";
    if (runAgain) { runAgain = false; run(); }
  }

  function clearResult() {
    for (const id of ["error", "summary", "image-canvas", "frames", "frames-note", "json-box"]) $(id).hidden = true;
    $("frames").replaceChildren();
    $("json").textContent = "";
    $("legend").textContent = "";
    $("size").textContent = "";
    const canvas = $("image-canvas");
    delete canvas.dataset.boxes;
    delete canvas.dataset.faces;
  }

  // ---- errors ---------------------------------------------------------------------------

  async function showErrorAnswer(response) {
    const text = await response.text().catch(() => "");
    let message = text.trim().slice(0, 500) || response.statusText;
    try {
      const answer = JSON.parse(text);
      if (answer && typeof answer.error === "string") message = answer.error;
    } catch (_) { /* not JSON: show the text as it came */ }
    showError(response.status, message);
    if (response.status === 401) {
      $("token-field").hidden = false;
      $("token").focus();
    }
  }

  function showError(status, message) {
    const box = $("error");
    box.replaceChildren();
    if (status !== null) {
      const head = document.createElement("strong");
      head.textContent = `${status} ${STATUS_HINTS[status] || "Request refused"}`;
      box.append(head, document.createElement("br"));
    }
    box.append(message);
    if (status === 401) box.append(" \u2014 enter the token above and press Detect.");
    box.hidden = false;
    box.dataset.status = status === null ? "" : String(status);
  }

  // ---- an image -------------------------------------------------------------------------

  async function showImage(file, response, started) {
    const answer = await response.json();
    const latency = performance.now() - started;
    const picture = await loadPicture(file);
    const canvas = $("image-canvas");
    canvas.width = answer.width;
    canvas.height = answer.height;
    const context = canvas.getContext("2d");
    if (picture) context.drawImage(picture, 0, 0, answer.width, answer.height);
    else paintBlank(context, answer.width, answer.height, "the browser cannot show this image");
    drawFaces(context, answer.faces, 1, 1, Math.max(answer.width, answer.height));
    canvas.dataset.boxes = JSON.stringify(answer.faces.map((face) => face.box));
    canvas.dataset.faces = String(answer.faces.length);
    canvas.hidden = false;

    showSummary(answer.faces.length, `${formatMs(latency)}`, `${answer.width} \u00d7 ${answer.height} px`);
    showJson(imageJson(answer));
  }

  function loadPicture(file) {
    return new Promise((resolve) => {
      const picture = new Image();
      const url = URL.createObjectURL(file);
      picture.onload = () => { URL.revokeObjectURL(url); resolve(picture); };
      picture.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
      picture.src = url;
    });
  }

  // ---- a clip ---------------------------------------------------------------------------

  async function showClip(file, response, started) {
    const [width, height] = (response.headers.get("X-Video-Size") || "0x0").split("x").map(Number);
    const fps = Number(response.headers.get("X-Video-Fps")) || 0;
    const player = await openClip(file);
    const frames = $("frames");
    frames.hidden = false;
    const lines = [];
    let faces = 0;
    let firstLineMs = null;
    let drawing = Promise.resolve();
    const tracks = new Set();

    const onLine = (line) => {
      if (!line.trim()) return;
      if (firstLineMs === null) firstLineMs = performance.now() - started;
      lines.push(line);
      const answer = JSON.parse(line);
      if (!("frame_index" in answer)) { // the stream stopped early: {"error": "..."}
        showError(null, answer.error || "the stream ended early");
        body.dataset.state = "error";
        return;
      }
      faces += answer.faces.length;
      for (const face of answer.faces) if (face.track_id !== undefined && face.track_id !== null) tracks.add(face.track_id);
      const index = lines.length - 1;
      if (index < FRAMES_SHOWN) drawing = drawing.then(() => addFrame(answer, player, width, height, fps));
    };
    await readLines(response, onLine);
    await drawing;
    const total = performance.now() - started;
    if (player) player.removeAttribute("src");

    const sampled = lines.filter((line) => line.includes('"frame_index"')).length;
    showSummary(faces, `first frame ${formatMs(firstLineMs || total)}, all ${formatMs(total)}`,
                `${sampled} frames of ${width} \u00d7 ${height} px`);
    $("legend").textContent = tracks.size
      ? `${tracks.size} tracks, boxes coloured by track`
      : "";
    const notes = [];
    if (!player) notes.push("This browser cannot decode the clip, so its boxes are drawn on blank frames.");
    if (sampled > FRAMES_SHOWN) notes.push(`The first ${FRAMES_SHOWN} of ${sampled} frames are drawn; the JSON has them all.`);
    if (notes.length) { $("frames-note").textContent = notes.join(" "); $("frames-note").hidden = false; }
    const shown = lines.slice(0, JSON_LINES_SHOWN);
    if (lines.length > shown.length) shown.push(`\u2026 ${lines.length - shown.length} more lines`);
    showJson(shown.join("\n"));
  }

  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      pending += decoder.decode(value || new Uint8Array(), { stream: !done });
      const parts = pending.split("\n");
      pending = parts.pop();
      for (const part of parts) onLine(part);
      if (done) break;
    }
    onLine(pending);
  }

  // The clip in a hidden <video>, to draw its frames; null when this browser cannot decode it
  // (the service decodes more codecs than browsers do).
  function openClip(file) {
    return new Promise((resolve) => {
      const player = $("clip");
      const url = URL.createObjectURL(file);
      const done = (ok) => {
        player.onloadeddata = player.onerror = null;
        clearTimeout(timer);
        if (!ok) { player.removeAttribute("src"); URL.revokeObjectURL(url); }
        resolve(ok ? player : null);
      };
      const timer = setTimeout(() => done(false), SEEK_TIMEOUT_MS);
      player.onloadeddata = () => done(player.videoWidth > 0);
      player.onerror = () => done(false);
      player.src = url;
    });
  }

  function seek(player, seconds) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { player.onseeked = null; resolve(false); }, SEEK_TIMEOUT_MS);
      player.onseeked = () => { clearTimeout(timer); player.onseeked = null; resolve(true); };
      player.currentTime = seconds;
    });
  }

  async function addFrame(answer, player, width, height, fps) {
    const scale = Math.min(1, FRAME_WIDTH / width);
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const context = canvas.getContext("2d");
    // Middle of the frame's display interval, so that rounding cannot land on its neighbour.
    const seconds = fps ? (answer.frame_index + 0.5) / fps : answer.timestamp_s;
    if (player && await seek(player, Math.min(seconds, player.duration || seconds))) {
      context.drawImage(player, 0, 0, canvas.width, canvas.height);
    } else {
      paintBlank(context, canvas.width, canvas.height, "");
    }
    drawFaces(context, answer.faces, scale, scale, Math.max(width, height) * scale);
    canvas.dataset.frameIndex = String(answer.frame_index);
    canvas.dataset.boxes = JSON.stringify(answer.faces.map((face) => face.box));
    canvas.dataset.trackIds = JSON.stringify(answer.faces.map((face) => face.track_id ?? null));
    canvas.dataset.faces = String(answer.faces.length);

    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    const count = answer.faces.length;
    caption.textContent = `frame ${answer.frame_index} \u00b7 ${answer.timestamp_s.toFixed(2)} s \u00b7 ` +
      `${count} ${count === 1 ? "face" : "faces"}${answer.error ? ` \u00b7 ${answer.error}` : ""}`;
    figure.append(canvas, caption);
    $("frames").append(figure);
  }

  // ---- drawing --------------------------------------------------------------------------

  // Boxes, scores and the five landmarks of ``faces`` (pixel coordinates of the image) on a
  // context showing that image scaled by (scaleX, scaleY); ``side`` sets the line width.
  function drawFaces(context, faces, scaleX, scaleY, side) {
    const line = Math.max(1.5, side / 400);
    const fontSize = Math.max(13, Math.round(side / 55));
    context.lineWidth = line;
    context.font = `600 ${fontSize}px system-ui, sans-serif`;
    context.textBaseline = "bottom";
    for (const face of faces) {
      const [x1, y1, x2, y2] = face.box;
      const colour = colourOf(face);
      const left = x1 * scaleX, top = y1 * scaleY;
      context.strokeStyle = colour;
      context.strokeRect(left, top, (x2 - x1) * scaleX, (y2 - y1) * scaleY);

      context.fillStyle = LANDMARK_COLOUR;
      for (const [x, y] of face.landmarks || []) {
        context.beginPath();
        context.arc(x * scaleX, y * scaleY, line * 1.4, 0, 2 * Math.PI);
        context.fill();
      }

      const label = face.track_id !== undefined && face.track_id !== null
        ? `#${face.track_id} ${face.score.toFixed(2)}` : face.score.toFixed(2);
      const labelWidth = context.measureText(label).width + 2 * line;
      const labelTop = Math.max(0, top - fontSize - line);
      context.fillStyle = colour;
      context.fillRect(left - line / 2, labelTop, labelWidth, fontSize + line);
      context.fillStyle = "#000";
      context.fillText(label, left + line / 2, labelTop + fontSize + line / 2);
    }
  }

  function colourOf(face) {
    if (face.track_id === undefined || face.track_id === null) return BOX_COLOUR;
    const text = String(face.track_id);
    let hash = 0;
    for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return TRACK_COLOURS[(/^\d+$/.test(text) ? Number(text) : hash) % TRACK_COLOURS.length];
  }

  function paintBlank(context, width, height, message) {
    context.fillStyle = "#3a3f47";
    context.fillRect(0, 0, width, height);
    if (!message) return;
    context.fillStyle = "#aab";
    context.font = `${Math.max(12, Math.round(width / 40))}px system-ui, sans-serif`;
    context.fillText(message, 12, 12 + Math.max(12, Math.round(width / 40)));
  }

  // ---- summary and JSON -----------------------------------------------------------------

  function showSummary(faces, latency, size) {
    $("face-count").textContent = String(faces);
    $("face-noun").textContent = faces === 1 ? "face" : "faces";
    $("latency").textContent = latency;
    $("size").textContent = size;
    $("summary").hidden = false;
  }

  function showJson(text) {
    $("json").textContent = text;
    $("json-box").hidden = false;
  }

  // The /detect answer with one face per line: readable, and still valid JSON.
  function imageJson(answer) {
    const { faces, ...rest } = answer;
    const head = JSON.stringify(rest).slice(0, -1);
    if (!faces.length) return `${head},"faces":[]}`;
    return `${head},"faces":[\n  ${faces.map((face) => JSON.stringify(face)).join(",\n  ")}\n]}`;
  }

  function formatMs(ms) {
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function formatBytes(bytes) {
    if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
    if (bytes >= 1 << 10) return `${Math.round(bytes / (1 << 10))} KiB`;
    return `${bytes} bytes`;
  }
})();
