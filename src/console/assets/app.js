// cln-lsps1 operator console. Plain ES2020, no dependencies.
// Security: everything from the network goes into the DOM through textContent
// or attributes; innerHTML is never used.
'use strict';

(() => {
  const RUNE_KEY = 'cln-lsps1.rune';
  const PAGE_SIZE = 50;
  const BLOCKS_PER_DAY = 144;
  const CLTV_WARN = 20;
  const SVGNS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const view = $('view');

  // ---------- DOM helpers ----------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k in e && typeof v !== 'string') e[k] = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(e, children);
    return e;
  }
  function append(parent, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return parent;
  }
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') e.textContent = v;
      else if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) if (c) e.append(c);
    return e;
  }

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat('en-US');
  const isNum = (v) => v !== null && v !== undefined && v !== '' && Number.isFinite(Number(v));
  const fmtNum = (v) => (isNum(v) ? nf.format(Number(v)) : '—');
  const fmtSat = (v) => (isNum(v) ? nf.format(Number(v)) + ' sat' : '—');
  function fmtBtc(v) {
    if (!isNum(v)) return '';
    return (Number(v) / 1e8).toFixed(8).replace(/0{1,5}$/, '') + ' BTC';
  }
  function fmtMsat(v) {
    if (!isNum(v)) return '—';
    const n = Number(v);
    return n % 1000 === 0 ? fmtSat(n / 1000) : nf.format(n) + ' msat';
  }
  function compact(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return +(n / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return +(n / 1e6).toFixed(1) + 'M';
    if (a >= 1e3) return +(n / 1e3).toFixed(1) + 'k';
    return String(n);
  }
  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(s, withSeconds) {
    if (!s) return '—';
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${withSeconds ? ':' + pad(d.getUTCSeconds()) : ''} UTC`;
  }
  function timeEl(s, withSeconds) {
    if (!s) return dim('—');
    return el('time', { datetime: String(s), title: String(s), text: fmtTime(s, withSeconds) });
  }
  function shortId(s, head = 8, tail = 6) {
    s = String(s ?? '');
    return s.length > head + tail + 1 ? s.slice(0, head) + '…' + s.slice(-tail) : s;
  }
  function blocksToDays(b) {
    const d = Math.abs(b) / BLOCKS_PER_DAY;
    return d < 10 ? d.toFixed(1) : String(Math.round(d));
  }
  function endsText(left) {
    if (!isNum(left)) return '—';
    left = Number(left);
    if (left > 0) return `ends in ~${nf.format(left)} blocks (≈ ${blocksToDays(left)} days)`;
    if (left === 0) return 'ends at this block';
    return `ended ${nf.format(-left)} blocks ago (≈ ${blocksToDays(left)} days)`;
  }

  const PHASES = ['awaiting_payment', 'payment_held', 'opening', 'completed', 'failed'];
  const PHASE_LABEL = {
    awaiting_payment: 'awaiting payment', payment_held: 'payment held', opening: 'opening',
    completed: 'completed', failed: 'failed',
  };
  const FAILURE_TEXT = {
    payment_expired: 'The order expired before it was paid.',
    open_failed: 'The channel could not be opened; the payment was refunded or failed back.',
    cltv_deadline: 'The held payment came too close to its CLTV expiry and was failed back.',
    cancelled: 'The order was cancelled by the operator.',
  };
  function phaseOf(o) {
    if (o.phase) return o.phase;
    const s = String(o.order_state || '').toUpperCase();
    return s === 'COMPLETED' ? 'completed' : s === 'FAILED' ? 'failed' : 'awaiting_payment';
  }
  function badge(phase, title) {
    const p = PHASES.includes(phase) ? phase : 'unknown';
    return el('span', { class: 'badge phase-' + p, title: title || null, text: PHASE_LABEL[phase] || String(phase || 'unknown') });
  }
  function orderBadge(o) {
    const t = [o.order_state && 'order ' + o.order_state, o.payment_state && 'payment ' + o.payment_state].filter(Boolean).join(', ');
    return badge(phaseOf(o), t || null);
  }
  function stateBadge(state) {
    const cls = { active: 'phase-completed', ended: 'phase-payment_held', closing: 'phase-opening', closed: 'phase-unknown',
      held: 'phase-payment_held', settled: 'phase-completed', failed: 'phase-failed' }[state] || 'phase-unknown';
    return el('span', { class: 'badge ' + cls, text: String(state ?? '—') });
  }
  const link = (href, text, title) => el('a', { href, title: title || null, text });
  const orderLink = (id) => link('#/order/' + encodeURIComponent(id), shortId(id, 10, 6), id);
  const num = (text, cls, title) => el('span', { class: 'num' + (cls ? ' ' + cls : ''), text, title: title || null });
  const mw = (text) => el('span', { class: 'mono wrap', text: String(text) });
  const dim = (text) => el('span', { class: 'muted', text });
  const mono = (text, title) => el('span', { class: 'mono', title: title || null, text: String(text ?? '—') });

  // ---------- status banner ----------
  const statusBox = $('status-message');
  const statusDismiss = $('status-dismiss');
  function setStatus(text, kind = 'ok') {
    statusBox.className = 'status status-' + kind;
    statusBox.textContent = text;
    statusDismiss.hidden = !text;
  }
  function clearStatus() { setStatus('', 'ok'); statusBox.className = 'status'; }
  statusDismiss.addEventListener('click', clearStatus);

  // ---------- rune storage ----------
  function getRune() {
    try { return sessionStorage.getItem(RUNE_KEY) || localStorage.getItem(RUNE_KEY) || ''; } catch { return ''; }
  }
  function saveRune(rune, remember) {
    try {
      forgetRune();
      (remember ? localStorage : sessionStorage).setItem(RUNE_KEY, rune);
    } catch { /* storage unavailable: keep it in memory for this page */ memRune = rune; }
  }
  function forgetRune() {
    memRune = '';
    try { sessionStorage.removeItem(RUNE_KEY); localStorage.removeItem(RUNE_KEY); } catch { /* ignore */ }
  }
  let memRune = '';
  const currentRune = () => getRune() || memRune;

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  class NeedRune extends Error {}

  // action: human words for the 403 banner, e.g. "cancelling orders (lsps1-cancelorder)"
  async function api(path, { method = 'GET', body, action = 'this request', quiet = false } = {}) {
    const rune = currentRune();
    if (!rune) { if (!quiet) showRuneForm(''); throw new NeedRune(); }
    const headers = { Rune: rune, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store', credentials: 'same-origin' });
    } catch {
      const err = new ApiError(0, 'Cannot reach the plugin');
      if (!quiet) setStatus('Cannot reach the plugin', 'error');
      throw err;
    }
    let data = null;
    const text = await res.text();
    if (text) { try { data = JSON.parse(text); } catch { data = null; } }
    if (res.ok) return data;
    const msg = (data && typeof data.error === 'string' && data.error) || `HTTP ${res.status} ${res.statusText || ''}`.trim();
    if (quiet) throw new ApiError(res.status, msg);
    // the plugin already words these as "this rune is not valid: …" / "this rune does not allow <command>: …"
    const own = /^this rune /i.test(msg) ? msg[0].toUpperCase() + msg.slice(1) : null;
    if (res.status === 401) {
      forgetRune();
      showRuneForm(own || 'This rune is not valid: ' + msg);
      throw new NeedRune();
    }
    if (res.status === 403) setStatus(own || `This rune does not allow ${action}: ${msg}`, 'error');
    else if (res.status === 503) setStatus('The plugin is not ready: ' + msg, 'error');
    else setStatus(msg, 'error');
    throw new ApiError(res.status, msg);
  }

  // ---------- rune form ----------
  const runePanel = $('rune-panel');
  const runeError = $('rune-error');
  function showRuneForm(message) {
    view.hidden = true;
    runePanel.hidden = false;
    $('rune-forget').hidden = true;
    runeError.hidden = !message;
    runeError.textContent = message || '';
    $('rune-input').value = '';
    $('rune-input').focus();
  }
  $('rune-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const rune = $('rune-input').value.trim();
    if (!rune) { runeError.hidden = false; runeError.textContent = 'Paste a rune first.'; $('rune-input').focus(); return; }
    saveRune(rune, $('rune-remember').checked);
    $('rune-input').value = '';
    runePanel.hidden = true;
    clearStatus();
    headerLoaded = false;
    route();
  });
  $('rune-forget').addEventListener('click', () => {
    forgetRune();
    headerLoaded = false;
    $('node-info').hidden = true;
    setStatus('Rune forgotten on this device.', 'ok');
    showRuneForm('');
  });

  // ---------- header ----------
  let headerLoaded = false;
  function fillHeader(st) {
    if (!st) return;
    if (st.node_id) { $('node-id').textContent = shortId(st.node_id, 10, 6); $('node-id').title = st.node_id; }
    if (st.network) { $('node-network').textContent = st.network; }
    if (isNum(st.blockheight)) $('node-blockheight').textContent = fmtNum(st.blockheight);
    if (st.node_id) { $('node-info').hidden = false; headerLoaded = true; }
  }
  function setBlockheight(h) { if (isNum(h)) $('node-blockheight').textContent = fmtNum(h); }
  function loadHeader() {
    if (headerLoaded) return;
    api('/api/status?days=1', { quiet: true }).then(fillHeader).catch(() => {});
  }

  // ---------- confirm dialog ----------
  const dialog = $('confirm-dialog');
  let dialogResolve = null;
  function confirmAction(title, text, actionLabel) {
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-action').textContent = actionLabel;
    return new Promise((resolve) => {
      dialogResolve = resolve;
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else resolve(window.confirm(text));
      $('confirm-cancel').focus();
    });
  }
  function closeDialog(result) {
    if (dialog.open) dialog.close();
    const r = dialogResolve; dialogResolve = null;
    if (r) r(result);
  }
  $('confirm-action').addEventListener('click', () => closeDialog(true));
  $('confirm-cancel').addEventListener('click', () => closeDialog(false));
  dialog.addEventListener('close', () => closeDialog(false));

  async function doCancel(orderId) {
    const ok = await confirmAction('Cancel order',
      `Cancel order ${orderId}? Its held payment, if any, is failed back to the client. This cannot be undone.`,
      'Cancel order');
    if (!ok) return false;
    try {
      await api('/api/cancelorder', { method: 'POST', body: { order_id: orderId }, action: 'cancelling orders (lsps1-cancelorder)' });
    } catch { return false; }
    setStatus(`Order ${orderId} cancelled`, 'ok');
    return true;
  }
  async function doAllowClose(orderId) {
    const ok = await confirmAction('Allow closing the leased channel',
      `Allow closing the leased channel of order ${orderId} for the next 10 minutes? The lease has not ended.`,
      'Allow close');
    if (!ok) return false;
    let r;
    try {
      r = await api('/api/allowclose', { method: 'POST', body: { order_id: orderId }, action: 'allowing lease closes (lsps1-allowclose)' });
    } catch { return false; }
    const secs = r && isNum(r.allowed_for_secs) ? Number(r.allowed_for_secs) : 600;
    const mins = Math.round(secs / 60);
    setStatus(`Closing the leased channel of order ${orderId} is allowed for the next ${mins} minute${mins === 1 ? '' : 's'}` +
      (r && r.channel_id ? ` (channel ${r.channel_id})` : ''), 'ok');
    return true;
  }

  // ---------- small building blocks ----------
  function section(title, ...children) {
    return el('section', { class: 'card' }, el('h2', { text: title }), children);
  }
  function kv(pairs, cls) {
    const dl = el('dl', { class: 'kv ' + (cls || '') });
    for (let [k, v, extra] of pairs) {
      if (v === undefined) continue;
      if (typeof v === 'string' || typeof v === 'number') v = num(v);
      dl.append(el('div', { class: extra || null }, el('dt', { text: k }), el('dd', null, v === null ? dim('—') : v)));
    }
    return dl;
  }
  function table(id, caption, headers, rows, emptyText) {
    const thead = el('thead', null, el('tr', null, headers.map((h) => {
      const [label, cls] = Array.isArray(h) ? h : [h, ''];
      return el('th', { scope: 'col', class: cls || null, text: label });
    })));
    const tbody = el('tbody');
    if (!rows.length) tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: String(headers.length), text: emptyText })));
    else {
      const labels = headers.map((h) => (Array.isArray(h) ? h[0] : h));
      for (const r of rows) [...r.children].forEach((c, i) => { if (labels[i]) c.dataset.label = labels[i]; });
      tbody.append(...rows);
    }
    const t = el('table', { id, class: 'data' }, caption ? el('caption', { class: 'sr-only', text: caption }) : null, thead, tbody);
    return el('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption || id }, t);
  }
  const td = (content, cls) => el('td', { class: cls || null }, content ?? dim('—'));
  const setView = (...nodes) => view.replaceChildren(...nodes.filter(Boolean));
  function loading() { view.replaceChildren(el('p', { class: 'loading muted', text: 'Loading…' })); }
  function failed(err, extra) {
    if (err instanceof NeedRune) return;
    const msg = err.status === 403 ? 'This rune does not allow reading this page.' :
      err.status === 0 ? 'Cannot reach the plugin. Is lightningd running, with the console enabled?' : err.message;
    view.replaceChildren(el('div', { class: 'card empty-state' }, el('p', { text: msg }), extra,
      el('button', { type: 'button', class: 'btn', text: 'Try again', on: { click: () => route() } })));
  }
  function pageHead(title, sub, ...extra) {
    return el('div', { class: 'page-head' }, el('div', { class: 'ph-title' }, el('h1', { text: title }),
      sub ? el('p', { class: 'muted small num', text: sub }) : null), extra);
  }
  const refreshBtn = () => el('button', { type: 'button', class: 'btn btn-small', text: 'Refresh', on: { click: () => route() } });

  // ---------- charts ----------
  const tip = $('chart-tip');
  function showTip(text, x, y) {
    tip.textContent = text;
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    const left = Math.max(4, Math.min(window.innerWidth - w - 4, x - w / 2));
    const top = y - h - 12 < 4 ? y + 16 : y - h - 12;
    tip.style.left = left + 'px';
    tip.style.top = top + 'px';
  }
  function hideTip() { tip.hidden = true; }
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function dailyChart(container, days, key, title, cls) {
    const W = Math.max(280, Math.floor(container.clientWidth || 600));
    const H = W < 500 ? 150 : 180;
    const m = { l: 44, r: 8, t: 10, b: 24 };
    const iw = W - m.l - m.r, ih = H - m.t - m.b;
    const vals = days.map((d) => Number(d[key]) || 0);
    const max = niceMax(Math.max(0, ...vals));
    const total = vals.reduce((a, b) => a + b, 0);
    const n = Math.max(1, days.length);
    const bw = iw / n;
    const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart ' + cls, role: 'img',
      'aria-label': `${title}: ${nf.format(total)} sat over ${days.length} days, highest day ${nf.format(Math.max(0, ...vals))} sat` });
    const g = svg('g', { transform: `translate(${m.l},${m.t})` });
    for (let i = 0; i <= 4; i++) {
      const v = (max / 4) * i, y = ih - (ih * i) / 4;
      g.append(svg('line', { x1: 0, x2: iw, y1: y, y2: y, class: i ? 'gridline' : 'axis' }));
      g.append(svg('text', { x: -6, y: y + 4, 'text-anchor': 'end', class: 'tick', text: compact(v) }));
    }
    const bars = svg('g');
    days.forEach((d, i) => {
      const v = vals[i];
      const h = v > 0 ? Math.max(1.5, (v / max) * ih) : 0;
      const r = svg('rect', { x: (i * bw + bw * 0.12).toFixed(2), y: (ih - h).toFixed(2), width: Math.max(1, bw * 0.76).toFixed(2),
        height: h.toFixed(2), class: 'bar' }, svg('title', { text: `${d.day}: ${nf.format(v)} sat` }));
      bars.append(r);
    });
    g.append(bars);
    // x labels: first day of each month (or every ~15 days if no month starts)
    let lastX = -100;
    days.forEach((d, i) => {
      const day = String(d.day || '');
      if (day.slice(8) === '01' || i === 0) {
        const x = i * bw + bw / 2;
        if (x - lastX < 44) return;
        lastX = x;
        const dt = new Date(day + 'T00:00:00Z');
        const label = Number.isNaN(dt.getTime()) ? day : dt.toLocaleString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
        g.append(svg('line', { x1: x, x2: x, y1: ih, y2: ih + 4, class: 'axis' }));
        g.append(svg('text', { x: Math.max(0, x), y: ih + 17, 'text-anchor': i === 0 ? 'start' : 'middle', class: 'tick', text: label }));
      }
    });
    const hl = svg('rect', { x: 0, y: 0, width: Math.max(1, bw), height: ih, class: 'hover-band', visibility: 'hidden' });
    g.insertBefore(hl, bars);
    const overlay = svg('rect', { x: 0, y: 0, width: iw, height: ih, class: 'overlay' });
    const move = (ev) => {
      const rect = overlay.getBoundingClientRect();
      const i = Math.min(n - 1, Math.max(0, Math.floor(((ev.clientX - rect.left) / rect.width) * n)));
      const d = days[i];
      if (!d) return;
      hl.setAttribute('x', (i * bw).toFixed(2));
      hl.setAttribute('visibility', 'visible');
      const extra = key === 'revenue_sat'
        ? ` · ${fmtNum(d.orders_created)} created, ${fmtNum(d.orders_completed)} completed, ${fmtNum(d.orders_failed)} failed` : '';
      showTip(`${d.day}: ${fmtSat(vals[i])}${extra}`, ev.clientX, rect.top + (ih - (vals[i] / max) * ih) * (rect.height / ih));
    };
    overlay.addEventListener('pointermove', move);
    overlay.addEventListener('pointerdown', move);
    overlay.addEventListener('pointerleave', () => { hl.setAttribute('visibility', 'hidden'); hideTip(); });
    g.append(overlay);
    s.append(g);
    container.replaceChildren(s);
  }
  function phaseChart(container, byPhase) {
    const W = Math.max(200, Math.floor(container.clientWidth || 300));
    const rowH = 36, H = PHASES.length * rowH;
    const max = Math.max(1, ...PHASES.map((p) => Number(byPhase[p]) || 0));
    const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart phase-chart', role: 'img',
      'aria-label': 'Orders by state: ' + PHASES.map((p) => `${PHASE_LABEL[p]} ${Number(byPhase[p]) || 0}`).join(', ') });
    PHASES.forEach((p, i) => {
      const v = Number(byPhase[p]) || 0, y = i * rowH;
      s.append(svg('a', { href: '#/orders?state=' + p },
        svg('title', { text: `${PHASE_LABEL[p]}: ${nf.format(v)} orders (show them)` }),
        svg('rect', { x: 0, y, width: W, height: rowH, class: 'hit' }),
        svg('text', { x: 0, y: y + 14, class: 'label', text: PHASE_LABEL[p] }),
        svg('text', { x: W, y: y + 14, 'text-anchor': 'end', class: 'value', text: nf.format(v) }),
        svg('rect', { x: 0, y: y + 20, width: W, height: 8, rx: 4, class: 'track' }),
        v ? svg('rect', { x: 0, y: y + 20, width: Math.max(8, (v / max) * W), height: 8, rx: 4, class: 'hbar fill-' + p }) : null));
    });
    container.replaceChildren(s);
  }
  let redrawCharts = null;
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (redrawCharts) redrawCharts(); }, 150);
  });

  // ---------- views ----------
  function statCard(title, body, opts = {}) {
    return el('section', { class: 'card stat' + (opts.warn ? ' warn' : '') },
      el('h2', null, title, opts.href ? el('a', { class: 'card-link', href: opts.href, text: opts.linkText || 'View' }) : null),
      body);
  }
  function big(text, sub) {
    return el('p', { class: 'big num' }, text, sub ? el('span', { class: 'sub', text: sub }) : null);
  }

  const periodCard = (title, x) => statCard(title, [big(fmtSat(x.today), 'today'),
    kv([['Last 7 days', fmtSat(x.last_7_days)], ['Last 30 days', fmtSat(x.last_30_days)],
      ['All time', num(fmtSat(x.all_time), '', fmtBtc(x.all_time))]], 'compact')]);

  async function viewOverview(token) {
    const st = await api('/api/status?days=90', { action: 'reading the status (lsps1-status)' });
    if (token !== routeToken) return;
    fillHeader(st);
    const o = st.orders || {}, held = st.held || {}, rev = st.revenue_sat || {}, cap = st.capacity_sold_sat || {};
    const ls = st.leases || {}, rf = st.refunds || {}, rq = st.requests || {}, w = st.wallet || {};
    const margin = held.cltv_margin_blocks;
    const marginWarn = isNum(margin) && Number(margin) < CLTV_WARN;
    const walletWarn = isNum(w.free_sat) && isNum(w.max_channel_balance_sat) && Number(w.free_sat) < Number(w.max_channel_balance_sat);
    const byCause = rf.by_cause || {};

    const cards = el('div', { class: 'grid cards' },
      statCard('Held now', [
        big(fmtSat(held.amount_sat), `${fmtNum(held.orders)} order${Number(held.orders) === 1 ? '' : 's'}`),
        kv([
          ['HTLCs', fmtNum(held.htlcs)],
          ['On-chain outputs', fmtNum(held.onchain_outputs)],
          ['Earliest CLTV expiry', isNum(held.earliest_cltv_expiry) ? num('block ' + fmtNum(held.earliest_cltv_expiry)) : null],
          ['CLTV margin', isNum(margin) ? num(`${fmtNum(margin)} blocks`, marginWarn && 'warn-text') : null],
        ], 'compact'),
        marginWarn ? el('p', { class: 'note warn-text', text: `Under ${CLTV_WARN} blocks: a held payment will soon be failed back.` }) : null,
      ], { warn: marginWarn, href: '#/held', linkText: 'Held payments' }),
      periodCard('Revenue', rev),
      periodCard('Capacity sold', cap),
      statCard('Leases', [
        big(fmtNum(ls.active), 'active'),
        kv([['Leased', fmtSat(ls.leased_sat)],
          ['Ending within 1 day', num(fmtNum(ls.ending_within_1_day), Number(ls.ending_within_1_day) > 0 && 'warn-text')],
          ['Ending within 1 week', fmtNum(ls.ending_within_1_week)],
          ['Ending within 1 month', fmtNum(ls.ending_within_1_month)]], 'compact'),
      ], { href: '#/leases', linkText: 'Leases' }),
      statCard('Wallet', [
        big(fmtSat(w.free_sat), 'free'),
        kv([['Largest channel', fmtSat(w.max_channel_balance_sat)]], 'compact'),
        walletWarn ? el('p', { class: 'note warn-text', text: 'Free funds are below the largest channel size: big orders may fail to open.' }) : null,
      ], { warn: walletWarn }),
      statCard('Refunds', [
        big(fmtNum(rf.total), 'total'),
        kv([['Payment expired', fmtNum(byCause.payment_expired)],
          ['Open failed', fmtNum(byCause.open_failed)],
          ['CLTV deadline', fmtNum(byCause.cltv_deadline)],
          ...Object.keys(byCause).filter((k) => !['payment_expired', 'open_failed', 'cltv_deadline'].includes(k))
            .map((k) => [k.replace(/_/g, ' '), fmtNum(byCause[k])])], 'compact'),
      ]),
      statCard('Requests turned away', [
        big(fmtNum(rq.rate_limited), 'rate-limited'),
        kv([['Refused', fmtNum(rq.refused)],
          ['Since', rq.since ? timeEl(rq.since) : null]], 'compact'),
      ]),
    );

    const phaseBox = el('div', { class: 'chart-box' });
    const revBox = el('div', { class: 'chart-box' });
    const capBox = el('div', { class: 'chart-box' });
    const daily = Array.isArray(st.daily) ? st.daily : [];
    cards.append(el('section', { class: 'card' },
      el('h2', null, 'Orders by state', el('span', { class: 'h-aside num', text: `${fmtNum(o.total)} total` })), phaseBox));
    const span = `${daily.length} days · sat`;
    const charts = el('div', { class: 'grid charts' },
      el('section', { class: 'card' }, el('h2', null, 'Revenue per day', el('span', { class: 'h-aside', text: span })), revBox),
      el('section', { class: 'card' }, el('h2', null, 'Capacity sold per day', el('span', { class: 'h-aside', text: span })), capBox));

    const errs = Array.isArray(st.recent_errors) ? st.recent_errors : [];
    const errList = errs.length
      ? el('ul', { class: 'error-list' }, errs.map((e) => el('li', null, timeEl(e.at, true), el('span', { class: 'err-msg', text: String(e.message ?? '') }))))
      : el('p', { class: 'muted', text: 'No recent errors.' });

    view.replaceChildren(
      pageHead('Overview', 'as of ' + fmtTime(st.generated_at, true), refreshBtn()),
      cards, charts, section('Recent errors', errList));
    redrawCharts = () => {
      phaseChart(phaseBox, o.by_phase || {});
      dailyChart(revBox, daily, 'revenue_sat', 'Revenue per day', 'rev');
      dailyChart(capBox, daily, 'capacity_sold_sat', 'Capacity sold per day', 'cap');
    };
    redrawCharts();
  }

  const STATE_OPTIONS = [['', 'Any state'], ['CREATED', 'CREATED'], ['COMPLETED', 'COMPLETED'], ['FAILED', 'FAILED'],
    ...PHASES.map((p) => [p, 'phase: ' + PHASE_LABEL[p]])];

  async function viewOrders(token, params) {
    const f = {
      state: params.get('state') || '', peer_id: (params.get('peer_id') || '').trim(),
      since: params.get('since') || '', until: params.get('until') || '', q: params.get('q') || '',
    };
    const offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
    const go = (changes) => {
      const next = { ...f, offset: String(offset), ...changes };
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(next)) if (v !== '' && v !== undefined && !(k === 'offset' && v === '0')) qs.set(k, v);
      const s = qs.toString();
      location.hash = '#/orders' + (s ? '?' + s : '');
    };

    const stateSel = el('select', { id: 'filter-state' }, STATE_OPTIONS.map(([v, t]) => el('option', { value: v, text: t })));
    if (f.state && !STATE_OPTIONS.some(([v]) => v === f.state)) stateSel.append(el('option', { value: f.state, text: f.state }));
    stateSel.value = f.state;
    const peer = el('input', { id: 'filter-peer', type: 'text', value: f.peer_id, placeholder: '02…', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
    const since = el('input', { id: 'filter-since', type: 'date', value: /^\d{4}-\d{2}-\d{2}$/.test(f.since) ? f.since : '' });
    const until = el('input', { id: 'filter-until', type: 'date', value: /^\d{4}-\d{2}-\d{2}$/.test(f.until) ? f.until : '' });
    const text = el('input', { id: 'filter-q', type: 'text', value: f.q, autocomplete: 'off', spellcheck: 'false' });
    const filterForm = el('form', { class: 'filters', 'aria-label': 'Filter orders', on: { submit: (ev) => {
      ev.preventDefault();
      go({ state: stateSel.value, peer_id: peer.value.trim(), since: since.value, until: until.value, q: text.value.trim(), offset: '0' });
    } } },
    el('div', { class: 'field' }, el('label', { for: 'filter-state', text: 'State' }), stateSel),
    el('div', { class: 'field grow' }, el('label', { for: 'filter-peer', text: 'Peer id' }), peer),
    el('div', { class: 'field' }, el('label', { for: 'filter-since', text: 'Created since' }), since),
    el('div', { class: 'field' }, el('label', { for: 'filter-until', text: 'Created until' }), until),
    el('div', { class: 'field' }, el('label', { for: 'filter-q', text: 'Order id starts with' }), text),
    el('div', { class: 'field buttons' },
      el('button', { id: 'filter-apply', type: 'submit', class: 'btn btn-primary', text: 'Apply filters' }),
      el('button', { id: 'filter-clear', type: 'button', class: 'btn', text: 'Clear', on: { click: () => { location.hash = '#/orders'; } } })));
    const search = el('input', { id: 'order-search', type: 'search', placeholder: 'Order id', autocomplete: 'off', spellcheck: 'false', class: 'mono', 'aria-label': 'Open order by id' });
    const searchForm = el('form', { class: 'search', role: 'search', on: { submit: (ev) => {
      ev.preventDefault();
      const id = search.value.trim();
      if (!id) { search.focus(); return; }
      location.hash = '#/order/' + encodeURIComponent(id);
    } } }, search, el('button', { id: 'order-search-go', type: 'submit', class: 'btn', text: 'Open order' }));

    const results = el('div', { class: 'results' }, el('p', { class: 'loading muted', text: 'Loading…' }));
    view.replaceChildren(pageHead('Orders', null, searchForm), el('section', { class: 'card' }, filterForm), results);

    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v) qs.set(k, v);
    qs.set('limit', String(PAGE_SIZE));
    qs.set('offset', String(offset));
    let data;
    try {
      data = await api('/api/orders?' + qs.toString(), { action: 'listing orders (lsps1-listorders)' });
    } catch (err) {
      if (token !== routeToken || err instanceof NeedRune) return;
      results.replaceChildren(el('div', { class: 'card empty-state' }, el('p', { text: err.status === 0 ? 'Cannot reach the plugin.' : err.message }),
        el('button', { type: 'button', class: 'btn', text: 'Try again', on: { click: () => route() } })));
      return;
    }
    if (token !== routeToken) return;
    const orders = Array.isArray(data.orders) ? data.orders : [];
    const limit = Number(data.limit) || PAGE_SIZE;
    const off = Number(data.offset) || 0;
    const rows = orders.map((s) => el('tr', { dataset: { orderId: String(s.order_id) } },
      td(orderLink(s.order_id), 'mono'),
      td(timeEl(s.created_at), 'nowrap'),
      td([orderBadge(s), s.reorg_flagged ? el('span', { class: 'badge badge-warn', title: 'A reorg touched this order', text: 'reorg' }) : null], 'nowrap'),
      td(s.peer_id ? link('#/orders?peer_id=' + encodeURIComponent(s.peer_id), shortId(s.peer_id, 8, 4), 'Show orders of peer ' + s.peer_id) : null, 'mono'),
      td(fmtSat(s.lsp_balance_sat), 'num right'),
      td(fmtSat(s.fee_total_sat), 'num right'),
      td(s.paid_method ? s.paid_method : dim('unpaid')),
      td(isNum(s.lease_end_block) ? fmtNum(s.lease_end_block) : null, 'num right')));
    const from = orders.length ? off + 1 : 0;
    const pager = el('div', { class: 'pager' },
      el('button', { id: 'orders-newer', type: 'button', class: 'btn', text: '← Newer', disabled: off <= 0,
        on: { click: () => go({ offset: String(Math.max(0, off - limit)) }) } }),
      el('span', { class: 'muted num', text: orders.length ? `Orders ${nf.format(from)}–${nf.format(off + orders.length)}${data.more ? '' : ' (end)'}` : '' }),
      el('button', { id: 'orders-older', type: 'button', class: 'btn', text: 'Older →', disabled: !data.more,
        on: { click: () => go({ offset: String(off + limit) }) } }));
    results.replaceChildren(el('section', { class: 'card flush' },
      table('orders-table', 'Orders, newest first',
        ['Order', 'Created', 'State', 'Peer', ['LSP balance', 'right'], ['Fee', 'right'], 'Paid by', ['Lease end', 'right']],
        rows, f.state || f.peer_id || f.since || f.until || f.q || off ? 'No orders match these filters.' : 'No orders match — none have been placed yet.'),
      pager));
  }

  async function viewOrder(token, id) {
    const d = await api('/api/orders/' + encodeURIComponent(id), { action: 'reading an order (lsps1-getorder)' });
    if (token !== routeToken) return;
    const o = d.order || {};
    const orderId = String(o.order_id || id);
    const phase = d.phase || phaseOf(o);
    const pay = o.payment || {};
    const b11 = pay.bolt11 || null, oc = pay.onchain || null;
    const actions = d.actions || {};
    const reload = () => route();

    const buttons = el('div', { class: 'actions' },
      actions.cancel ? el('button', { id: 'cancel-order', type: 'button', class: 'btn btn-danger', text: 'Cancel order…',
        on: { click: async () => { if (await doCancel(orderId)) reload(); } } }) : null,
      actions.allowclose ? el('button', { id: 'allow-close', type: 'button', class: 'btn btn-danger', text: 'Allow close…',
        on: { click: async () => { if (await doAllowClose(orderId)) reload(); } } }) : null);

    const head = el('section', { class: 'card order-head' },
      el('div', { class: 'order-title' },
        el('p', { class: 'eyebrow' }, el('a', { href: '#/orders', text: '← Orders' })),
        el('h1', null, el('span', { class: 'sr-only', text: 'Order ' }), el('code', { id: 'order-id', class: 'order-id', text: orderId })),
        el('p', { class: 'badges' }, badge(phase, `order ${o.order_state || '?'}`),
          el('span', { class: 'muted small', text: `order ${o.order_state || '?'}` }),
          d.transport ? el('span', { class: 'muted small', text: `via ${d.transport}` }) : null)),
      buttons);

    const failure = d.failure_reason || (phase === 'failed' ? 'unknown' : null);
    const failBox = failure ? el('div', { class: 'alert alert-danger failure', role: 'note' },
      el('strong', { text: 'Failed: ' + String(failure).replace(/_/g, ' ') }),
      FAILURE_TEXT[failure] ? el('span', { text: ' — ' + FAILURE_TEXT[failure] }) : null) : null;

    const feeSrc = b11 || oc || {};
    const figures = section('Key figures', kv([
      ['LSP balance', fmtSat(o.lsp_balance_sat)],
      ['Client balance', fmtSat(o.client_balance_sat)],
      ['Fee', fmtSat(feeSrc.fee_total_sat)],
      ['Order total', fmtSat(feeSrc.order_total_sat)],
      ['Held now', fmtMsat(d.held_msat)],
      ['Reserved', fmtSat(d.reserved_sat)],
      ['Channel lease', isNum(o.channel_expiry_blocks) ? num(`${fmtNum(o.channel_expiry_blocks)} blocks (≈ ${blocksToDays(o.channel_expiry_blocks)} days)`) : undefined],
      ['Lease end block', isNum(d.lease_end_block) ? num(fmtNum(d.lease_end_block)) : null],
      ['Funding feerate', isNum(d.funding_feerate_perkw) ? num(fmtNum(d.funding_feerate_perkw) + ' sat/kw') : null],
      ['Created', timeEl(o.created_at, true)],
      ['Updated', timeEl(d.updated_at, true)],
      ['Peer', d.peer_id ? el('a', { class: 'mono wrap', href: '#/orders?peer_id=' + encodeURIComponent(d.peer_id), title: 'All orders of this peer', text: d.peer_id }) : null, 'wide'],
      ['Payment hash', d.payment_hash ? mw(d.payment_hash) : null, 'wide'],
      ['Refund address', d.refund_onchain_address ? mw(d.refund_onchain_address) : undefined, 'wide'],
      ['Client info', d.client_info ? el('span', { class: 'wrap', text: typeof d.client_info === 'string' ? d.client_info : JSON.stringify(d.client_info) }) : undefined, 'wide'],
    ], 'grid-kv'));

    // timeline
    const events = Array.isArray(d.events) ? d.events : [];
    const timeline = section('Timeline', events.length ? el('ol', { class: 'timeline' }, events.map((e) => el('li', { class: 'ev ev-' + (PHASES.includes(e.to) ? e.to : 'other') },
      el('div', { class: 'ev-time' }, timeEl(e.at, true)),
      el('div', { class: 'ev-body' },
        e.kind !== 'transition' || !(e.from || e.to) ? el('span', { class: 'ev-kind', text: String(e.kind || 'event').replace(/_/g, ' ') }) : null,
        e.from || e.to ? el('span', { class: 'ev-move' }, e.from ? badge(e.from) : null, e.from ? el('span', { class: 'arrow', 'aria-label': 'to', text: ' → ' }) : null, e.to ? badge(e.to) : null) : null,
        e.detail ? el('p', { class: 'ev-detail', text: detailText(e.detail) }) : null))))
      : el('p', { class: 'muted', text: 'No events recorded.' }));

    // payment
    const payParts = [];
    if (b11) {
      const inv = String(b11.invoice || '');
      const copyBtn = el('button', { id: 'copy-invoice', type: 'button', class: 'btn btn-small', text: 'Copy invoice' });
      copyBtn.addEventListener('click', async () => {
        try {
          if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
          await navigator.clipboard.writeText(inv);
          setStatus('Invoice copied to the clipboard', 'ok');
        } catch {
          invBox.textContent = inv; invBox.classList.add('wrap');
          setStatus('This browser did not allow copying (it needs https or localhost): the full invoice is shown, select it by hand.', 'warn');
        }
      });
      const invBox = el('code', { class: 'mono invoice', title: inv, text: shortId(inv, 24, 12) });
      payParts.push(el('h3', { text: 'Lightning (BOLT11)' }), kv([
        ['State', el('span', { class: 'mono', text: String(b11.state ?? '—') })],
        ['Expires', timeEl(b11.expires_at, true)],
        ['Invoice', inv ? el('span', { class: 'invoice-row' }, invBox, copyBtn) : null, 'wide'],
      ], 'grid-kv'));
    }
    const htlcs = Array.isArray(d.htlcs) ? d.htlcs : [];
    if (htlcs.length || b11) {
      payParts.push(el('h3', { text: 'HTLCs' }), table('htlc-table', 'HTLCs of this order',
        ['Channel', ['Id', 'right'], ['Amount', 'right'], ['CLTV expiry', 'right'], 'Received', 'State'],
        htlcs.map((h) => el('tr', null, td(h.short_channel_id, 'mono'), td(fmtNum(h.id), 'num right'), td(fmtMsat(h.amount_msat), 'num right'),
          td(fmtNum(h.cltv_expiry), 'num right'), td(timeEl(h.received_at, true), 'nowrap'), td(stateBadge(h.state)))),
        'No HTLCs arrived for this order.'));
    }
    if (oc) {
      payParts.push(el('h3', { text: 'On-chain' }), kv([
        ['State', el('span', { class: 'mono', text: String(oc.state ?? '—') })],
        ['Expires', timeEl(oc.expires_at, true)],
        ['Fee', b11 && String(oc.fee_total_sat) === String(b11.fee_total_sat) ? undefined : fmtSat(oc.fee_total_sat)],
        ['Total', b11 && String(oc.order_total_sat) === String(b11.order_total_sat) ? undefined : fmtSat(oc.order_total_sat)],
        ['Confirmations needed', fmtNum(oc.min_onchain_payment_confirmations)],
        ['Min fee for 0-conf', oc.min_fee_for_0conf !== undefined && oc.min_fee_for_0conf !== null ? num(String(oc.min_fee_for_0conf)) : null],
        ['Address', oc.address ? mw(oc.address) : null, 'wide'],
        ['Refund to', oc.refund_onchain_address ? mw(oc.refund_onchain_address) : undefined, 'wide'],
      ], 'grid-kv'));
    }
    const chain = d.onchain;
    if (chain) {
      const outs = Array.isArray(chain.outputs) ? chain.outputs : [];
      payParts.push(el('h3', { text: 'On-chain outputs' }), table('onchain-outputs-table', 'On-chain outputs',
        ['Outpoint', ['Amount', 'right'], ['Block', 'right'], ['Confirmations', 'right'], 'Role'],
        outs.map((x) => el('tr', null, td(mono(shortId(x.outpoint, 12, 6), x.outpoint)), td(fmtSat(x.amount_sat), 'num right'),
          td(isNum(x.blockheight) ? fmtNum(x.blockheight) : dim('mempool'), 'num right'),
          td(fmtNum(x.confirmations), 'num right'), td(String(x.role ?? '—')))),
        'No outputs seen at this address.'));
      const refs = Array.isArray(chain.refunds) ? chain.refunds : [];
      if (refs.length) {
        payParts.push(el('h3', { text: 'Refunds' }), table('refunds-table', 'On-chain refunds',
          ['Txid', 'State', ['Amount', 'right'], ['Fee', 'right'], ['Feerate', 'right'], 'Destination', ['Created at', 'right'], 'Replaces'],
          refs.map((r) => el('tr', null, td(mono(shortId(r.txid, 10, 6), r.txid)), td(String(r.state ?? '—')),
            td(fmtSat(r.amount_sat), 'num right'), td(fmtSat(r.fee_sat), 'num right'),
            td(isNum(r.feerate_perkw) ? fmtNum(r.feerate_perkw) + ' sat/kw' : null, 'num right'),
            td(r.destination ? mono(shortId(r.destination, 10, 6), r.destination) : null),
            td(isNum(r.created_height) ? 'block ' + fmtNum(r.created_height) : null, 'num right'),
            td(r.replaces ? mono(shortId(r.replaces, 10, 6), r.replaces) : null))), ''));
      }
    }
    const payment = section('Payment', payParts.length ? payParts : el('p', { class: 'muted', text: 'No payment details.' }));

    // channel and lease
    const ch = o.channel, lease = d.lease;
    const chanParts = [];
    if (ch) chanParts.push(kv([
      ['Funded', timeEl(ch.funded_at, true)],
      ['Channel expires', timeEl(ch.expires_at, true)],
      ['Funding outpoint', ch.funding_outpoint ? mw(ch.funding_outpoint) : null, 'wide'],
    ], 'grid-kv'));
    if (lease) chanParts.push(el('h3', { text: 'Lease' }), kv([
      ['State', stateBadge(lease.state)],
      ['End block', fmtNum(lease.lease_end_block)],
      ['Ends', endsText(lease.blocks_left)],
      ['Action', el('span', { class: 'mono', text: String(lease.action ?? '—') })],
      ['Short channel id', lease.short_channel_id ? mono(lease.short_channel_id) : null],
      ['Why', lease.why ? el('span', { text: String(lease.why) }) : null, 'wide'],
      ['Channel id', lease.channel_id ? mw(lease.channel_id) : null, 'wide'],
    ], 'grid-kv'));
    const channel = section('Channel', chanParts.length ? chanParts : el('p', { class: 'muted', text: 'No channel yet.' }));

    setView(head, failBox, el('div', { class: 'grid order-grid' },
      el('div', { class: 'col' }, figures, payment, channel), el('div', { class: 'col' }, timeline)));
  }

  function marginCell(m) {
    if (!isNum(m)) return td(null, 'num right');
    const warn = Number(m) < CLTV_WARN;
    return td(el('span', { class: warn ? 'badge badge-danger' : 'badge badge-ok', title: warn ? 'Less than ' + CLTV_WARN + ' blocks left: the payment will soon be failed back' : null, text: fmtNum(m) + ' blocks' }), 'num right');
  }

  async function viewHeld(token) {
    const d = await api('/api/held', { action: 'listing held payments (lsps1-listheld)' });
    if (token !== routeToken) return;
    setBlockheight(d.blockheight);
    const list = Array.isArray(d.orders) ? d.orders : [];
    const total = list.reduce((a, x) => a + (Number(x.amount_sat) || 0), 0);
    const rows = list.map((x) => el('tr', { dataset: { orderId: String(x.order_id) } },
      td(orderLink(x.order_id), 'mono'), td(x.peer_id ? mono(shortId(x.peer_id, 8, 4), x.peer_id) : null),
      td(badge(x.phase)), td(x.paid_method || null), td(fmtSat(x.amount_sat), 'num right'), td(fmtNum(x.htlcs), 'num right'),
      td(isNum(x.earliest_cltv_expiry) ? fmtNum(x.earliest_cltv_expiry) : null, 'num right'), marginCell(x.cltv_margin_blocks),
      td(timeEl(x.held_since), 'nowrap')));
    view.replaceChildren(
      pageHead('Held payments', `at block ${fmtNum(d.blockheight)}`, refreshBtn()),
      el('p', { class: 'lead' }, list.length
        ? `${nf.format(list.length)} order${list.length === 1 ? '' : 's'} holding ${fmtSat(total)}. A margin under ${CLTV_WARN} blocks means the payment is close to being failed back.`
        : 'Payments are held between receipt and the channel opening.'),
      el('section', { class: 'card flush' }, table('held-table', 'Held payments',
        ['Order', 'Peer', 'Phase', 'Paid by', ['Amount', 'right'], ['HTLCs', 'right'], ['Earliest CLTV', 'right'], ['Margin', 'right'], 'Held since'],
        rows, 'Nothing is held right now')));
  }

  async function viewLeases(token) {
    const d = await api('/api/leases', { action: 'listing leases (lsps1-listleases)' });
    if (token !== routeToken) return;
    setBlockheight(d.blockheight);
    const list = Array.isArray(d.leases) ? d.leases : [];
    const policyText = d.policy === 'close-idle'
      ? 'close-idle: once a lease ends, the channel is closed when it is idle.'
      : d.policy === 'keep' ? 'keep: channels stay open after their lease ends.' : String(d.policy ?? 'unknown');
    const rows = list.map((x) => {
      const left = Number(x.blocks_left);
      const soon = isNum(x.blocks_left) && left > 0 && left <= BLOCKS_PER_DAY;
      return el('tr', { dataset: { orderId: String(x.order_id) } },
        td(orderLink(x.order_id), 'mono'), td(x.peer_id ? mono(shortId(x.peer_id, 8, 4), x.peer_id) : null),
        td(x.short_channel_id ? mono(x.short_channel_id, x.channel_id) : x.channel_id ? mono(shortId(x.channel_id, 8, 4), x.channel_id) : null),
        td(fmtSat(x.lsp_balance_sat), 'num right'), td(fmtNum(x.lease_end_block), 'num right'),
        td(el('span', { class: soon ? 'warn-text' : null, text: endsText(x.blocks_left) }), 'num'),
        td(stateBadge(x.state)),
        td([el('span', { class: 'mono', text: String(x.action ?? '—') }), x.why ? el('div', { class: 'small muted why', text: String(x.why) }) : null]),
        td(x.state === 'active' ? el('button', { type: 'button', class: 'btn btn-small btn-danger-outline allow-close-btn', dataset: { orderId: String(x.order_id) },
          'aria-label': 'Allow closing the leased channel of order ' + x.order_id, text: 'Allow close…',
          on: { click: async () => { if (await doAllowClose(String(x.order_id))) route(); } } }) : null));
    });
    view.replaceChildren(
      pageHead('Leases', `at block ${fmtNum(d.blockheight)}`, refreshBtn()),
      el('p', { class: 'lead' }, el('strong', { text: 'Policy ' }), el('span', { id: 'lease-policy', class: 'policy', text: policyText })),
      el('section', { class: 'card flush' }, table('leases-table', 'Leases, ending soonest first',
        ['Order', 'Peer', 'Channel', ['LSP balance', 'right'], ['End block', 'right'], 'Ends', 'State', 'Action', ''],
        rows, 'No leases.')));
  }

  // ---------- router ----------
  let routeToken = 0;
  const NAV = { overview: 'nav-overview', orders: 'nav-orders', order: 'nav-orders', held: 'nav-held', leases: 'nav-leases' };
  let lastHash = null;
  function parseHash() {
    let h = location.hash.replace(/^#\/?/, '');
    const qi = h.indexOf('?');
    const params = new URLSearchParams(qi >= 0 ? h.slice(qi + 1) : '');
    if (qi >= 0) h = h.slice(0, qi);
    const parts = h.split('/');
    return { name: parts[0] || 'overview', arg: parts.slice(1).join('/'), params };
  }
  async function route() {
    const token = ++routeToken;
    const r = parseHash();
    if (location.hash !== lastHash) { if (lastHash !== null) clearStatus(); lastHash = location.hash; }
    for (const [name, id] of Object.entries(NAV)) {
      if (name === 'order') continue;
      const a = $(id);
      if (NAV[r.name] === id) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    redrawCharts = null;
    hideTip();
    if (dialog.open) closeDialog(false);
    if (!currentRune()) { showRuneForm(''); return; }
    runePanel.hidden = true;
    view.hidden = false;
    $('rune-forget').hidden = false;
    if (r.name !== 'overview') loadHeader();
    const titles = { overview: 'Overview', orders: 'Orders', order: 'Order', held: 'Held payments', leases: 'Leases' };
    document.title = (titles[r.name] || 'Not found') + ' · cln-lsps1';
    loading();
    let id = r.arg;
    try { id = decodeURIComponent(r.arg); } catch { /* keep it raw */ }
    try {
      if (r.name === 'overview') await viewOverview(token);
      else if (r.name === 'orders') await viewOrders(token, r.params);
      else if (r.name === 'held') await viewHeld(token);
      else if (r.name === 'leases') await viewLeases(token);
      else if (r.name === 'order' && id) await viewOrder(token, id);
      else {
        view.replaceChildren(el('div', { class: 'card empty-state' }, el('p', { text: 'There is no such page.' }), link('#/overview', 'Go to the overview')));
      }
    } catch (err) {
      if (token !== routeToken) return;
      if (err instanceof ApiError || err instanceof NeedRune) {
        failed(err, err.status === 404 && r.name === 'order'
          ? el('p', null, link('#/orders?q=' + encodeURIComponent(id), 'Search the orders for this text')) : null);
      } else { failed(new ApiError(-1, 'Something went wrong while drawing this page.')); throw err; }
    }
  }

  const skip = document.querySelector('.skip-link');
  if (skip) skip.addEventListener('click', (ev) => { ev.preventDefault(); view.focus(); });
  window.addEventListener('hashchange', () => { route(); view.focus({ preventScroll: true }); });
  route();
})();

// An event's detail as one line of text: `key: value` pairs (the store keeps objects), long
// values shortened. Always text, never markup.
function detailText(d) {
  const short = (v) => {
    const t = typeof v === 'string' ? v : JSON.stringify(v);
    return t.length > 80 ? t.slice(0, 77) + '…' : t;
  };
  if (d === null || typeof d !== 'object') return short(d);
  return Object.entries(d).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => k.replace(/_/g, ' ') + ': ' + short(v)).join(' · ');
}
