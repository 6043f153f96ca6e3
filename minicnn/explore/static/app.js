// minicnn explore: the page's logic. Every picture comes from this server's /api/ (JSON, base64 PNGs).
"use strict";

const METHOD_IDEAS = {
  saliency: "Saliency (Simonyan et al. 2014): |d score / d pixel|, the largest over the colour channels: the pixels whose change moves the class score most.",
  guided_backprop: "Guided backpropagation (Springenberg et al. 2015): the gradient, passed back only through positive activations and positive gradients; grey is 0.",
  grad_cam: "Grad-CAM (Selvaraju et al. 2017): a layer's channels weighted by the mean gradient of the class score; where the features vote for the class.",
  occlusion: "Occlusion (Zeiler & Fergus 2014): the drop of the class probability when a grey square covers each place; bright = covering it hurts the class.",
};

const state = { info: null, image: null, seq: {} };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

// One request per panel at a time: a later request makes an earlier answer stale (it is dropped).
async function api(panel, url, options) {
  const seq = (state.seq[panel] || 0) + 1;
  state.seq[panel] = seq;
  document.body.dataset.busy = String(Number(document.body.dataset.busy || 0) + 1);
  try {
    const response = await fetch(url, options);
    const data = await response.json();
    if (!response.ok) {
      setStatus(data.error || ("error " + response.status), true);
      return null;
    }
    return state.seq[panel] === seq ? data : null;
  } catch (err) {
    setStatus("the server did not answer: " + err.message, true);
    return null;
  } finally {
    document.body.dataset.busy = String(Number(document.body.dataset.busy) - 1);
  }
}

function bars(list, items) {
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.class;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(1, Math.round(160 * item.p)) + "px";
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = (100 * item.p).toFixed(1) + "%";
    li.append(name, bar, p);
    list.append(li);
  }
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.append(o);
}

function addThumb(item, before) {
  const img = document.createElement("img");
  img.src = item.png;
  img.className = "thumb pixelated";
  img.dataset.id = item.id;
  img.alt = item.caption;
  img.title = item.caption + (item.label ? " (" + item.label + ")" : "");
  img.addEventListener("click", () => select(item.id));
  if (before) $("gallery").prepend(img); else $("gallery").append(img);
}

async function select(id) {
  state.image = id;
  for (const t of document.querySelectorAll("#gallery img")) t.classList.toggle("selected", t.dataset.id === id);
  setStatus("Image " + id + " selected.");
  await Promise.all([predict(), activations(), explain(), attack()]);
}

async function predict() {
  const id = state.image;
  const data = await api("predict", "/api/predict?image=" + encodeURIComponent(id));
  if (!data) return;
  $("image").src = data.png;
  $("image-caption").textContent = data.caption + (data.label ? ", true class: " + data.label : "");
  bars($("top5"), data.top5);
  $("top5").dataset.key = id;
}

async function activations() {
  const id = state.image, layer = $("layer").value;
  const data = await api("activations", "/api/activations?image=" + encodeURIComponent(id) + "&layer=" + encodeURIComponent(layer));
  if (!data) return;
  const box = $("channels");
  box.replaceChildren();
  data.channels.forEach((c, i) => {
    const img = document.createElement("img");
    img.src = c.png;
    img.className = "channel pixelated";
    img.dataset.channel = String(i);
    img.title = "channel " + i;
    img.addEventListener("click", () => {
      for (const other of box.querySelectorAll("img")) other.classList.remove("selected");
      img.classList.add("selected");
      $("channel-big").src = c.png;
      $("channel-caption").textContent = layer + ", channel " + i + ": values " + c.min.toFixed(3) + " to " + c.max.toFixed(3);
      $("channel-big").dataset.key = id + ":" + layer + ":" + i;
    });
    box.append(img);
  });
  const s = data.shape;
  $("layer-info").textContent = s[0] + " channels of " + s[1] + "x" + s[2] + (data.shown < s[0] ? " (first " + data.shown + " shown)" : "") +
    "; values " + data.min.toFixed(3) + " (black) to " + data.max.toFixed(3) + " (white)";
  box.dataset.key = id + ":" + layer;
}

