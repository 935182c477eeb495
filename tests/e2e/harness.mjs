// What the browser scripts run by tests/browser.rs share (chat.mjs, redis-restart.mjs): the
// command line, launching Chromium and opening pages, bounded waits for what a page shows, the
// conversation with the driver on standard input and output, the server API, and the verdict.
//
//   node SCRIPT.mjs BASE_URL SCREENSHOT_DIR
//
// Each script passes its scenario to `runE2E`, which prints `E2E OK` and exits 0 when every
// check passed; otherwise it prints `E2E FAILED: ...`, what each page shows and a screenshot of
// each (failed-N.png), and exits 1. Every wait is bounded, and the browser is closed on every
// path.
//
// Environment: CHROMIUM (default /usr/bin/chromium); WSLOOP_E2E_API_KEY, the server API's key;
// WSLOOP_E2E_MARKER, if set, is added to the browser's command line as
// `--wsloop-e2e-marker=VALUE` so that the driver can find and kill a browser left behind if
// the script itself is killed.

import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium, request } from 'playwright-core';

/** Bound on each wait for something the page should show. */
export const STEP_TIMEOUT_MS = 15_000;
/** Bound on the driver's answer (it stops or restarts a server). */
const DRIVER_TIMEOUT_MS = 30_000;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

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

export const [baseUrl, screenshotDir] = process.argv.slice(2);
if (!baseUrl || !screenshotDir) {
  console.error(`usage: node ${basename(process.argv[1])} BASE_URL SCREENSHOT_DIR`);
  process.exit(2);
}
// Over https:// the server shows a certificate of the test's own CA, which the browser's fresh
// profile cannot trust: certificate errors are ignored (the page and its wss:// connection).
if (baseUrl.startsWith('https:')) CHROMIUM_ARGS.push('--ignore-certificate-errors');

/** axe-core's browser build, injected into the pages for the accessibility check. */
const AXE_PATH = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

/** Lines from standard input, consumed one by one by `askDriver`. */
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** A unique tag so that messages from an earlier run or step can never be mistaken for these. */
export const nonce = Math.random().toString(36).slice(2, 8);

let browser = null;
/** Every page opened, for the failure report. */
const pages = [];
/** Uncaught errors thrown by the page scripts: any of them fails the run. */
const pageErrors = [];
/** The server API request contexts, disposed of at the end. */
const apis = [];

const started = Date.now();

