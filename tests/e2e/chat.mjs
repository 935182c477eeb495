// End-to-end test of the wsloop browser client (web/) in headless Chromium, driven by
// tests/browser.rs.
//
//   node chat.mjs BASE_URL SCREENSHOT_DIR
//
// Page A (desktop, 1280 px wide) and page B (phone, 390 px), in two browser contexts (two
// independent users), open BASE_URL, chat with each other, meet on the channel `e2e` and
// publish through the Publish form's own channel field, which says how many received each
// publication. Identical errors collapse into one line with a count. The layout is checked at
// both widths (no sideways scrolling, no header item broken over two lines), the focus order
// by pressing Tab, and accessibility with axe-core run inside the page (no serious or critical
// violation). Then the script prints READY_FOR_RESTART and waits for a line RESTARTED on
// standard input, while the driver restarts the server on the same port. Both pages must show
// a reconnecting state with no stale latency, reconnect by themselves (no reload), clear the
// old errors, mark in the message list where the connection dropped and where it came back,
// join `e2e` again by themselves, and carry chat and channel messages as before. The restart
// started new histories (no Redis): each page marks that messages of each channel and of the
// chat may be missing (PROTOCOL.md, "Recovery").
//
// Recovery: page A is cut off with the server API (`POST /api/disconnect`, close 4003) while
// the backend broadcasts and publishes on `e2e` (`/api/broadcast`, `/api/publish`); back, it
// shows every missed message once, in order, with no gap marker. Cut off again while more is
// published on `e2e` than the server's history holds (--history-size 4), it shows what is
// left and "#e2e: 2 messages may be missing" before it.
//
// Page C (phone, with Playwright's fake clock so that 22 minutes of backoff pass at once) sees
// every connection refused: it must reconnect at once with the backoff
// reset when the tab becomes visible or the network comes back, give up after 50 attempts with
// a "Reconnect now" button, and connect when that button is pressed.
//
// Screenshots (desktop.png, phone.png, phone-gave-up.png, phone-refused.png) go to
// SCREENSHOT_DIR, each announced by a line `SCREENSHOT PATH`. The command line, the
// environment, the verdict (`E2E OK`) and the helpers shared with redis-restart.mjs are in
// harness.mjs.

import {
  DESKTOP,
  PHONE,
  STEP_TIMEOUT_MS,
  askDriver,
  backendSends,
  baseUrl,
  checkAccessibility,
  expectEqual,
  log,
  logIn,
  markers,
  nonce,
  openPage,
  runE2E,
  screenshot,
  sendChat,
  serverApi,
  sinceReturn,
  subscribe,
  waitForMessage,
  waitIn,
  waitJoined,
  waitMarkers,
  waitOpen,
} from './harness.mjs';

/** Bound on the whole run: a backstop for anything not covered by a step bound. */
const RUN_TIMEOUT_MS = 150_000;
/** The page's reconnection policy (web/app.js): it gives up after this many attempts... */
const MAX_ATTEMPTS = 50;
/** ...each delayed by at most this much. */
const MAX_DELAY_MS = 30_000;
/** What the latency shows without a measurement. */
const NO_LATENCY = '\u2014';

/**
 * Like `waitIn`, but polls from here: `waitIn`'s polling crawls in a page on a paused fake
 * clock.
 */
