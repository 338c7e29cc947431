// The robustfer page: photos (POST /predict/batch), webcam (WS /ws/stream), video (POST /predict/video).
// Vanilla JS, no build step, nothing loaded from elsewhere. `/?demo=NAME,NAME` analyses bundled sample
// photos on load (used by the browser test); body[data-state] is "ready", "busy", "done" or "error".
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = {
  neutral: "#94a3b8", happiness: "#f59e0b", surprise: "#06b6d4", sadness: "#3b82f6",
  anger: "#ef4444", disgust: "#84cc16", fear: "#a855f7", contempt: "#f97316",
};
const state = { health: null, mode: "photos", photos: [], webcam: null, video: null };

function color(name) {
  if (COLORS[name]) return COLORS[name];
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h} 70% 50%)`;
}
const pct = (p) => `${Math.round(p * 100)}%`;
const deg = (v) => (v === null || v === undefined ? "?" : `${Math.round(v)}°`);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}
function topProbs(probs, n) {
  return Object.entries(probs).sort((a, b) => b[1] - a[1]).slice(0, n);
}

// ------------------------------------------------------------------------------------ errors
function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
function clearError() { $("error").hidden = true; }
function failed(message, statusId) {  // a request failed: say why, clear its progress line
  if (statusId) $(statusId).textContent = "";
  showError(message);
  document.body.dataset.state = "error";
}
async function responseError(resp) {
  let detail = "";
  try {
    const body = await resp.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch (_) {
    detail = resp.statusText;
  }
  const retry = resp.headers.get("Retry-After");
  return `The server answered ${resp.status}: ${detail}` + (retry ? ` (retry after ${retry} s)` : "");
}
async function postForm(path, form, params) {
  const resp = await fetch(`${path}?${new URLSearchParams(params)}`, { method: "POST", body: form });
  if (!resp.ok) throw new Error(await responseError(resp));
  return resp.json();
}
function choice() {
  return { model: $("model").value, detector: $("detector").value };
}

// ------------------------------------------------------------------------------------ drawing
// Head-pose axes: x (red) to the subject's left in the image, y (green) up, z (blue) out of the
// face. Signs as the server's: yaw > 0 turns the nose to the image's left, pitch > 0 tilts it
// up, roll > 0 is clockwise in the image.
function poseAxes(pose) {
  const r = Math.PI / 180;
  const [y, p, ro] = [pose.yaw * r, pose.pitch * r, pose.roll * r];
  const rot = ([x, yy, z]) => {
    [yy, z] = [yy * Math.cos(p) + z * Math.sin(p), -yy * Math.sin(p) + z * Math.cos(p)];  // pitch
    [x, z] = [x * Math.cos(y) + z * Math.sin(y), -x * Math.sin(y) + z * Math.cos(y)];     // yaw
    return [x * Math.cos(ro) - yy * Math.sin(ro), x * Math.sin(ro) + yy * Math.cos(ro)];  // roll
  };
  return [[rot([1, 0, 0]), "#ef4444"], [rot([0, -1, 0]), "#22c55e"], [rot([0, 0, -1]), "#3b82f6"]];
}

function drawFaces(ctx, faces, scale) {
  const lw = Math.max(2, ctx.canvas.width / 320);
  const font = Math.max(12, Math.round(ctx.canvas.width / 45));
  faces.forEach((f, i) => {
    const [x1, y1, x2, y2] = f.box.map((v) => v * scale);
    const c = color(f.expression);
    ctx.lineWidth = lw;
    ctx.strokeStyle = c;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    // label: face number (or track), expression and its probability
    const tag = f.track_id !== undefined && f.track_id !== null ? `#${f.track_id}` : `${i + 1}`;
    const label = `${tag} ${f.expression} ${pct(f.confidence)}`;
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    const tw = ctx.measureText(label).width + 8;
    const ly = y1 - font - 6 >= 0 ? y1 - font - 6 : y2;
    ctx.fillStyle = c;
    ctx.fillRect(x1 - lw / 2, ly, tw, font + 6);
    ctx.fillStyle = "#111";
    ctx.fillText(label, x1 + 4, ly + font);
    // landmarks
    ctx.fillStyle = "#fff";
    for (const pt of f.landmarks || []) {
      if (pt[0] === null || pt[1] === null) continue;
      ctx.beginPath();
      ctx.arc(pt[0] * scale, pt[1] * scale, lw * 1.6, 0, 2 * Math.PI);
      ctx.fill();
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    // head pose axes from the nose (or the box centre)
    const w = x2 - x1;
    if (f.pose && f.pose.yaw !== null) {
      const nose = f.landmarks && f.landmarks[2] && f.landmarks[2][0] !== null
        ? [f.landmarks[2][0] * scale, f.landmarks[2][1] * scale] : [(x1 + x2) / 2, (y1 + y2) / 2];
      for (const [[dx, dy], ac] of poseAxes(f.pose)) {
        ctx.beginPath();
        ctx.moveTo(nose[0], nose[1]);
        ctx.lineTo(nose[0] + dx * w * 0.45, nose[1] + dy * w * 0.45);
        ctx.strokeStyle = ac;
        ctx.lineWidth = lw * 1.3;
        ctx.stroke();
      }
      const poseText = `yaw ${deg(f.pose.yaw)} pitch ${deg(f.pose.pitch)} roll ${deg(f.pose.roll)}`;
      ctx.font = `${Math.round(font * 0.8)}px system-ui, sans-serif`;
      const pw = ctx.measureText(poseText).width + 8;
      ctx.fillStyle = "rgba(0,0,0,.65)";
      ctx.fillRect(x1 - lw / 2, y2, pw, font);
      ctx.fillStyle = "#fff";
      ctx.fillText(poseText, x1 + 4, y2 + font * 0.8);
    }
    // expression bars beside the box, when there is room
    if (w >= 70) {
      const bars = topProbs(f.probabilities, 3);
      const bh = Math.max(6, font * 0.6);
      ctx.font = `${Math.round(bh * 1.1)}px system-ui, sans-serif`;
      const bw = Math.max(w * 0.55, ...bars.map(([name, p]) => ctx.measureText(`${name} ${pct(p)}`).width + 8));
      const bx = x2 + lw * 2 + bw + 4 < ctx.canvas.width ? x2 + lw * 2 : x1 - bw - lw * 2;
      bars.forEach(([name, p], k) => {
        const by = y1 + k * (bh * 2.4);
        ctx.fillStyle = "rgba(0,0,0,.55)";
        ctx.fillRect(bx, by, bw, bh * 2.2);
        ctx.fillStyle = color(name);
        ctx.fillRect(bx, by + bh * 1.3, bw * p, bh * 0.8);
        ctx.fillStyle = "#fff";
        ctx.fillText(`${name} ${pct(p)}`, bx + 3, by + bh * 1.15);
      });
    }
  });
}