export function log(message) {
  console.error(`[e2e] ${((Date.now() - started) / 1000).toFixed(1)}s ${message}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Prints `requestLine` for the driver (tests/browser.rs) and waits for its answer, which must
 * be `answerLine`: the driver stops or restarts a server meanwhile.
 */
export async function askDriver(requestLine, answerLine) {
  console.log(requestLine);
  const next = await withTimeout(stdinLines.next(), DRIVER_TIMEOUT_MS, `${answerLine} on standard input`);
  if (next.done) throw new Error('standard input closed');
  const line = next.value.trim();
  if (line !== answerLine) {
    throw new Error(`expected ${answerLine} on stdin, got ${JSON.stringify(line)}`);
  }
}

export function expectEqual(page, what, actual, expected) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(
      `${page.label}: ${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`,
    );
  }
}

/** Waits until `predicate(arg)`, evaluated in the page, is true; `what` names it on timeout. */
export async function waitIn(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: STEP_TIMEOUT_MS, polling: 100 });
  } catch (error) {
    throw new Error(`${page.label}: ${what} (${error.message.split('\n')[0]})`);
  }
}

/**
 * Waits until the message list has an entry whose text, less its time, is exactly `text`, and
 * checks that the time is shown: a <time> with the message's moment as `datetime` and a
 * clock time as its visible text.
 */
export function waitForMessage(page, text) {
  return waitIn(
    page,
    `message list shows ${JSON.stringify(text)} with a visible time`,
    (expected) =>
      [...document.querySelectorAll('#messages li')].some((li) => {
        const time = li.querySelector('time');
        return (
          li.querySelector('.body')?.textContent === expected &&
          time !== null &&
          !Number.isNaN(Date.parse(time.dateTime)) &&
          /\d{1,2}:\d{2}:\d{2}/.test(time.textContent) &&
          time.getBoundingClientRect().width > 0
        );
      }),
    text,
  );
}

/**
 * Logs in with `name` through the page's form (it shows it when the server wants a login) and
 * returns once the form is gone.
 */
export async function logIn(page, name) {
  await waitIn(page, 'the login form is shown', () => !document.getElementById('login').hidden);
  await page.fill('#login-name', name);
  await page.click('#login-btn');
  await waitIn(page, 'the login form is gone', () => document.getElementById('login').hidden);
}

/** Waits until the page shows the connection as open and has its id from `welcome`. */
export async function waitOpen(page) {
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
export function waitJoined(page, channel) {
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

export async function sendChat(page, content) {
  await page.fill('#chat-input', content);
  await page.press('#chat-input', 'Enter');
}

export async function subscribe(page, channel) {
  await page.fill('#channel-input', channel);
  await page.click('#subscribe-btn');
}

/** The message list's markers: [kind, text, whether a clock time is shown]. */
export function markers(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li.marker')].map((li) => [
      li.dataset.marker,
      li.querySelector('.body').textContent,
      /\d{1,2}:\d{2}:\d{2}/.test(li.querySelector('time').textContent),
    ]),
  );
}

/** Waits until the message list's markers are exactly `expected` (see `markers`). */
export async function waitMarkers(page, expected) {
  try {
    await waitIn(
      page,
      `markers ${JSON.stringify(expected)}`,
      (want) =>
        JSON.stringify(
          [...document.querySelectorAll('#messages li.marker')].map((li) => [
            li.dataset.marker,
            li.querySelector('.body').textContent,
            /\d{1,2}:\d{2}:\d{2}/.test(li.querySelector('time').textContent),
          ]),
        ) === want,
      JSON.stringify(expected),
    );
  } catch (error) {
    expectEqual(page, 'markers in the message list', await markers(page), expected);
    throw error;
  }
}

/**
 * The message list from its `from`th entry on (all of it by default): each message's text
 * less its time, each marker as `[kind] text`.
 */
export function messageList(page, from = 0) {
  return page.evaluate(
    (first) =>
      [...document.querySelectorAll('#messages li')].slice(first).map((li) => {
        const text = li.querySelector('.body').textContent;
        return li.classList.contains('marker') ? `[${li.dataset.marker}] ${text}` : text;
      }),
    from,
  );
}

/** The message list after the last "Reconnected" marker (see `messageList`). */
export async function sinceReturn(page) {
  const back = await page.evaluate(() =>
    [...document.querySelectorAll('#messages li')].findLastIndex(
      (li) => li.dataset.marker === 'reconnected',
    ),
  );
  return messageList(page, back + 1);
}

/**
 * The server API at `url` (a node's base URL), as the application's backend calls it with the
 * key in WSLOOP_E2E_API_KEY: `post(path, body)` returns the JSON answer of a 2xx, or throws.
 */
export async function serverApi(url) {
  const context = await request.newContext({
    baseURL: url,
    ignoreHTTPSErrors: true,
    extraHTTPHeaders: { Authorization: `apikey ${process.env.WSLOOP_E2E_API_KEY}` },
  });
  apis.push(context);
  return {
    async post(path, body) {
      const response = await context.post(path, { data: body, timeout: STEP_TIMEOUT_MS });
      const answer = await response.json().catch(() => null);
      if (!response.ok()) {
        throw new Error(`POST ${url} ${path} answered ${response.status()} ${JSON.stringify(answer)}`);
      }
      return answer;
    },
  };
}

/**
 * Has the backend send `events` through `api`, in order: each `[channel, content]` a
 * publication on `channel`, or with channel null a chat to everyone, from `backend`.
 */
export async function backendSends(api, events) {
  for (const [channel, content] of events) {
    const answer = channel === null
      ? await api.post('/api/broadcast', { content, from: 'backend' })
      : await api.post('/api/publish', { channel, content, from: 'backend' });
    if (typeof answer?.delivered !== 'number') throw new Error(`publication answered ${JSON.stringify(answer)}`);
  }
}

/** A new page (a browser context of its own: a user of its own) at `viewport`, on BASE_URL. */
export async function openPage(label, viewport, prepare = async () => {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.label = label;
  pages.push(page);
  page.on('pageerror', (error) => {
    pageErrors.push(`${label}: ${error.message}`);
    log(`${label} page error: ${error.message}`);
  });
  page.on('console', (message) => log(`${label} console.${message.type()}: ${message.text()}`));
  await prepare(page);
  const response = await page.goto(baseUrl, { timeout: STEP_TIMEOUT_MS });
  if (!response || response.status() !== 200) {
    throw new Error(`${label}: GET ${baseUrl} answered ${response && response.status()}`);
  }
  return page;
}

/** A full-page screenshot into SCREENSHOT_DIR, announced by a line `SCREENSHOT PATH`. */
export async function screenshot(page, name) {
  const path = join(screenshotDir, name);
  await page.screenshot({ path, fullPage: true, timeout: STEP_TIMEOUT_MS });
  console.log(`SCREENSHOT ${path}`);
}

/** axe-core in the page: no serious or critical violation (labels, contrast, roles, ...). */
export async function checkAccessibility(page, when) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({ path: AXE_PATH });
  }
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  if (violations.length > 0) {
    throw new Error(`${page.label}: axe-core ${when}: ${violations.join('; ')}`);
  }
  log(`${page.label}: axe-core ${when}: no serious or critical violation`);
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
        publishResult: text('publish-result'),
        errors: items('errors'),
        statesSeen: window.__e2eStates,
      });
    });
  } catch (error) {
    return `(page not readable: ${error.message})`;
  }
}

/**
 * Launches Chromium, runs the scenario `run` (bounded by `runTimeoutMs` as a whole), reports
 * on the pages if it failed, closes everything and exits with the verdict.
 */
export async function runE2E(run, runTimeoutMs) {
  const backstop = setTimeout(() => {
    console.log(`E2E FAILED: the whole run took more than ${runTimeoutMs} ms`);
    process.exit(1); // Playwright kills the browser on exit
  }, runTimeoutMs);
  let failure = null;
  try {
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
    await run();
    if (pageErrors.length > 0) throw new Error(`page script errors: ${pageErrors.join('; ')}`);
  } catch (error) {
    failure = error;
  }
  if (failure) {
    for (const page of pages) log(`${page.label} shows ${await describe(page)}`);
    for (const [i, page] of pages.entries()) {
      await page
        .screenshot({ path: join(screenshotDir, `failed-${i}.png`), fullPage: true, timeout: 5_000 })
        .catch(() => {});
    }
  }
  for (const api of apis) await api.dispose().catch(log);
  if (browser) await withTimeout(browser.close(), 10_000, 'closing the browser').catch(log);
  clearTimeout(backstop);
  if (failure) {
    console.log(`E2E FAILED: ${failure.message}`);
    process.exit(1);
  }
  console.log('E2E OK');
  process.exit(0);
}
