// geoedge demo dashboard: polls /api/state each second and draws the map and the cards.
// Plain JavaScript, no build step; the only library is the vendored topojson-client.
"use strict";

const W = 960, H = 440, LAT_TOP = 84, LAT_BOTTOM = -60;  // the map's crop (no Antarctica)
const SVG = "http://www.w3.org/2000/svg";

function project(lon, lat) {  // equirectangular, cropped to LAT_TOP..LAT_BOTTOM
  return [(lon + 180) / 360 * W, (LAT_TOP - lat) / (LAT_TOP - LAT_BOTTOM) * H];
}

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- the land, from the vendored Natural Earth TopoJSON ------------------------------------
async function drawLand() {
  const response = await fetch("/static/vendor/land-110m.json");
  const topology = await response.json();
  const land = topojson.feature(topology, topology.objects.land);
  const parts = [];
  for (const feature of land.features || [land]) {
    const g = feature.geometry;
    const polygons = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
    for (const polygon of polygons) {
      for (const ring of polygon) {
        let d = "", last = null;
        for (const [lon, lat] of ring) {
          const [x, y] = project(lon, lat);
          // a jump across the antimeridian starts a new subpath instead of a line across
          d += (last === null || Math.abs(x - last) > W / 2 ? "M" : "L") +
               x.toFixed(1) + "," + y.toFixed(1);
          last = x;
        }
        parts.push(d + "Z");
      }
    }
  }
  document.getElementById("land").appendChild(el("svg:path", {d: parts.join("")}));
}

// -- map markers ---------------------------------------------------------------------------
const markers = {};  // region name -> {ring, label, edges: {name: circle}}

function markerFor(region) {
  if (markers[region.name]) return markers[region.name];
  const [x, y] = project(region.longitude, region.latitude);
  const g = el("svg:g", {id: "marker-" + region.name, class: "marker"});
  const ring = el("svg:circle", {cx: x, cy: y, r: 17, class: "region-ring"});
  g.appendChild(ring);
  const edges = {};
  region.edges.forEach((edge, i) => {
    const angle = (i / region.edges.length) * 2 * Math.PI - Math.PI / 2;
    const c = el("svg:circle", {cx: x + 8 * Math.cos(angle), cy: y + 8 * Math.sin(angle),
                                r: 6, class: "edge-dot"});
    c.appendChild(el("svg:title", {}, edge.name));
    g.appendChild(c);
    edges[edge.name] = c;
  });
  const label = el("svg:text", {x: x + 22, y: y + 5, class: "region-label"}, region.name);
  g.appendChild(label);
  document.getElementById("markers").appendChild(g);
  markers[region.name] = {ring, label, edges};
  return markers[region.name];
}

function drawFlows(state) {
  const flows = document.getElementById("flows");
  flows.replaceChildren();
  const where = Object.fromEntries(state.regions.map(r => [r.name, r]));
  for (const region of state.regions) {
    const dns = region.dns;
    if (!dns || dns.latitude === null || dns.longitude === null) continue;
    const [cx, cy] = project(dns.longitude, dns.latitude);
    const target = where[dns.region];
    if (target) {
      const [tx, ty] = project(target.longitude, target.latitude);
      const mx = (cx + tx) / 2, my = Math.min(cy, ty) - 30 - Math.abs(tx - cx) / 8;
      flows.appendChild(el("svg:path", {
        d: `M${cx},${cy} Q${mx},${my} ${tx},${ty}`,
        class: "flow" + (dns.region !== region.name ? " moved" : "")}));
    }
    const dot = el("svg:circle", {cx, cy, r: 4, class: "client-dot"});
    dot.appendChild(el("svg:title", {}, `sample client ${dns.client} (${dns.country || "?"})`));
    flows.appendChild(dot);
  }
}

// -- cards ---------------------------------------------------------------------------------
const cards = {};  // region name -> {root, state, dns, rows: {edge: {...}}}

function button(command, target) {
  const b = el("button", {type: "button", class: command, "data-command": command,
                          "data-target": target}, command);
  b.addEventListener("click", () => control(command, target));
  return b;
}

function spark(values) {
  const svg = el("svg:svg", {class: "spark", viewBox: "0 0 80 20", preserveAspectRatio: "none"});
  const line = el("svg:polyline", {points: ""});
  svg.appendChild(line);
  svg.update = vs => {
    const max = Math.max(1, ...vs);
    line.setAttribute("points", vs.map((v, i) =>
      `${(i / Math.max(1, vs.length - 1)) * 80},${20 - (v / max) * 18 - 1}`).join(" "));
  };
  svg.update(values);
  return svg;
}