function faceCard(f, i) {
  const tag = f.track_id !== undefined && f.track_id !== null ? `track ${f.track_id}` : `face ${i + 1}`;
  const pose = f.pose && f.pose.yaw !== null
    ? `yaw ${deg(f.pose.yaw)} · pitch ${deg(f.pose.pitch)} · roll ${deg(f.pose.roll)}` +
      (f.pose.yaw_bin_name ? ` (${f.pose.yaw_bin_name.replace("_", " ")})` : "")
    : f.pose && f.pose.yaw_bin_name ? `view: ${f.pose.yaw_bin_name.replace("_", " ")}` : "pose not measured";
  const bars = Object.entries(f.probabilities).sort((a, b) => b[1] - a[1]).map(([name, p]) =>
    el("div", { class: "bar" }, el("span", {}, name),
      el("div", { class: "track" }, el("div", { class: "fill", style: `width:${p * 100}%;background:${color(name)}` })),
      el("span", { class: "pct" }, pct(p))));
  return el("div", { class: "face", "data-expression": f.expression },
    el("h3", {}, el("span", { class: "swatch", style: `background:${color(f.expression)}` }),
      `${tag}: `, el("span", { class: "expression" }, f.expression), ` ${pct(f.confidence)}`),
    el("div", { class: "pose" }, pose), ...bars);
}

