// The page script, inlined into the report and the live page (no external resources). Everything it
// keeps (filters, page, highlighted step, smoothing, theme) lives in `S` and is re-applied after the live
// page swaps a leaf, so an update never closes a table or drops a highlight. The page reads fine without it.
export const PAGE_SCRIPT = String.raw`
(function () {
  var S = { filters: { finding: true, directive: true, checkpoint: false, ack: false }, page: 0, step: null, smooth: false, ckpt: false };
  var PAGE = 50, NS = 'http://www.w3.org/2000/svg';
  var root = document.documentElement;
  function $all(sel, el) { return Array.prototype.slice.call((el || document).querySelectorAll(sel)); }
  function box(svg) {
    var b = (svg.getAttribute('data-box') || '').split(',').map(Number), d = (svg.getAttribute('data-xd') || '').split(',').map(Number);
    return b.length === 4 && d.length === 2 ? { l: b[0], r: b[1], t: b[2], b: b[3], x0: d[0], x1: d[1] } : null;
  }
  // ---- highlight one step on every step chart ----
  function mark(svg) {
    var old = svg.querySelector('.hl'); if (old) old.remove();
    if (S.step === null || svg.hasAttribute('data-xlog') || !/^(tl-|logs-|rank-|knobs|lane-)/.test(svg.id)) return;
    var k = box(svg); if (!k || !(k.x1 > k.x0) || S.step < k.x0 || S.step > k.x1) return;
    var x = k.l + (S.step - k.x0) / (k.x1 - k.x0) * (k.r - k.l);
    var ln = document.createElementNS(NS, 'line');
    ln.setAttribute('class', 'hl'); ln.setAttribute('x1', x); ln.setAttribute('x2', x); ln.setAttribute('y1', k.t - 4); ln.setAttribute('y2', k.b);
    svg.appendChild(ln);
  }
  function highlight(step, fromTable) {
    S.step = step;
    $all('svg.chart').forEach(mark);
    if (!fromTable) { var pg = pageOf(step); if (pg >= 0) S.page = pg; }
    paginate();
    var st = document.getElementById('hl-status'); if (st) st.textContent = step === null ? '' : 'marked: step ' + step;
  }
  function fromHash() { var m = /^#step-(\d+)$/.exec(location.hash); if (m) highlight(Number(m[1]), false); }
  window.addEventListener('hashchange', fromHash);
  document.addEventListener('click', function (ev) {
    var a = ev.target.closest && ev.target.closest('[data-step]');
    if (a && a.tagName !== 'TR') { ev.preventDefault(); history.replaceState(null, '', '#step-' + a.getAttribute('data-step')); highlight(Number(a.getAttribute('data-step')), !!a.closest('#audit')); return; }
    var b = ev.target.closest && ev.target.closest('button[data-export]'); if (b) exportChart(b.getAttribute('data-export'), b.getAttribute('data-for'));
  });
  document.addEventListener('keydown', function (ev) {
    var a = ev.target.closest && ev.target.closest('svg a[data-step]');
    if (a && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); highlight(Number(a.getAttribute('data-step')), false); }
  });
  // ---- audit table: rows from the data chunks, filters, pages ----
  var rows = null;
  function allRows() {
    if (!rows) { rows = []; $all('script.audit-data').forEach(function (s) { try { rows = rows.concat(JSON.parse(s.textContent)); } catch (e) {} }); }
    return rows;
  }
  function visibleRows() { return allRows().filter(function (r) { return S.filters[r[1]] !== false; }); }
  function td(tr, text) { var c = document.createElement('td'); c.textContent = text; tr.appendChild(c); return c; }
  function paginate() {
    var tb = document.getElementById('audit-rows'); if (!tb) return;
    var vis = visibleRows(), pages = Math.max(1, Math.ceil(vis.length / PAGE));
    if (S.page >= pages) S.page = pages - 1;
    tb.textContent = '';
    vis.slice(S.page * PAGE, (S.page + 1) * PAGE).forEach(function (r) {
      var tr = document.createElement('tr');
      tr.className = 'k-' + r[1] + (r[2] ? (r[1] === 'finding' ? ' sev-' : ' act-') + r[2] : '') + (r[0] === S.step ? ' hlrow' : '');
      tr.setAttribute('data-step', r[0]);
      var a = document.createElement('a'); a.href = '#step-' + r[0]; a.setAttribute('data-step', r[0]); a.textContent = r[0];
      td(tr, '').appendChild(a); td(tr, r[1]); td(tr, r[2] ? r[2] + ' ' + r[3] : r[3]); td(tr, r[4]); td(tr, r[5]);
      var ev = td(tr, '');
      var evs = r[6] && typeof r[6] === 'object' ? JSON.stringify(r[6]) : ''; if (evs && evs !== '{}') { var d = document.createElement('details'), s = document.createElement('summary'), c = document.createElement('code'); s.textContent = 'evidence'; c.textContent = evs; d.appendChild(s); d.appendChild(c); ev.appendChild(d); }
      tb.appendChild(tr);
    });
    var p = document.querySelector('#audit .pager'); if (!p) return;
    p.innerHTML = '';
    function btn(label, to, dis) { var e = document.createElement('button'); e.textContent = label; e.disabled = dis; e.onclick = function () { S.page = to; paginate(); }; p.appendChild(e); }
    btn('« first', 0, S.page === 0); btn('‹ prev', S.page - 1, S.page === 0);
    var t = document.createElement('span'); t.className = 'pageinfo'; t.textContent = ' page ' + (S.page + 1) + ' of ' + pages + ' (' + vis.length + ' rows) '; p.appendChild(t);
    btn('next ›', S.page + 1, S.page >= pages - 1); btn('last »', pages - 1, S.page >= pages - 1);
  }
  function pageOf(step) { var vis = visibleRows(); for (var i = 0; i < vis.length; i++) if (vis[i][0] === step) return Math.floor(i / PAGE); return -1; }
  document.addEventListener('change', function (ev) {
    var f = ev.target.getAttribute && ev.target.getAttribute('data-filter');
    if (f) { S.filters[f] = ev.target.checked; S.page = 0; paginate(); }
    var o = ev.target.getAttribute && ev.target.getAttribute('data-opt');
    if (o === 'ckpt') { S.ckpt = ev.target.checked; root.classList.toggle('show-ckpt', S.ckpt); }
    if (o === 'smooth') { S.smooth = ev.target.checked; $all('svg.chart').forEach(smooth); }
    if (o === 'dark') { root.classList.toggle('dark', ev.target.checked); root.classList.toggle('light', !ev.target.checked); }
  });
  function syncFilters() { $all('[data-filter]').forEach(function (c) { c.checked = S.filters[c.getAttribute('data-filter')] !== false; }); }
  // ---- optional smoothing: a centred moving average over the drawn points (display space) ----
  function smooth(svg) {
    $all('path.smooth', svg).forEach(function (p) { p.remove(); });
    svg.classList.toggle('smoothed', S.smooth);
    if (!S.smooth || !/^(tl-|logs-|rank-)/.test(svg.id)) return;
    $all('path.series', svg).forEach(function (p) {
      var segs = (p.getAttribute('d') || '').split('M').filter(Boolean), out = '';
      segs.forEach(function (seg) {
        var pts = seg.split('L').map(function (s) { return s.split(',').map(Number); }), k = 3;
        pts.forEach(function (pt, i) {
          var a = Math.max(0, i - k), b = Math.min(pts.length - 1, i + k), y = 0;
          for (var j = a; j <= b; j++) y += pts[j][1];
          out += (i ? 'L' : 'M') + pt[0] + ',' + (y / (b - a + 1)).toFixed(1);
        });
      });
      var q = document.createElementNS(NS, 'path');
      q.setAttribute('class', 'smooth'); q.setAttribute('d', out); q.setAttribute('stroke', p.getAttribute('stroke')); q.setAttribute('fill', 'none'); q.setAttribute('stroke-width', '2');
      p.parentNode.insertBefore(q, p.nextSibling);
    });
  }
  // ---- export: CSV of the drawn points (axis values), SVG, PNG ----
  function invert(svg) {
    var b = svg.getAttribute('data-box').split(',').map(Number), xd = svg.getAttribute('data-xd').split(',').map(Number), yd = svg.getAttribute('data-yd').split(',').map(Number);
    var xl = svg.hasAttribute('data-xlog'), yl = svg.hasAttribute('data-ylog');
    function inv(px, p0, p1, d0, d1, log) { var t = (px - p0) / (p1 - p0); return log ? Math.exp(Math.log(d0) + t * (Math.log(d1) - Math.log(d0))) : d0 + t * (d1 - d0); }
    return function (x, y) { return [inv(x, b[0], b[1], xd[0], xd[1], xl), inv(y, b[3], b[2], yd[0], yd[1], yl)]; };
  }
  function csvOf(svg) {
    var f = invert(svg), lines = ['series,x,y'];
    $all('path.series', svg).forEach(function (p) {
      var name = (p.getAttribute('data-name') || '').replace(/"/g, '""');
      (p.getAttribute('d') || '').split(/[ML]/).filter(Boolean).forEach(function (s) { var v = s.split(',').map(Number), r = f(v[0], v[1]); lines.push('"' + name + '",' + +r[0].toPrecision(6) + ',' + +r[1].toPrecision(6)); });
    });
    return lines.join('\n') + '\n';
  }
  function svgText(svg) {
    var c = svg.cloneNode(true), st = document.createElementNS(NS, 'style');
    st.textContent = (document.querySelector('style') || {}).textContent || '';
    c.insertBefore(st, c.firstChild);
    return new XMLSerializer().serializeToString(c);
  }
  function save(name, blob) { var a = document.createElement('a'); a.href = URL.createObjectURL(blob); a.download = name; document.body.appendChild(a); a.click(); setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000); }
  function exportChart(kind, id) {
    var svg = document.getElementById(id); if (!svg) return;
    if (kind === 'csv') return save(id + '.csv', new Blob([csvOf(svg)], { type: 'text/csv' }));
    var text = svgText(svg);
    if (kind === 'svg') return save(id + '.svg', new Blob([text], { type: 'image/svg+xml' }));
    var img = new Image(), w = svg.width.baseVal.value * 2, h = svg.height.baseVal.value * 2;
    img.onload = function () { var cv = document.createElement('canvas'); cv.width = w; cv.height = h; var g = cv.getContext('2d'); g.fillStyle = '#fff'; g.fillRect(0, 0, w, h); g.drawImage(img, 0, 0, w, h); cv.toBlob(function (b) { save(id + '.png', b); }); };
    img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(text);
  }
  window.tailguardCsv = function (id) { var s = document.getElementById(id); return s ? csvOf(s) : null; };
  function tools(svg) {
    if (svg.classList.contains('lane') || !svg.id || svg.parentNode.classList.contains('fig')) return;
    var fig = document.createElement('div'); fig.className = 'fig';
    svg.parentNode.insertBefore(fig, svg); fig.appendChild(svg);
    var bar = document.createElement('div'); bar.className = 'figtools';
    ['csv', 'svg', 'png'].forEach(function (k) { var b = document.createElement('button'); b.textContent = k.toUpperCase(); b.setAttribute('data-export', k); b.setAttribute('data-for', svg.id); b.setAttribute('aria-label', 'export ' + svg.id + ' as ' + k.toUpperCase()); bar.appendChild(b); });
    fig.appendChild(bar);
  }
  function toolbar() {
    var t = document.getElementById('toolbar'); if (!t || t.childNodes.length) return;
    var dark = root.classList.contains('dark') || (!root.classList.contains('light') && matchMedia('(prefers-color-scheme: dark)').matches);
    t.innerHTML = '<label><input type="checkbox" data-opt="ckpt"> checkpoints on event lanes</label> <label><input type="checkbox" data-opt="smooth"> smooth timelines</label> <label><input type="checkbox" data-opt="dark"' + (dark ? ' checked' : '') + '> dark mode</label> <span id="hl-status" aria-live="polite"></span>';
  }
  // After any DOM change (load, or a live leaf swap): re-apply the state.
  // A swapped chart needs only its own state; the table is rebuilt only when its data or filters changed.
  function apply(el) {
    if (el && el.matches && el.matches('svg.chart')) { tools(el); mark(el); smooth(el); return; }
    toolbar();
    $all('[data-opt="ckpt"]').forEach(function (c) { c.checked = S.ckpt; });
    $all('[data-opt="smooth"]').forEach(function (c) { c.checked = S.smooth; });
    $all('svg.chart', el).forEach(function (s) { tools(s); mark(s); smooth(s); });
    if (!el || el === document || (el.matches && el.matches('script.audit-data')) || (el.querySelector && el.querySelector('[data-filter]'))) { rows = null; syncFilters(); paginate(); }
  }
  window.tailguardApply = apply;
  window.tailguardState = S;
  apply(document);
  fromHash();
})();
`;