async function explain() {
  const id = state.image, method = $("method").value, cls = $("class").value;
  $("method-idea").textContent = METHOD_IDEAS[method];
  $("cam-layer-label").hidden = method !== "grad_cam";
  let url = "/api/explain?image=" + encodeURIComponent(id) + "&method=" + method + "&class=" + encodeURIComponent(cls);
  if (method === "grad_cam") url += "&layer=" + encodeURIComponent($("cam-layer").value);
  const data = await api("explain", url);
  if (!data) return;
  $("explain-map").src = data.map;
  $("explain-overlay").src = data.overlay;
  $("explain-info").textContent = method.replace("_", " ") + " for class " + data.class + (data.layer ? " at layer " + data.layer : "") +
    "; map values " + data.min.toPrecision(3) + " to " + data.max.toPrecision(3);
  $("explain-map").dataset.key = id + ":" + method + ":" + cls;
}

function epsText() {
  return $("eps").value + "/255";
}

async function attack() {
  const id = state.image, method = $("attack").value, k = $("eps").value;
  $("eps-label").textContent = epsText();
  const data = await api("attack", "/api/attack?image=" + encodeURIComponent(id) + "&method=" + method + "&eps=" + (Number(k) / 255));
  if (!data) return;
  $("adv-image").src = data.adversarial;
  $("perturbation").src = data.perturbation;
  $("perturbation-scale").textContent = data.magnified
    ? "perturbation, magnified x" + data.magnified.toFixed(1) + " (grey = 0; largest change " + (255 * data.linf).toFixed(1) + "/255)"
    : "perturbation: none (eps = 0)";
  const was = data.before.class + " (" + (100 * data.before.p).toFixed(1) + "%)";
  const now = data.top5[0].class + " (" + (100 * data.top5[0].p).toFixed(1) + "%)";
  $("adv-verdict").textContent = data.fooled ? "Fooled: " + was + " became " + now + "." : "Not fooled: still " + now + ", was " + was + ".";
  bars($("adv-top5"), data.top5);
  $("adv-image").dataset.key = id + ":" + method + ":" + k;
}

async function upload(file) {
  if (!file) return;
  setStatus("Uploading " + file.name + "...");
  const data = await api("upload", "/api/upload", { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
  if (!data) return;
  addThumb({ id: data.image, png: data.png, caption: data.caption, label: null }, true);
  await select(data.image);
  setStatus("Uploaded " + file.name + " (" + data.original[0] + "x" + data.original[1] + "), resized as described on the left.");
}

async function start() {
  const info = await api("info", "/api/info");
  if (!info) return;
  state.info = info;
  $("model-name").textContent = info.model + " (" + info.classes.length + " classes, input " + info.shape.join("x") + ")";
  $("resize-rule").textContent = "Uploads are " + info.resize_rule + ".";
  for (const l of info.layers) {
    option($("layer"), l.name, l.name + " (" + l.type + ", " + l.shape.join("x") + ")");
    option($("cam-layer"), l.name, l.name);
  }
  $("cam-layer").value = info.cam_layer;
  option($("class"), "", "the predicted class");
  info.classes.forEach((c, i) => option($("class"), String(i), c));
  $("eps").max = String(Math.min(16, Math.round(info.eps_max * 255)));
  for (const item of info.gallery) addThumb(item, false);
  $("layer").addEventListener("change", activations);
  $("method").addEventListener("change", explain);
  $("class").addEventListener("change", explain);
  $("cam-layer").addEventListener("change", explain);
  $("attack").addEventListener("change", attack);
  $("eps").addEventListener("input", () => { $("eps-label").textContent = epsText(); });
  $("eps").addEventListener("change", attack);
  $("upload").addEventListener("change", (e) => upload(e.target.files[0]));
  if (info.gallery.length) {
    await select(info.gallery[0].id);
  } else {
    setStatus("No test images were found: upload an image.");
  }
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