// ------------------------------------------------------------------------------------ photos
async function loadBitmap(file) {
  try { return await createImageBitmap(file); } catch (_) { return null; }  // e.g. TIFF: no preview
}

function photoCard(file, bitmap, result) {
  const n = result.faces.length;
  const card = el("article", { class: "card", "data-faces": String(n) },
    el("header", {}, el("span", { class: "name", title: file.name }, file.name),
      el("span", { class: "faces-count" }, result.error ? "error" : `${n} face${n === 1 ? "" : "s"}` +
        (result.time_ms ? ` · ${Math.round(result.time_ms)} ms` : ""))));
  if (result.error) {
    card.append(el("p", { class: "card-error" }, result.error));
    return card;
  }
  const canvas = el("canvas");
  const w = bitmap ? bitmap.width : result.width, h = bitmap ? bitmap.height : result.height;
  const scale = Math.min(1, 1280 / Math.max(w, h));
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d");
  if (bitmap) ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  drawFaces(ctx, result.faces, (canvas.width / result.width) || scale);
  card.append(canvas);
  card.append(n ? el("div", { class: "faces" }, ...result.faces.map(faceCard))
    : el("p", { class: "muted", style: "padding:.6rem" }, "No face found."));
  return card;
}

async function analysePhotos(files) {
  if (!files.length) return;
  clearError();
  const lim = state.health.limits;
  document.body.dataset.state = "busy";
  $("photo-status").textContent = `Analysing ${files.length} photo${files.length === 1 ? "" : "s"}…`;
  $("results").replaceChildren();
  state.photos = [];
  try {
    for (let i = 0; i < files.length; i += lim.max_batch_files) {
      const chunk = files.slice(i, i + lim.max_batch_files);
      const form = new FormData();
      const local = {};  // refused here, never uploaded
      chunk.forEach((f, k) => {
        if (f.size > lim.max_upload_bytes) {
          local[k] = `'${f.name}' is ${(f.size / 1048576).toFixed(1)} MB, over the server's ` +
            `${(lim.max_upload_bytes / 1048576).toFixed(1)} MB limit; downscale or recompress it.`;
        } else form.append("files", f, f.name);
      });
      const body = form.has("files") ? await postForm("/predict/batch", form, choice()) : { results: [] };
      const answers = body.results[Symbol.iterator]();
      for (const [k, f] of chunk.entries()) {
        const res = local[k] !== undefined ? { filename: f.name, faces: [], error: local[k] } : answers.next().value;
        state.photos.push(res);
        $("results").append(photoCard(f, res.error ? null : await loadBitmap(f), res));
      }
    }
    const faces = state.photos.reduce((s, r) => s + r.faces.length, 0);
    const failed = state.photos.filter((r) => r.error).length;
    $("photo-status").textContent = `${state.photos.length} photo(s), ${faces} face(s)` +
      (failed ? `, ${failed} could not be read (see below)` : "") + ".";
    document.body.dataset.state = "done";
  } catch (e) {
    failed(e.message, "photo-status");
  }
  updateDownload();
}

