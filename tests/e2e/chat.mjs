// End-to-end test of the wsloop browser client (web/) in headless Chromium, driven by
// tests/browser.rs.
//
//   node chat.mjs BASE_URL SCREENSHOT_PATH
//
// Two pages in two browser contexts (two independent users) open BASE_URL, chat with each other
// and meet on the channel `e2e`. Then the script prints READY_FOR_RESTART and waits for a line
// RESTARTED on standard input, while the driver restarts the server on the same port. Both pages
// must notice, show a reconnecting state, reconnect by themselves (no reload), join `e2e` again
// by themselves, and carry chat and channel messages as before. Finally a screenshot of the
// first page goes to SCREENSHOT_PATH.
//
// Prints `E2E OK` and exits 0 when every check passed; otherwise prints `E2E FAILED: ...` and
// exits 1. Every wait is bounded, and the browser is closed on every path.
//
// Environment: CHROMIUM (default /usr/bin/chromium); WSLOOP_E2E_MARKER, if set, is added to the
// browser's command line as `--wsloop-e2e-marker=VALUE` so that the driver can find and kill a
// browser left behind if this script itself is killed.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

/** Bound on each wait for something the page should show. */
const STEP_TIMEOUT_MS = 15_000;
/** Bound on the driver's restart of the server. */
const RESTART_TIMEOUT_MS = 30_000;
/** Bound on the whole run: a backstop for anything not covered by a step bound. */
const RUN_TIMEOUT_MS = 120_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const [baseUrl, screenshotPath] = process.argv.slice(2);
if (!baseUrl || !screenshotPath) {
  console.error('usage: node chat.mjs BASE_URL SCREENSHOT_PATH');
  process.exit(2);
}

/** Lines from standard input, consumed one by one by `nextStdinLine`. */
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** A unique tag so that messages from an earlier run or step can never be mistaken for these. */
const nonce = Math.random().toString(36).slice(2, 8);

let browser = null;
/** Uncaught errors thrown by the page scripts: any of them fails the run. */
const pageErrors = [];

function log(message) {
  console.error(`[e2e] ${message}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function nextStdinLine(ms) {
  const next = await withTimeout(stdinLines.next(), ms, 'a line on standard input');
  if (next.done) throw new Error('standard input closed');
  return next.value.trim();
}

/** Waits until `predicate(arg)`, evaluated in the page, is true; `what` names it on timeout. */
async function waitIn(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: STEP_TIMEOUT_MS, polling: 100 });
  } catch (error) {
    throw new Error(`${page.label}: ${what} (${error.message.split('\n')[0]})`);
  }
}

/** Waits until the page's message list has an entry whose text is exactly `text`. */
function waitForMessage(page, text) {
  return waitIn(
    page,
    `message list shows ${JSON.stringify(text)}`,
    (expected) =>
      [...document.querySelectorAll('#messages li')].some((li) => li.textContent === expected),
    text,
  );
}

/** Waits until the page shows the connection as open and has its id from `welcome`. */
async function waitOpen(page) {
  await waitIn(
    page,
    'status shows open with an id from welcome',
    () =>
      document.getElementById('status').textContent === 'open' &&
      window.wsloop.state === 'open' &&
      typeof window.wsloop.id === 'string',
  );
  return page.evaluate(() => window.wsloop.id);
}

/** Waits until the channel list shows `channel` as joined (confirmed by `subscribed`). */
function waitJoined(page, channel) {
  return waitIn(
    page,
    `channel list shows #${channel} as joined`,
    (name) => {
      const li = document.querySelector(`#channels li[data-channel="${name}"]`);
      return li !== null && li.dataset.state === 'joined' && li.textContent === `#${name}`;
    },
    channel,
  );
}

async function sendChat(page, content) {
  await page.fill('#chat-input', content);
  await page.press('#chat-input', 'Enter');
}

async function subscribe(page, channel) {
  await page.fill('#channel-input', channel);
  await page.click('#subscribe-btn');
}

async function publish(page, channel, content) {
  await page.fill('#channel-input', channel);
  await page.fill('#publish-input', content);
  await page.press('#publish-input', 'Enter');
}

/**
 * Records every connection state the page shows, from now on, in `window.__e2eStates`, and
 * tags the document so that a reload would be noticed.
 */
function watchStates(page) {
  return page.evaluate((tag) => {
    const status = document.getElementById('status');
    window.__e2eStates = [status.dataset.state];
    window.__e2eTag = tag;
    new MutationObserver(() => {
      const states = window.__e2eStates;
      if (states[states.length - 1] !== status.dataset.state) states.push(status.dataset.state);
    }).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
  }, nonce);
}

async function openPage(label) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.label = label;
  page.on('pageerror', (error) => {
    pageErrors.push(`${label}: ${error.message}`);
    log(`${label} page error: ${error.message}`);
  });
  page.on('console', (message) => log(`${label} console.${message.type()}: ${message.text()}`));
  const response = await page.goto(baseUrl, { timeout: STEP_TIMEOUT_MS });
  if (!response || response.status() !== 200) {
    throw new Error(`${label}: GET ${baseUrl} answered ${response && response.status()}`);
  }
  return page;
}

/** What a page shows, for the failure report. */
async function describe(page) {
  try {
    return await page.evaluate(() => {
      const text = (id) => document.getElementById(id).textContent;
      const items = (id) =>
        [...document.querySelectorAll(`#${id} li`)].map((li) => li.textContent);
      return JSON.stringify({
        status: text('status'),
        me: text('me'),
        latency: text('latency'),
        messages: items('messages'),
        channels: items('channels'),
        errors: items('errors'),
        statesSeen: window.__e2eStates,
      });
    });
  } catch (error) {
    return `(page not readable: ${error.message})`;
  }
}