/** Live page: follow the server's SSE deltas (only changed leaves), keep the state, show the run's status. */
export const LIVE_SCRIPT = String.raw`
(function () {
  var main = document.getElementById('main'), badge = document.getElementById('live');
  var updates = 0, layout = null;
  // Charts out of view are swapped when they scroll in: an update costs the browser only what it shows.
  var pending = {}, io = 'IntersectionObserver' in window ? new IntersectionObserver(function (es) {
    es.forEach(function (e) { var h = pending[e.target.id]; if (e.isIntersecting && h !== undefined) swap(e.target.id, h); });
  }, { rootMargin: '300px' }) : null;
  function inView(el) { var r = el.getBoundingClientRect(); return r.bottom > -300 && r.top < innerHeight + 300; }
  function status(m) {
    document.body.dataset.lastStep = m.lastStep == null ? '' : String(m.lastStep);
    document.body.dataset.state = m.state;
    var t = m.lastStep == null ? '–' : m.lastStep;
    var since = m.since ? new Date(m.since).toLocaleTimeString() : '';
    badge.textContent = m.state === 'live' ? 'live · step ' + t : m.state === 'finished' ? 'finished · step ' + t + (since ? ' · ' + since : '') : 'idle since ' + since + ' · step ' + t;
    badge.className = m.state;
  }
  function swap(id, html) {
    var el = document.getElementById(id);
    if (!el) return false;
    delete pending[id]; if (io) io.unobserve(el);
    var tpl = document.createElement('template'); tpl.innerHTML = html.trim();
    var n = tpl.content.firstElementChild;
    if (el.tagName.toLowerCase() === 'tbody' || el.tagName.toLowerCase() === 'svg') {
      // tbody and svg parse in context: rebuild through their parents
      var holder = document.createElement(el.tagName.toLowerCase() === 'tbody' ? 'table' : 'div'); holder.innerHTML = html; n = holder.querySelector(el.tagName.toLowerCase());
    }
    if (!n) return false;
    el.replaceWith(n);
    window.tailguardApply(n);
    return true;
  }
  function full(m) {
    var scroll = window.scrollY;
    pending = {}; if (io) io.disconnect();
    main.innerHTML = m.html; layout = m.layout;
    window.tailguardApply(document);
    window.scrollTo(0, scroll);
  }
  function connect() {
    var es = new EventSource(location.pathname.replace(/\/?$/, '/events'));
    es.addEventListener('full', function (ev) { var m = JSON.parse(ev.data); full(m); updates++; document.body.dataset.updates = String(updates); status(m); });
    es.addEventListener('delta', function (ev) {
      var m = JSON.parse(ev.data), ok = true;
      m.leaves.forEach(function (l) {
        var el = document.getElementById(l[0]);
        if (el && io && el.tagName.toLowerCase() === 'svg' && !inView(el)) { pending[l[0]] = l[1]; io.observe(el); }
        else if (el) ok = swap(l[0], l[1]) && ok;
        else if (l[0].indexOf('audit-b') === 0) { var t = document.getElementById('audit-data'); if (t) { t.insertAdjacentHTML('beforeend', l[1]); window.tailguardApply(document.getElementById(l[0])); } else ok = false; }
        else ok = false;
      });
      if (!ok) es.close(), connect(); // out of step: a fresh connection starts with a full body
      updates++; document.body.dataset.updates = String(updates); status(m);
    });
    es.addEventListener('status', function (ev) { status(JSON.parse(ev.data)); });
    es.onerror = function () { badge.textContent = 'reconnecting…'; badge.className = 'off'; };
  }
  connect();
})();
`;