function setupPhotos() {
  const drop = $("drop");
  $("photo-input").addEventListener("change", (e) => analysePhotos([...e.target.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    analysePhotos([...e.dataTransfer.files]);
  });
  for (const name of state.health.samples) {
    const b = el("button", { type: "button", class: "sample", textContent: name });
    b.addEventListener("click", () => analyseSamples([name]));
    $("samples").append(b);
  }
  if (!state.health.samples.length) $("samples").hidden = true;
}

async function analyseSamples(names) {
  const files = [];
  for (const name of names) {
    const resp = await fetch(`/samples/${encodeURIComponent(name)}`);
    if (!resp.ok) return failed(await responseError(resp));
    const blob = await resp.blob();
    files.push(new File([blob], name, { type: blob.type }));
  }
  await analysePhotos(files);
}

// ------------------------------------------------------------------------------------ timelines
// Per track: the probabilities of its three most frequent expressions over time.
class Timelines {
  constructor(container, windowS) {
    this.container = container;
    this.windowS = windowS;  // null: the whole video
    this.tracks = new Map();  // track_id -> {points: [[t, probs]], canvas, legend}
    container.replaceChildren(el("p", { class: "muted" }, "No face tracked yet."));
  }
  add(t, faces) {
    for (const f of faces) {
      if (f.track_id === undefined || f.track_id === null) continue;
      let tr = this.tracks.get(f.track_id);
      if (!tr) {
        tr = { points: [], canvas: el("canvas", { width: 720, height: 220 }), legend: el("div", { class: "legend" }),
               title: el("div", {}) };
        if (!this.tracks.size) this.container.replaceChildren();
        this.tracks.set(f.track_id, tr);
        this.container.append(el("div", { class: "timeline", "data-track": String(f.track_id) },
          tr.title, tr.canvas, tr.legend));
      }
      tr.points.push([t, f.probabilities]);
      if (this.windowS) while (tr.points.length && tr.points[0][0] < t - this.windowS) tr.points.shift();
    }
  }
  draw() {
    for (const [id, tr] of this.tracks) {
      const ctx = tr.canvas.getContext("2d"), W = tr.canvas.width, H = tr.canvas.height;
      ctx.clearRect(0, 0, W, H);
      if (!tr.points.length) continue;
      const sums = {};
      for (const [, p] of tr.points) for (const [k, v] of Object.entries(p)) sums[k] = (sums[k] || 0) + v;
      const top = Object.entries(sums).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k]) => k);
      const t0 = tr.points[0][0], t1 = Math.max(tr.points[tr.points.length - 1][0], t0 + 1e-3);
      const x = (t) => 30 + (W - 40) * (t - t0) / (t1 - t0), y = (p) => 10 + (H - 30) * (1 - p);
      ctx.strokeStyle = "rgba(128,128,128,.35)";
      ctx.fillStyle = "rgba(128,128,128,.9)";
      ctx.lineWidth = 1;
      ctx.font = "18px system-ui, sans-serif";
      for (const p of [0, 0.5, 1]) {
        ctx.beginPath(); ctx.moveTo(30, y(p)); ctx.lineTo(W - 10, y(p)); ctx.stroke();
        ctx.fillText(String(p), 0, y(p) + 6);
      }
      ctx.fillText(`${t0.toFixed(1)} s`, 30, H - 2);
      ctx.fillText(`${t1.toFixed(1)} s`, W - 80, H - 2);
      ctx.lineWidth = 3;
      for (const k of top) {
        ctx.strokeStyle = color(k);
        ctx.beginPath();
        tr.points.forEach(([t, p], i) => (i ? ctx.lineTo(x(t), y(p[k])) : ctx.moveTo(x(t), y(p[k]))));
        ctx.stroke();
      }
      const last = tr.points[tr.points.length - 1][1];
      const now = topProbs(last, 1)[0];
      tr.title.textContent = `Track ${id}: ${now[0]} ${pct(now[1])} now · ${tr.points.length} frames`;
      tr.legend.replaceChildren(...top.map((k) => el("span", { style: `--c:${color(k)}` }, k)));
    }
  }
}

// ------------------------------------------------------------------------------------ webcam
function wsUrl(params) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  return `${proto}://${location.host}/ws/stream?${new URLSearchParams(params)}`;
}