async function pollIn(page, what, predicate) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!(await page.evaluate(predicate))) {
    if (Date.now() > deadline) throw new Error(`${page.label}: ${what} (timed out)`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until the latency shows a measurement. */
function waitLatency(page) {
  return waitIn(page, 'latency shows N ms', () =>
    /^\d+ ms$/.test(document.getElementById('latency').textContent),
  );
}

/** Waits until the Publish form's answer line says exactly `text`. */
function waitPublished(page, text) {
  return waitIn(
    page,
    `publish result says ${JSON.stringify(text)}`,
    (expected) => document.getElementById('publish-result').textContent === expected,
    text,
  );
}

/** The error lines, newest first. */
function errorLines(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#errors li')].map((li) => li.textContent),
  );
}

/**
 * Publishes through the Publish form to `channel`, with something else in the Join/Leave box
 * so that a page taking the channel from there would be caught.
 */
async function publish(page, channel, content) {
  await page.fill('#channel-input', `decoy-${nonce}`);
  await page.fill('#publish-channel', channel);
  await page.fill('#publish-input', content);
  await page.press('#publish-input', 'Enter');
}

/**
 * Cuts `page` (user `user`) off with the server API `api`, has the backend send `events`
 * ([channel or null for the chat, content]) while it is away, and waits until it is open again. Once
 * the page has seen the close it waits at least 800 ms before it reconnects (the backoff);
 * the publications take a few, and the page must still be waiting when they are done, or the
 * step proves nothing.
 */
async function missWhileAway(api, page, user, events) {
  expectEqual(page, 'cut off by the API', await api.post('/api/disconnect', { user }), { disconnected: 1 });
  await waitIn(page, 'waiting to reconnect after the cut', () => window.wsloop.state === 'reconnecting');
  await backendSends(api, events);
  const state = await page.evaluate(() => window.wsloop.state);
  if (state !== 'reconnecting') throw new Error(`${page.label}: ${state} before the publications were done`);
  await waitIn(page, 'open again after the cut', () => window.wsloop.state === 'open');
}

/**
 * Records every connection state the page shows, from now on, in `window.__e2eStates`, every
 * latency shown while not open in `window.__e2eStaleLatency`, and tags the document so that a
 * reload would be noticed.
 */
function watchStates(page) {
  return page.evaluate(
    ([tag, noLatency]) => {
      const status = document.getElementById('status');
      const latency = document.getElementById('latency');
      window.__e2eStates = [status.dataset.state];
      window.__e2eStaleLatency = [];
      window.__e2eTag = tag;
      const observer = new MutationObserver(() => {
        const states = window.__e2eStates;
        const state = status.dataset.state;
        if (states[states.length - 1] !== state) states.push(state);
        if (state !== 'open' && latency.textContent !== noLatency) {
          window.__e2eStaleLatency.push(`${state}: ${latency.textContent}`);
        }
      });
      const options = { attributes: true, childList: true, characterData: true, subtree: true };
      observer.observe(status, options);
      observer.observe(latency, options);
    },
    [nonce, NO_LATENCY],
  );
}

/**
 * The layout at this page's width: nothing wider than the window (no sideways scrolling), and
 * each header label and value on one line (at 390 px the old header broke "1 / ms").
 */
async function checkLayout(page) {
  const problems = await page.evaluate(() => {
    const found = [];
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth > width) {
      found.push(`page is ${document.documentElement.scrollWidth} px wide in a ${width} px window`);
    }
    // No box sticking out on the right (which scrollWidth rounds away when it is a fraction).
    for (const el of document.querySelectorAll('body *')) {
      const right = el.getBoundingClientRect().right;
      if (right > width + 0.1) {
        found.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}.${el.className} ends at ${right} px`);
        break;
      }
    }
    // Every piece of header text on one line...
    const walker = document.createTreeWalker(document.querySelector('.facts'), NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.textContent.trim() === '') continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      const rects = [...range.getClientRects()].filter((r) => r.width > 0);
      const tops = new Set(rects.map((r) => Math.round(r.top)));
      if (tops.size > 1) found.push(`"${node.textContent}" is broken over ${tops.size} lines`);
      if (rects.some((r) => r.right > width)) found.push(`"${node.textContent}" overflows`);
    }
    // ...and each label on the same line as its value.
    for (const fact of document.querySelectorAll('.fact')) {
      const middle = (el) => {
        const r = el.getBoundingClientRect();
        return (r.top + r.bottom) / 2;
      };
      const [dt, dd] = [fact.querySelector('dt'), fact.querySelector('dd')];
      if (Math.abs(middle(dt) - middle(dd)) > 4) {
        found.push(`"${dt.textContent}" is not on the line of its value "${dd.textContent.trim()}"`);
      }
    }
    return found;
  });
  if (problems.length > 0) throw new Error(`${page.label}: layout: ${problems.join('; ')}`);
}

/** Tab from the top of the page: the focus visits the controls in reading order. */
async function checkFocusOrder(page, expected) {
  await page.click('h1'); // the next Tab starts from the top of the page
  const seen = [];
  for (let i = 0; i < expected.length; i += 1) {
    await page.keyboard.press('Tab');
    seen.push(
      await page.evaluate(() => {
        const el = document.activeElement;
        const chip = el?.closest('#channels li');
        return chip ? `chip:${chip.dataset.channel}` : el?.id || el?.tagName;
      }),
    );
  }
  expectEqual(page, 'focus order', seen, expected);
}

/**
 * Page C: with a fake clock and every connection refused, the backoff is reset by
 * `visibilitychange` and `online`, the page gives up after MAX_ATTEMPTS, and "Reconnect now"
 * connects once the server is there.
 */
async function checkGivingUp() {
  const c = await openPage('page C (phone)', PHONE, async (page) => {
    await page.clock.install();
    // A network that refuses every connection while `__e2eNetworkDown` is set. (Real refusals
    // would do, but Chromium throttles WebSocket connections after failures, by seconds each:
    // 50 of them would take minutes.) Once it is cleared, the browser's own WebSocket is used.
    await page.addInitScript(() => {
      const Real = window.WebSocket;
      window.__e2eNetworkDown = true;
      class Refused extends EventTarget {
        constructor(url) {
          if (!window.__e2eNetworkDown) return new Real(url);
          super();
          this.url = url;
          this.readyState = Real.CONNECTING;
          Promise.resolve().then(() => {
            this.readyState = Real.CLOSED;
            this.dispatchEvent(new Event('error'));
            this.dispatchEvent(new CloseEvent('close', { code: 1006, wasClean: false }));
          });
        }
        close() {}
        send() {
          throw new DOMException('not open', 'InvalidStateError');
        }
      }
      for (const name of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Refused[name] = Real[name];
      window.WebSocket = Refused;
    });
  });
  await logIn(c, `Cid-${nonce}`);
  const attempts = () => c.evaluate(() => window.wsloop.attempts);
  /**
   * Lets the pending reconnection fire; the refusal comes in a microtask, so the attempt has
   * failed when the clock call returns. (No `waitIn` here: its polling crawls under the fake
   * clock.)
   */
  async function failOnce() {
    const before = await attempts();
    await c.clock.fastForward(MAX_DELAY_MS + 1_000);
    const after = await c.evaluate(() => [window.wsloop.state, window.wsloop.attempts]);
    if (after[0] !== 'gave-up' && after[1] !== before + 1) {
      throw new Error(`page C: after attempt ${before + 1} the page shows ${after}`);
    }
  }

  await waitIn(c, 'reconnecting after the first failure', () =>
    window.wsloop.state === 'reconnecting',
  );
  expectEqual(c, 'latency while never connected', await c.textContent('#latency'), NO_LATENCY);
  expectEqual(c, '"Reconnect now" visible', await c.isVisible('#reconnect-btn'), true);
  await checkAccessibility(c, 'while reconnecting');
  // From here on, time moves only when this script moves it.
  await c.clock.pauseAt(Date.now() + 60_000);

  // The same client-side error three times is one line with a count.
  for (let i = 0; i < 3; i += 1) await sendChat(c, `into the void ${i}`);
  const errors = await errorLines(c);
  expectEqual(c, 'errors', errors.length, 1);
  if (!/^not_connected: .* ×3$/.test(errors[0])) {
    throw new Error(`page C: error line ${JSON.stringify(errors[0])} is not "not_connected: ... ×3"`);
  }

  // A tab becoming visible, then the network coming back, each start over at attempt 1.
  const resets = [
    ['visibilitychange', () => c.evaluate(() => document.dispatchEvent(new Event('visibilitychange')))],
    ['online', async () => {
      await c.context().setOffline(true);
      await c.context().setOffline(false);
    }],
  ];
  for (const [event, fire] of resets) {
    while ((await attempts()) < 4) await failOnce();
    await fire();
    await pollIn(
      c,
      `${event} reconnected at once with the backoff reset (attempts back to 1)`,
      () => window.wsloop.state === 'reconnecting' && window.wsloop.attempts === 1,
    );
    log(`page C: ${event} reset the backoff`);
  }

  // Giving up after MAX_ATTEMPTS, with a button to try again.
  for (let i = 0; i < MAX_ATTEMPTS + 5 && (await c.evaluate(() => window.wsloop.state)) !== 'gave-up'; i += 1) {
    await failOnce();
  }
  expectEqual(c, 'state after the attempts', await c.evaluate(() => window.wsloop.state), 'gave-up');
  expectEqual(c, 'status', await c.textContent('#status'), `gave up after ${MAX_ATTEMPTS} attempts`);
  expectEqual(c, '"Reconnect now" visible', await c.isVisible('#reconnect-btn'), true);
  // Nothing is pending any more; let time flow again (axe-core and screenshots need timers).
  await c.clock.resume();
  await checkLayout(c);
  await checkAccessibility(c, 'after giving up');
  await screenshot(c, 'phone-gave-up.png');

  // The network is back: the button connects.
  await c.evaluate(() => {
    window.__e2eNetworkDown = false;
  });
  await c.click('#reconnect-btn');
  await waitOpen(c);
  expectEqual(c, '"Reconnect now" visible when open', await c.isVisible('#reconnect-btn'), false);
  expectEqual(c, 'errors after connecting', await errorLines(c), []);
  log('page C: gave up, then "Reconnect now" connected');
}

async function run() {
  const a = await openPage('page A (desktop)', DESKTOP);
  const b = await openPage('page B (phone)', PHONE);

  // 1. Each logs in with a nickname, connects and learns its id; the latency is measured.
  const [nameA, nameB] = [`Ann-${nonce}`, `Bob-${nonce}`];
  await logIn(a, nameA);
  await logIn(b, nameB);
  const idA = await waitOpen(a);
  const idB = await waitOpen(b);
  if (idA === idB) throw new Error(`both pages got the id ${idA}`);
  expectEqual(a, 'who the page says it is', await a.textContent('#me'), `${nameA} (id ${idA})`);
  for (const page of [a, b]) await waitLatency(page);
  log(`open: A is ${idA}, B is ${idB}`);

  // 2. A chat from A reaches B, and A itself, with its time shown, under A's nickname.
  const chat1 = `hello from A ${nonce}`;
  await sendChat(a, chat1);
  await waitForMessage(b, `${nameA}: ${chat1}`);
  await waitForMessage(a, `${nameA}: ${chat1}`);
  log('chat delivered');

  // 3. Both join `e2e`, which becomes the Publish target in its own field; B publishes there,
  // A (and B) show it with the channel prefix, and B learns that two connections received it.
  await subscribe(a, 'e2e');
  await subscribe(b, 'e2e');
  await waitJoined(a, 'e2e');
  await waitJoined(b, 'e2e');
  for (const page of [a, b]) {
    expectEqual(page, 'Publish channel after joining', await page.inputValue('#publish-channel'), 'e2e');
  }
  const pub1 = `news from B ${nonce}`;
  await publish(b, 'e2e', pub1);
  await waitForMessage(a, `#e2e ${nameB}: ${pub1}`);
  await waitForMessage(b, `#e2e ${nameB}: ${pub1}`);
  await waitPublished(b, '#e2e: received by 2 connections.');
  log('channel message delivered');

  // 4. Publication feedback: to a channel nobody is in, and to one only B is in.
  const empty = `empty-${nonce}`;
  await publish(a, empty, 'anyone?');
  await waitPublished(
    a,
    `#${empty}: nobody received it; no one on this server is subscribed. ` +
      `You are not subscribed to #${empty}, so you do not see it.`,
  );
  const bOnly = `b-only-${nonce}`;
  await subscribe(b, bOnly);
  await waitJoined(b, bOnly);
  await publish(a, bOnly, `for B only ${nonce}`);
  await waitForMessage(b, `#${bOnly} ${nameA}: for B only ${nonce}`);
  await waitPublished(
    a,
    `#${bOnly}: received by 1 connection. You are not subscribed to #${bOnly}, so you do not see it.`,
  );
  log('publication feedback shown');

  // 5. A server error is shown, and the same error twice is one line with a count.
  await b.fill('#channel-input', `not-joined-${nonce}`);
  await b.click('#unsubscribe-btn');
  await b.click('#unsubscribe-btn');
  await waitIn(b, 'errors show one not_subscribed line counted ×2', () => {
    const lines = [...document.querySelectorAll('#errors li')].map((li) => li.textContent);
    return lines.length === 1 && lines[0].startsWith('not_subscribed: ') && lines[0].endsWith(' ×2');
  });
  log('error shown once with a count');

  // 6. Layout, focus order and accessibility at both widths.
  for (const page of [a, b]) {
    await checkLayout(page);
    await checkAccessibility(page, 'while open');
  }
  const chipOrder = [`chip:e2e`];
  await checkFocusOrder(a, [
    'logout-btn', 'messages', 'chat-input', 'chat-send', 'channel-input', 'subscribe-btn', 'unsubscribe-btn',
    ...chipOrder, 'publish-channel', 'publish-input', 'publish-btn',
  ]);
  log('layout, focus order and accessibility checked');

  // Page D logs in, then its cookie is replaced by a forged one: after the restart its
  // upgrade is refused (401), and the page must say so and offer the login, not reconnect
  // for ever.
  const d = await openPage('page D (phone)', PHONE);
  await logIn(d, `Dee-${nonce}`);
  await waitOpen(d);
  await d.context().addCookies([
    { name: 'wsloop_session', value: 'v1.e30.forged', url: baseUrl, httpOnly: true, sameSite: 'Strict' },
  ]);

  // 7. The server restarts on the same port.
  await watchStates(a);
  await watchStates(b);
  await askDriver('READY_FOR_RESTART', 'RESTARTED');
  log('server restarted');

  // 8. Both pages went through "reconnecting" with no latency shown, are open again in the
  // same document, with the old errors gone and the drop and the return marked in the list.
  for (const page of [a, b]) {
    await waitIn(page, 'showed a reconnecting state, then open again', () =>
      window.__e2eStates.includes('reconnecting') && window.wsloop.state === 'open',
    );
    await waitOpen(page);
    const tag = await page.evaluate(() => window.__e2eTag);
    if (tag !== nonce) throw new Error(`${page.label}: the page was reloaded`);
    const attempts = await page.evaluate(() => window.wsloop.attempts);
    if (attempts !== 0) throw new Error(`${page.label}: attempts is ${attempts} after open, not 0`);
    const stale = await page.evaluate(() => window.__e2eStaleLatency);
    expectEqual(page, 'latency shown while not open', stale, []);
    expectEqual(page, 'errors after reconnecting', await errorLines(page), []);
    // The restarted server has new histories: nothing could be recovered, and each stream
    // the page follows says so, after the return (channels first: they are asked first).
    const gaps = page === a ? ['#e2e'] : ['#e2e', `#${bOnly}`];
    await waitMarkers(page, [
      ['lost', 'Connection lost', true],
      ['reconnected', 'Reconnected', true],
      ...gaps.map((channel) => ['gap', `${channel}: messages may be missing`, true]),
      ['gap', 'messages may be missing', true],
    ]);
    await waitLatency(page);
    await checkAccessibility(page, 'with the drop and the return marked');
    log(`${page.label} states seen: ${await page.evaluate(() => window.__e2eStates.join(' > '))}`);
  }
  // 9. Chat works again, both ways round.
  const chat2 = `hello again from B ${nonce}`;
  await sendChat(b, chat2);
  await waitForMessage(a, `${nameB}: ${chat2}`);
  await waitForMessage(b, `${nameB}: ${chat2}`);
  log('chat delivered after restart');

  // 10. Both pages joined `e2e` again by themselves; a channel message gets through.
  await waitJoined(a, 'e2e');
  await waitJoined(b, 'e2e');
  const pub2 = `more news from B ${nonce}`;
  await publish(b, 'e2e', pub2);
  await waitForMessage(a, `#e2e ${nameB}: ${pub2}`);
  await waitPublished(b, '#e2e: received by 2 connections.');
  const chat3 = `A is back too ${nonce}`;
  await sendChat(a, chat3);
  await waitForMessage(b, `${nameA}: ${chat3}`);
  log('channel message delivered after restart');

  // 10a. Recovery: page A misses two chats and two channel messages, then shows them once, in
  // order (its channels are asked for first), with no gap; then a live chat follows them.
  const restartMarkers = await markers(a);
  const back = [['lost', 'Connection lost', true], ['reconnected', 'Reconnected', true]];
  const api = await serverApi(baseUrl);
  const missed = [[null, `r1-c1 ${nonce}`], ['e2e', `r1-p1 ${nonce}`], [null, `r1-c2 ${nonce}`], ['e2e', `r1-p2 ${nonce}`]];
  await missWhileAway(api, a, nameA, missed);
  const live1 = `live after the return ${nonce}`;
  await sendChat(b, live1);
  await waitForMessage(a, `${nameB}: ${live1}`);
  expectEqual(a, 'messages since the return', await sinceReturn(a), [
    `#e2e backend: r1-p1 ${nonce}`,
    `#e2e backend: r1-p2 ${nonce}`,
    `backend: r1-c1 ${nonce}`,
    `backend: r1-c2 ${nonce}`,
    `${nameB}: ${live1}`,
  ]);
  expectEqual(a, 'markers after the recovery', await markers(a), [...restartMarkers, ...back]);
  log('page A recovered what it missed');

  // 10b. More than the history holds (4): what is left, after the gap's marker.
  const many = [1, 2, 3, 4, 5, 6].map((n) => ['e2e', `r2-p${n} ${nonce}`]);
  await missWhileAway(api, a, nameA, many);
  const live2 = `live after the gap ${nonce}`;
  await sendChat(b, live2);
  await waitForMessage(a, `${nameB}: ${live2}`);
  expectEqual(a, 'messages since the second return', await sinceReturn(a), [
    '[gap] #e2e: 2 messages may be missing',
    ...[3, 4, 5, 6].map((n) => `#e2e backend: r2-p${n} ${nonce}`),
    `${nameB}: ${live2}`,
  ]);
  await checkAccessibility(a, 'with recovered messages and a gap marked');
  log('page A marked the gap it could not fill');

  await screenshot(a, 'desktop.png');
  await screenshot(b, 'phone.png');

  // 10c. Page D's refused upgrade is shown as "not logged in" with the form, and it stops.
  await waitIn(d, 'the refused page shows the login form and stops', () =>
    window.wsloop.state === 'logged-out' &&
    !document.getElementById('login').hidden &&
    document.getElementById('status').textContent === 'not logged in' &&
    document.getElementById('login-why').textContent ===
      'Not logged in, so the server refused the connection. Log in again.',
  );
  const attemptsD = await d.evaluate(() => window.wsloop.attempts);
  await d.waitForTimeout(3_000);
  expectEqual(d, 'attempts after the refusal (no more tries)', await d.evaluate(() => window.wsloop.attempts), attemptsD);
  expectEqual(d, 'state after the refusal', await d.evaluate(() => window.wsloop.state), 'logged-out');
  await checkAccessibility(d, 'refused, with the login form');
  await screenshot(d, 'phone-refused.png');
  await logIn(d, `Dee-${nonce}`);
  await waitOpen(d);
  log('page D: refused upgrade shown, logged in again');

  // 11. Giving up, and the ways back.
  await checkGivingUp();
}

runE2E(run, RUN_TIMEOUT_MS);

