/* The page of `pvdetect serve`: pick an area on the map, run a job, follow it, see its plants.
 *
 * Every API call carries the server's token (Authorization: Bearer) when the server has one:
 * the page takes it from ?token= once (then drops it from the address) or asks for it, and
 * keeps it for the tab's session. Pictures and downloads are fetched with the token too and
 * shown from blob: addresses. Progress is polled once a second (EventSource cannot send an
 * Authorization header). There is no basemap: a job's own imagery is its background.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "pvdetect-token";
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    source: null,
    mode: "point",
    corner: null,
    jobId: null,
    timer: null,
    lastStatus: null,
    plants: [],
    sort: { key: "area_ha", desc: true },
    layers: null,
    control: null,
    blobs: [],
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ------------------------------------------------------------------ token and API

  function initToken() {
    const url = new URL(window.location.href);
    const given = url.searchParams.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
  }

  function showToken(show) {
    $("token-box").hidden = !show;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return body.message || JSON.stringify(body.detail);
    } catch (e) {
      return `${response.status} ${response.statusText}`;
    }
  }

  async function api(path, options = {}) {
    const headers = {};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await fetch("api/" + path, { method: options.method || "GET", headers, body });
    if (response.status === 401) {
      showToken(true);
      throw new ApiError(401, await errorText(response));
    }
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    return options.raw ? response : response.json();
  }

  function fileUrl(jobId, name) {
    return `jobs/${jobId}/files/` + name.split("/").map(encodeURIComponent).join("/");
  }

  async function blobUrl(jobId, name) {
    const response = await api(fileUrl(jobId, name), { raw: true });
    const url = URL.createObjectURL(await response.blob());
    state.blobs.push(url);
    return url;
  }

  // ------------------------------------------------------------------ map

  const map = L.map("map", { attributionControl: false, worldCopyJump: true }).setView([0, 0], 2);
  map.createPane("imagery").style.zIndex = 250;
  map.createPane("pvmask").style.zIndex = 350;
  L.control.scale({ imperial: false }).addTo(map);
  const coords = L.control({ position: "bottomright" });
  coords.onAdd = () => L.DomUtil.create("div", "coords");
  coords.addTo(map);
  map.on("mousemove", (e) => {
    coords.getContainer().textContent = `${e.latlng.lng.toFixed(5)}, ${e.latlng.lat.toFixed(5)}`;
  });

  const graticule = L.layerGroup().addTo(map);
  function drawGraticule() {
    graticule.clearLayers();
    const z = map.getZoom();
    const step = z < 3 ? 30 : z < 5 ? 10 : z < 7 ? 2 : z < 9 ? 0.5 : z < 11 ? 0.1 : 0.02;
    const b = map.getBounds();
    const style = { color: "#9aa", weight: 1, opacity: 0.5, interactive: false };
    const south = Math.max(-85, Math.floor(b.getSouth() / step) * step);
    const north = Math.min(85, Math.ceil(b.getNorth() / step) * step);
    const west = Math.floor(b.getWest() / step) * step;
    const east = Math.ceil(b.getEast() / step) * step;
    if ((north - south) / step > 200 || (east - west) / step > 200) return;
    for (let lat = south; lat <= north + 1e-9; lat += step) {
      graticule.addLayer(L.polyline([[lat, west], [lat, east]], style));
    }
    for (let lon = west; lon <= east + 1e-9; lon += step) {
      graticule.addLayer(L.polyline([[south, lon], [north, lon]], style));
    }
  }
  map.on("moveend", drawGraticule);
  drawGraticule();

  const footprints = L.layerGroup().addTo(map);
  const selection = L.layerGroup().addTo(map);

  // ------------------------------------------------------------------ the area form

  function num(id) {
    const v = $(id).value.trim();
    return v === "" ? NaN : Number(v);
  }

  function setMode(mode) {
    state.mode = mode;
    state.corner = null;
    $("point-fields").hidden = mode !== "point";
    $("bbox-fields").hidden = mode !== "bbox";
    $("mode-hint").textContent =
      mode === "point" ? "Click the map to set the centre." : "Click two opposite corners on the map.";
    drawSelection();
  }

  function pointBox(lon, lat, wKm, hKm) {
    const dLat = hKm / 2 / 110.574;
    const dLon = wKm / 2 / (111.32 * Math.max(0.01, Math.cos((lat * Math.PI) / 180)));
    return [[lat - dLat, lon - dLon], [lat + dLat, lon + dLon]];
  }

  function drawSelection() {
    selection.clearLayers();
    let box = null;
    if (state.mode === "point") {
      const [lon, lat, w, h] = [num("lon"), num("lat"), num("width-km"), num("height-km")];
      if (isFinite(lon) && isFinite(lat)) {
        selection.addLayer(L.circleMarker([lat, lon], { radius: 4, color: "#e63946", interactive: false }));
        if (w > 0 && h > 0) box = pointBox(lon, lat, w, h);
      }
    } else {
      const [w, s, e, n] = ["west", "south", "east", "north"].map(num);
      if ([w, s, e, n].every(isFinite)) box = [[s, w], [n, e]];
      if (state.corner) {
        selection.addLayer(L.circleMarker(state.corner, { radius: 4, color: "#e63946", interactive: false }));
      }
    }
    if (box) {
      selection.addLayer(
        L.rectangle(box, { color: "#e63946", weight: 2, fill: false, dashArray: "6 4", interactive: false })
      );
    }
  }

  function onMapClick(e) {
    const lon = Number(e.latlng.wrap().lng.toFixed(6));
    const lat = Number(e.latlng.lat.toFixed(6));
    if (state.mode === "point") {
      $("lon").value = lon;
      $("lat").value = lat;
    } else if (!state.corner) {
      state.corner = [lat, lon];
    } else {
      const [lat0, lon0] = state.corner;
      $("west").value = Math.min(lon0, lon);
      $("east").value = Math.max(lon0, lon);
      $("south").value = Math.min(lat0, lat);
      $("north").value = Math.max(lat0, lat);
      state.corner = null;
    }
    drawSelection();
  }
  map.on("click", onMapClick);

  function requestBody() {
    let area;
    if (state.mode === "point") {
      area = { type: "point", lon: num("lon"), lat: num("lat"), width_km: num("width-km"), height_km: num("height-km") };
    } else {
      area = { type: "bbox", west: num("west"), south: num("south"), east: num("east"), north: num("north") };
    }
    for (const [k, v] of Object.entries(area)) {
      if (k !== "type" && !isFinite(v)) throw new Error(`${k.replace("_", " ")}: give a number (click the map)`);
    }
    const body = { area };
    if (state.source && state.source.needs_dates) {
      body.start = $("start").value || null;
      body.end = $("end").value || null;
    }
    const label = $("label").value.trim();
    if (label) body.label = label;
    return body;
  }

  async function run() {
    $("form-error").textContent = "";
    let body;
    try {
      body = requestBody();
    } catch (e) {
      $("form-error").textContent = e.message;
      return;
    }
    try {
      const info = await api("jobs", { method: "POST", json: body });
      await refreshJobs();
      openJob(info.id);
    } catch (e) {
      $("form-error").textContent = e.message;
    }
  }

  // ------------------------------------------------------------------ one job

  function fmtEta(s) {
    if (s === null || s === undefined) return "";
    const m = Math.floor(s / 60);
    const sec = Math.round(s % 60);
    return `about ${m}:${String(sec).padStart(2, "0")} left`;
  }

  function clearResult() {
    if (state.layers) {
      for (const layer of Object.values(state.layers)) map.removeLayer(layer);
    }
    if (state.control) map.removeControl(state.control);
    state.layers = null;
    state.control = null;
    for (const u of state.blobs) URL.revokeObjectURL(u);
    state.blobs = [];
    state.plants = [];
    $("results").hidden = true;
    $("plants").querySelector("tbody").innerHTML = "";
    $("downloads").innerHTML = "";
  }

  function openJob(id) {
    if (state.timer) clearTimeout(state.timer);
    clearResult();
    state.jobId = id;
    state.lastStatus = null;
    $("job").hidden = false;
    $("job-error").textContent = "";
    for (const li of $("jobs").children) li.classList.toggle("current", li.dataset.id === id);
    poll();
  }

  async function poll() {
    const id = state.jobId;
    let info;
    try {
      info = await api(`jobs/${id}`);
    } catch (e) {
      $("job-error").textContent = e.message;
      return;
    }
    if (id !== state.jobId) return;
    renderProgress(info);
    const changed = info.status !== state.lastStatus;
    state.lastStatus = info.status;
    if (info.status === "queued" || info.status === "running") {
      state.timer = setTimeout(poll, 1000);
      if (changed) refreshJobs();
      return;
    }
    if (changed) refreshJobs();
    if (info.status === "done") await showResult(info);
  }

  function renderProgress(info) {
    $("job-title").textContent = info.label || `Job ${info.id}`;
    const p = info.progress;
    const active = info.status === "queued" || info.status === "running";
    $("progress").hidden = !active;
    $("cancel").hidden = !active;
    if (p) {
      $("stage").textContent = p.stage;
      $("counts").textContent = p.total ? `${p.done || 0} / ${p.total} ${p.unit || ""}` : "";
      $("bar").max = p.total || 1;
      $("bar").value = p.total ? p.done || 0 : 0;
      $("eta").textContent = fmtEta(p.eta_s);
      $("message").textContent = p.message || "";
    }
    if (info.status === "failed") $("job-error").textContent = "Failed: " + (info.error || "");
    else if (info.status === "cancelled") $("job-error").textContent = "Cancelled.";
    else $("job-error").textContent = "";
  }

  function popupHtml(p) {
    const prob = (v) => (typeof v === "number" ? v.toFixed(3) : "n/a");
    const div = document.createElement("div");
    div.className = "plant-popup";
    div.innerHTML =
      `<b>Plant ${Number(p.id)}</b><br>Area: <span class="area">${Number(p.area_ha).toFixed(2)} ha</span>` +
      `<br>Mean probability: <span class="prob">${prob(p.mean_prob)}</span><br>Max probability: ${prob(p.max_prob)}`;
    return div;
  }

  function humanBytes(n) {
    const units = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  async function download(jobId, file) {
    try {
      const url = await blobUrl(jobId, file.name);
      const a = document.createElement("a");
      a.href = url;
      a.download = file.name.split("/").pop();
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (e) {
      $("job-error").textContent = e.message;
    }
  }

  async function showResult(info) {
    const id = info.id;
    const result = info.result;
    const [imagery, mask, geojson] = await Promise.all([
      blobUrl(id, result.layers.composite.name),
      blobUrl(id, result.layers.mask.name),
      api(fileUrl(id, result.plants_geojson)),
    ]);
    if (id !== state.jobId) return;
    const layers = {
      Imagery: L.imageOverlay(imagery, result.layers.composite.bounds, { pane: "imagery" }),
      "PV mask": L.imageOverlay(mask, result.layers.mask.bounds, { pane: "pvmask", opacity: 0.85 }),
      Plants: L.geoJSON(geojson, {
        style: { color: "#ff00ff", weight: 2, fillOpacity: 0.05, className: "pv-plant" },
        bubblingMouseEvents: false,
        onEachFeature: (feature, layer) => {
          layer.bindPopup(() => popupHtml(feature.properties));
          feature.properties._layer = layer;
        },
      }),
    };
    for (const layer of Object.values(layers)) layer.addTo(map);
    state.layers = layers;
    state.control = L.control.layers(null, layers, { collapsed: false }).addTo(map);
    map.fitBounds(result.layers.composite.bounds);
    $("totals").textContent =
      `${result.plants} plant(s), ${result.total_ha.toFixed(2)} ha in all ` +
      `(${result.area.width_km.toFixed(1)} x ${result.area.height_km.toFixed(1)} km, ${result.seconds.toFixed(0)} s)`;
    const list = $("downloads");
    const files = result.files;
    for (const file of files) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${file.label} (${humanBytes(file.bytes)})`;
      button.dataset.name = file.name;
      button.addEventListener("click", () => download(id, file));
      li.appendChild(button);
      list.appendChild(li);
    }
    const open = document.createElement("li");
    const openButton = document.createElement("button");
    openButton.type = "button";
    openButton.textContent = "Open the report in a new tab";
    openButton.addEventListener("click", async () => {
      const win = window.open("", "_blank");
      const url = await blobUrl(id, result.report);
      if (win) win.location.href = url;
    });
    open.appendChild(openButton);
    list.appendChild(open);
    state.plants = geojson.features.map((f) => f.properties);
    renderTable();
    $("results").hidden = false;
  }

  function renderTable() {
    const { key, desc } = state.sort;
    const rows = [...state.plants].sort((a, b) => {
      const x = a[key] ?? -Infinity;
      const y = b[key] ?? -Infinity;
      return desc ? y - x : x - y;
    });
    const tbody = $("plants").querySelector("tbody");
    tbody.innerHTML = "";
    const fmt = (v, d) => (typeof v === "number" ? v.toFixed(d) : "");
    for (const p of rows) {
      const tr = document.createElement("tr");
      tr.dataset.id = p.id;
      for (const [v, d] of [[p.id, 0], [p.area_ha, 2], [p.mean_prob, 3], [p.max_prob, 3]]) {
        const td = document.createElement("td");
        td.textContent = fmt(v, d);
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => {
        for (const other of tbody.children) other.classList.toggle("selected", other === tr);
        const layer = p._layer;
        if (layer) {
          map.fitBounds(layer.getBounds(), { maxZoom: map.getZoom() });
          layer.openPopup();
        }
      });
      tbody.appendChild(tr);
    }
    for (const b of $("plants").querySelectorAll("th button")) {
      b.classList.toggle("asc", b.dataset.key === key && !desc);
      b.classList.toggle("desc", b.dataset.key === key && desc);
    }
  }

  for (const b of document.querySelectorAll("#plants th button")) {
    b.addEventListener("click", () => {
      const key = b.dataset.key;
      state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : key !== "id" };
      renderTable();
    });
  }

  async function cancel() {
    try {
      await api(`jobs/${state.jobId}/cancel`, { method: "POST" });
    } catch (e) {
      $("job-error").textContent = e.message;
    }
  }

  // ------------------------------------------------------------------ job list and start

  async function refreshJobs() {
    let list;
    try {
      list = await api("jobs");
    } catch (e) {
      return;
    }
    const ul = $("jobs");
    ul.innerHTML = "";
    for (const job of list.jobs) {
      const li = document.createElement("li");
      li.dataset.id = job.id;
      li.classList.toggle("current", job.id === state.jobId);
      const when = job.created.replace("T", " ").slice(0, 16);
      const found = job.result ? ` - ${job.result.plants} plant(s), ${job.result.total_ha.toFixed(1)} ha` : "";
      const name = document.createElement("span");
      name.textContent = `${job.label || job.id} `;
      const status = document.createElement("span");
      status.className = `status ${job.status}`;
      status.textContent = job.status;
      const rest = document.createElement("span");
      rest.className = "muted";
      rest.textContent = ` ${when}${found}`;
      li.append(name, status, rest);
      li.addEventListener("click", () => openJob(job.id));
      ul.appendChild(li);
    }
    return list;
  }

  async function start() {
    try {
      state.source = await api("source");
    } catch (e) {
      $("form-error").textContent = e.status === 401 ? "" : e.message;
      return;
    }
    showToken(false);
    const src = state.source;
    $("source-label").textContent = `${src.label} - model ${src.model.arch}/${src.model.encoder} - at most ${src.max_km} km`;
    $("date-fields").hidden = !src.needs_dates;
    if (src.needs_dates && !$("start").value) {
      const end = new Date();
      const begin = new Date(end.getTime() - 90 * 86400000);
      $("start").value = begin.toISOString().slice(0, 10);
      $("end").value = end.toISOString().slice(0, 10);
    }
    footprints.clearLayers();
    for (const scene of src.scenes) {
      const [w, s, e, n] = scene.bbox;
      footprints.addLayer(
        L.rectangle([[s, w], [n, e]], { color: "#457b9d", weight: 1, dashArray: "4 3", fillOpacity: 0.04 })
          .bindTooltip(scene.name)
      );
    }
    const list = await refreshJobs();
    if (src.scenes.length) {
      map.fitBounds(footprints.getLayers().map((l) => l.getBounds()).reduce((a, b) => a.extend(b)));
    } else if (list && list.jobs.length) {
      const last = list.jobs.find((j) => j.result);
      if (last) map.fitBounds(last.result.layers.composite.bounds);
    }
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  for (const id of ["lon", "lat", "width-km", "height-km", "west", "south", "east", "north"]) {
    $(id).addEventListener("input", drawSelection);
  }
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);

  initToken();
  window.pvdetect = { map, state, openJob };
  start();
})();