async function startWebcam() {
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no camera access to this page: open it over https or from localhost.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    showError(`Could not open the webcam (${e.name}): ${e.name === "NotAllowedError"
      ? "allow camera access for this page in the browser." : e.message}`);
    return;
  }
  const video = el("video", { muted: true, playsInline: true });
  video.srcObject = stream;
  await video.play();
  const cam = { stream, video, faces: [], frames: [], waiting: false, timer: null, anim: null,
                timelines: new Timelines($("cam-timelines"), 30), sent: 0, t0: performance.now() };
  state.webcam = cam;
  const params = { ...choice(), smooth: $("smooth").value };
  cam.ws = new WebSocket(wsUrl(params));
  cam.ws.binaryType = "arraybuffer";
  cam.ws.onmessage = (ev) => {
    const r = JSON.parse(ev.data);
    cam.waiting = false;
    if (r.error && r.frame === undefined) { showError(`The server refused the stream: ${r.error}`); return; }
    if (r.busy) { $("cam-status").textContent = "Server busy: frame dropped."; return; }
    if (r.error) { $("cam-status").textContent = r.error; return; }
    cam.faces = r.faces;
    cam.frameWidth = r.width;
    cam.frames.push(r);
    if (cam.frames.length > 3000) cam.frames.shift();
    cam.timelines.add(r.time_s, r.faces);
    cam.timelines.draw();
    $("cam-faces").replaceChildren(...r.faces.map(faceCard));
    const fps = cam.frames.length / ((performance.now() - cam.t0) / 1000);
    $("cam-status").textContent = `${r.faces.length} face(s) · ${fps.toFixed(1)} frames/s analysed`;
    updateDownload();
  };
  cam.ws.onclose = (ev) => {
    if (state.webcam === cam && ev.code !== 1000) showError(`The stream closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}).`);
    stopWebcam();
  };
  cam.ws.onopen = () => {
    const send = () => {
      if (cam.waiting || cam.ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
      const s = Math.min(1, 640 / video.videoWidth);
      const c = el("canvas", { width: Math.round(video.videoWidth * s), height: Math.round(video.videoHeight * s) });
      c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
      cam.waiting = true;
      c.toBlob((b) => b.arrayBuffer().then((buf) => cam.ws.send(buf)), "image/jpeg", 0.8);
    };
    cam.timer = setInterval(send, 1000 / Math.max(1, Math.min(15, Number($("cam-fps").value) || 4)));
  };
  const canvas = $("cam-canvas");
  const paint = () => {
    if (state.webcam !== cam) return;
    canvas.width = video.videoWidth || 640;
    canvas.height = video.videoHeight || 480;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(video, 0, 0);
    drawFaces(ctx, cam.faces, cam.frameWidth ? canvas.width / cam.frameWidth : 1);
    cam.anim = requestAnimationFrame(paint);
  };
  paint();
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
}

function stopWebcam() {
  const cam = state.webcam;
  if (!cam) return;
  clearInterval(cam.timer);
  cancelAnimationFrame(cam.anim);
  cam.stream.getTracks().forEach((t) => t.stop());
  if (cam.ws.readyState <= WebSocket.OPEN) cam.ws.close(1000);
  state.webcam = null;
  state.webcamFrames = cam.frames;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
}

// ------------------------------------------------------------------------------------ video
async function analyseVideo(file) {
  if (!file) return;
  clearError();
  const lim = state.health.limits;
  if (file.size > lim.max_video_bytes) {
    showError(`'${file.name}' is ${(file.size / 1048576).toFixed(1)} MB, over the server's ` +
      `${(lim.max_video_bytes / 1048576).toFixed(0)} MB video limit; cut or recompress it.`);
    return;
  }
  const player = $("video-player");
  player.src = URL.createObjectURL(file);
  player.hidden = false;
  $("video-status").textContent = `Analysing ${file.name} (${(file.size / 1048576).toFixed(1)} MB)…`;
  document.body.dataset.state = "busy";
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const res = await postForm("/predict/video", form, { ...choice(), stride: $("stride").value, smooth: $("smooth").value });
    state.video = res;
    const tl = new Timelines($("video-timelines"), null);
    res.frames.forEach((fr) => tl.add(fr.time_s ?? fr.frame / 25, fr.faces));
    tl.draw();
    const rows = res.tracks.map((t) => el("tr", {},
      el("td", {}, `#${t.track_id}`), el("td", {}, String(t.frames)), el("td", {}, t.dominant_expression),
      el("td", {}, topProbs(t.mean_probabilities, 3).map(([k, v]) => `${k} ${pct(v)}`).join(", ")),
      el("td", {}, t.yaw_range ? `${deg(t.yaw_range[0])} to ${deg(t.yaw_range[1])}` : "?")));
    $("video-tracks").replaceChildren(el("h2", {}, `${res.tracks.length} face track(s)`), el("table", {},
      el("tr", {}, ...["track", "frames", "mostly", "mean probabilities", "yaw"].map((h) => el("th", {}, h))), ...rows));
    $("video-status").textContent = `${res.frames.length} frames analysed in ${(res.time_ms / 1000).toFixed(1)} s` +
      (res.note ? `. Note: ${res.note}` : ".") + " Play the video to see the faces.";
    document.body.dataset.state = "done";
  } catch (e) {
    failed(e.message, "video-status");
  }
  updateDownload();
}