function cardFor(region) {
  if (cards[region.name]) return cards[region.name];
  const root = el("div", {id: "region-" + region.name, class: "region"});
  const h = el("h2", {}, region.name);
  const right = el("span");
  const state = el("span", {class: "state"});
  right.append(state, " ", button("stop", region.name), " ", button("start", region.name));
  h.appendChild(right);
  const dns = el("div", {class: "dns"});
  const table = el("table");
  table.appendChild(el("thead")).appendChild(el("tr")).append(
    ...["edge", "state", "req/s", "hit ratio", "", ""].map(t => el("th", {}, t)));
  const body = table.appendChild(el("tbody"));
  const rows = {};
  for (const edge of region.edges) {
    const tr = el("tr", {id: "edge-" + edge.name});
    const cells = [el("td", {}, edge.name), el("td"), el("td", {class: "num"}),
                   el("td", {class: "num"}), el("td"), el("td")];
    const sp = spark(edge.history);
    cells[4].appendChild(sp);
    cells[5].append(button("stop", edge.name), " ", button("start", edge.name));
    tr.append(...cells);
    body.appendChild(tr);
    rows[edge.name] = {tr, state: cells[1], rps: cells[2], ratio: cells[3], spark: sp};
  }
  root.append(h, dns, table);
  document.getElementById("regions").appendChild(root);
  cards[region.name] = {root, state, dns, rows};
  return cards[region.name];
}

function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(0) + " %"; }

function render(state) {
  for (const region of state.regions) {
    const card = cardFor(region), marker = markerFor(region);
    card.root.className = "region " + region.state;
    card.root.dataset.state = region.state;
    card.state.textContent = region.state;
    marker.ring.setAttribute("class", "region-ring " + region.state);
    const dns = region.dns;
    let text = "GeoDNS: no sample client for this region";
    if (dns) {
      text = `clients like ${dns.client} (${dns.country || "?"}) -> ` +
        (dns.error ? `no answer (${dns.error})` :
          `${dns.region || "?"}: ${dns.answer.join(" ") || "-"}` +
          (dns.scope !== null ? `, scope /${dns.scope}` : ""));
    }
    if (region.dns_qps !== null) text += ` · ${region.dns_qps} queries/s answered here`;
    card.dns.textContent = text;
    for (const edge of region.edges) {
      const row = card.rows[edge.name];
      row.tr.dataset.state = edge.state;
      row.state.replaceChildren(el("span", {class: "dot " + edge.state}), " " + edge.state);
      row.rps.textContent = edge.rps.toFixed(1);
      row.ratio.textContent = pct(edge.hit_ratio);
      row.spark.update(edge.history);
      marker.edges[edge.name].setAttribute("class", "edge-dot " + edge.state);
    }
  }
  drawFlows(state);
  const tbody = document.querySelector("#origins tbody");
  tbody.replaceChildren(...state.origins.map(o => {
    const tr = el("tr", {id: "origin-" + o.name});
    const st = o.up ? "up" : "down";
    tr.append(el("td", {}, o.name), el("td"), el("td", {class: "num"}, o.rps.toFixed(1)),
              el("td"));
    tr.children[1].append(el("span", {class: "dot " + st}), " " + st);
    tr.children[3].appendChild(spark(o.history));
    return tr;
  }));
  document.getElementById("messages").replaceChildren(
    ...state.messages.map(m => el("li", {}, m)));
  const when = new Date(state.updated * 1000).toLocaleTimeString();
  document.getElementById("status").textContent =
    `GeoDNS ${state.dns_server} · ${state.name} · updated ${when}` +
    (state.dns_metrics ? ` · metrics ${state.dns_metrics}` : "");
}

// -- actions -------------------------------------------------------------------------------
async function control(command, target) {
  const response = await fetch("/api/control", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({command, target})});
  const doc = await response.json();
  if (!response.ok) document.getElementById("status").textContent = doc.error;
}

async function explain(event) {
  event.preventDefault();
  const ip = document.getElementById("explain-ip").value.trim();
  const out = document.getElementById("explain-result");
  out.textContent = "asking GeoDNS and geoedge explain...";
  const response = await fetch("/api/explain?ip=" + encodeURIComponent(ip));
  const doc = await response.json();
  if (!response.ok) { out.textContent = doc.error; return; }
  out.replaceChildren(
    el("div", {class: "big", id: "explain-region"},
       `${doc.ip} -> ${doc.region || "?"}` + (doc.scope !== null ? ` (scope /${doc.scope})` : "")),
    el("div", {}, doc.answer.length ? "GeoDNS answers now: " + doc.answer.join(" ")
                                    : "GeoDNS: " + (doc.dns_error || "no answer")),
    el("pre", {}, doc.lines.join("\n")));
}

let failures = 0;
async function poll() {
  try {
    const response = await fetch("/api/state", {cache: "no-store"});
    render(await response.json());
    failures = 0;
  } catch (err) {
    failures += 1;
    document.getElementById("status").textContent = "the demo is not answering";
  }
  setTimeout(poll, 1000);
}

document.getElementById("explain-form").addEventListener("submit", explain);
drawLand().finally(poll);