async function run() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Playwright gives the browser a fresh, empty profile directory and removes it at close.
    args: process.env.WSLOOP_E2E_MARKER
      ? [...CHROMIUM_ARGS, `--wsloop-e2e-marker=${process.env.WSLOOP_E2E_MARKER}`]
      : CHROMIUM_ARGS,
    timeout: 30_000,
  });
  log(`browser ${browser.version()}`);

  const a = await openPage('page A');
  const b = await openPage('page B');
  run.pages = [a, b];

  // 1. Both connect and learn their ids; the latency is measured.
  const idA = await waitOpen(a);
  const idB = await waitOpen(b);
  if (idA === idB) throw new Error(`both pages got the id ${idA}`);
  for (const page of [a, b]) {
    await waitIn(page, 'latency shows N ms', () =>
      /^\d+ ms$/.test(document.getElementById('latency').textContent),
    );
  }
  log(`open: A is ${idA}, B is ${idB}`);

  // 2. A chat from A reaches B, and A itself. Without a token the name is the id.
  const chat1 = `hello from A ${nonce}`;
  await sendChat(a, chat1);
  await waitForMessage(b, `${idA}: ${chat1}`);
  await waitForMessage(a, `${idA}: ${chat1}`);
  log('chat delivered');

  // 3. Both join `e2e`; B publishes, A (and B) show it with the channel prefix.
  await subscribe(a, 'e2e');
  await subscribe(b, 'e2e');
  await waitJoined(a, 'e2e');
  await waitJoined(b, 'e2e');
  const pub1 = `news from B ${nonce}`;
  await publish(b, 'e2e', pub1);
  await waitForMessage(a, `#e2e ${idB}: ${pub1}`);
  await waitForMessage(b, `#e2e ${idB}: ${pub1}`);
  log('channel message delivered');

  // 4. A server error is shown: leaving a channel B is not in.
  await b.fill('#channel-input', `not-joined-${nonce}`);
  await b.click('#unsubscribe-btn');
  await waitIn(b, 'errors show not_subscribed', () =>
    [...document.querySelectorAll('#errors li')].some((li) =>
      li.textContent.startsWith('not_subscribed: '),
    ),
  );
  log('error shown');

  // 5. The server restarts on the same port.
  await watchStates(a);
  await watchStates(b);
  console.log('READY_FOR_RESTART');
  const line = await nextStdinLine(RESTART_TIMEOUT_MS);
  if (line !== 'RESTARTED') throw new Error(`expected RESTARTED on stdin, got ${JSON.stringify(line)}`);
  log('server restarted');

  // 6. Both pages went through "reconnecting" and are open again, in the same document.
  const ids = [];
  for (const page of [a, b]) {
    await waitIn(page, 'showed a reconnecting state, then open again', () =>
      window.__e2eStates.includes('reconnecting') && window.wsloop.state === 'open',
    );
    ids.push(await waitOpen(page));
    const tag = await page.evaluate(() => window.__e2eTag);
    if (tag !== nonce) throw new Error(`${page.label}: the page was reloaded`);
    const attempts = await page.evaluate(() => window.wsloop.attempts);
    if (attempts !== 0) throw new Error(`${page.label}: attempts is ${attempts} after open, not 0`);
    log(`${page.label} states seen: ${await page.evaluate(() => window.__e2eStates.join(' > '))}`);
  }
  const [idA2, idB2] = ids;

  // 7. Chat works again, both ways round.
  const chat2 = `hello again from B ${nonce}`;
  await sendChat(b, chat2);
  await waitForMessage(a, `${idB2}: ${chat2}`);
  await waitForMessage(b, `${idB2}: ${chat2}`);
  log('chat delivered after restart');

  // 8. Both pages joined `e2e` again by themselves; a channel message gets through.
  await waitJoined(a, 'e2e');
  await waitJoined(b, 'e2e');
  const pub2 = `more news from B ${nonce}`;
  await publish(b, 'e2e', pub2);
  await waitForMessage(a, `#e2e ${idB2}: ${pub2}`);
  const chat3 = `A is back too ${nonce}`;
  await sendChat(a, chat3);
  await waitForMessage(b, `${idA2}: ${chat3}`);
  log('channel message delivered after restart');

  if (pageErrors.length > 0) throw new Error(`page script errors: ${pageErrors.join('; ')}`);

  await a.screenshot({ path: screenshotPath, fullPage: true, timeout: STEP_TIMEOUT_MS });
  log(`screenshot written to ${screenshotPath}`);
}

async function main() {
  const backstop = setTimeout(() => {
    console.log(`E2E FAILED: the whole run took more than ${RUN_TIMEOUT_MS} ms`);
    process.exit(1); // Playwright kills the browser on exit
  }, RUN_TIMEOUT_MS);
  let failure = null;
  try {
    await run();
  } catch (error) {
    failure = error;
  }
  if (failure) {
    for (const page of run.pages || []) log(`${page.label} shows ${await describe(page)}`);
    if (run.pages) {
      await run.pages[0]
        .screenshot({ path: screenshotPath, fullPage: true, timeout: 5_000 })
        .catch(() => {});
    }
  }
  if (browser) await withTimeout(browser.close(), 10_000, 'closing the browser').catch(log);
  clearTimeout(backstop);
  if (failure) {
    console.log(`E2E FAILED: ${failure.message}`);
    process.exit(1);
  }
  console.log('E2E OK');
  process.exit(0);
}

main();