function paintVideo() {
  const player = $("video-player"), canvas = $("video-canvas"), res = state.video;
  if (state.mode === "video" && res && player.videoWidth) {
    const r = player.getBoundingClientRect();
    if (canvas.width !== Math.round(r.width)) { canvas.width = Math.round(r.width); canvas.height = Math.round(r.height); }
    canvas.style.width = `${r.width}px`;
    canvas.style.height = `${r.height}px`;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    let best = null;  // the last analysed frame at or before the playback time
    for (const fr of res.frames) if ((fr.time_s ?? fr.frame / 25) <= player.currentTime + 1e-3) best = fr;
    if (best && best.width) {
      const vr = Math.min(r.width / player.videoWidth, r.height / player.videoHeight);
      ctx.save();
      ctx.translate((r.width - player.videoWidth * vr) / 2, (r.height - player.videoHeight * vr) / 2);
      drawFaces(ctx, best.faces, vr * player.videoWidth / best.width);
      ctx.restore();
    }
  }
  requestAnimationFrame(paintVideo);
}

// ------------------------------------------------------------------------------------ shared
function currentResults() {
  if (state.mode === "photos") return state.photos.length ? state.photos : null;
  if (state.mode === "video") return state.video;
  const frames = state.webcam ? state.webcam.frames : state.webcamFrames;
  return frames && frames.length ? { frames } : null;
}
function updateDownload() { $("download").disabled = !currentResults(); }
function download() {
  const data = currentResults();
  if (!data) return;
  const a = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" })),
                      download: `robustfer-${state.mode}-${new Date().toISOString().replace(/[:.]/g, "-")}.json` });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function setMode(mode) {
  state.mode = mode;
  for (const b of document.querySelectorAll(".modes button")) b.classList.toggle("active", b.dataset.mode === mode);
  for (const s of document.querySelectorAll("section.mode")) s.hidden = s.id !== mode;
  document.querySelector(".for-track").hidden = mode === "photos";
  if (mode !== "webcam") stopWebcam();
  updateDownload();
}

async function init() {
  $("error-close").addEventListener("click", clearError);
  try {
    const resp = await fetch("/health");
    if (!resp.ok) throw new Error(await responseError(resp));
    state.health = await resp.json();
  } catch (e) {
    return failed(`Cannot reach the robustfer server: ${e.message}`);
  }
  const h = state.health;
  $("server").textContent = `v${h.version} · ${h.classes.length} expressions`;
  for (const [id, items, def] of [["model", h.models, h.model], ["detector", h.detectors, h.detector]]) {
    $(id).replaceChildren(...items.map((v) => el("option", { value: v, textContent: v, selected: v === def })));
  }
  $("smooth").addEventListener("input", () => { $("smooth-out").value = $("smooth").value; });
  for (const b of document.querySelectorAll(".modes button")) b.addEventListener("click", () => setMode(b.dataset.mode));
  $("download").addEventListener("click", download);
  $("cam-start").addEventListener("click", startWebcam);
  $("cam-stop").addEventListener("click", stopWebcam);
  $("video-input").addEventListener("change", (e) => analyseVideo(e.target.files[0]));
  setupPhotos();
  requestAnimationFrame(paintVideo);
  document.body.dataset.state = "ready";
  const params = new URLSearchParams(location.search);
  if (params.get("mode")) setMode(params.get("mode"));
  if (params.get("demo")) await analyseSamples(params.get("demo").split(","));
}

init();
