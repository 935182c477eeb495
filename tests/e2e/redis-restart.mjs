// The browser client (web/) across a restart of its server when the history is in Redis,
// driven by tests/browser.rs:
//
//   node redis-restart.mjs BASE_URL SCREENSHOT_DIR
//
// Nodes A (BASE_URL) and B (WSLOOP_E2E_BACKEND, its base URL) share one Redis, which keeps each
// channel's and the chat's history in a Redis Stream (README, "History across nodes"). A page
// on node A logs in, joins `e2e` and chats, while the backend publishes on `e2e` and chats to
// everyone through node B's server API. Mid-conversation the script asks the driver to stop
// node A (STOP_SERVER, answered STOPPED); while A is down, the backend sends channel messages
// and chats through B; then the driver starts A again on the same port (START_SERVER,
// STARTED). The page reconnects by itself, subscribes to `e2e` with `since` and asks for the
// chats with `history` and `since`, and must show every message it missed exactly once, in
// the order of its stream, and no gap marker: the offsets and epochs are in Redis, so the
// restart lost nothing (PROTOCOL.md, "Recovery"). Then live messages flow both ways. The page
// is left in redis-restart.png. Command line, environment and verdict: harness.mjs.

import {
  DESKTOP,
  askDriver,
  backendSends,
  checkAccessibility,
  expectEqual,
  log,
  logIn,
  messageList,
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
  waitOpen,
} from './harness.mjs';

/** Bound on the whole run: a backstop for anything not covered by a step bound. */
const RUN_TIMEOUT_MS = 90_000;
/** The channel the page follows. */
const CHANNEL = 'e2e';
/**
 * Channel messages (`CHANNEL`; the driver checks how many node A replayed) and chats the
 * backend sends while node A is down.
 */
const MISSED_MESSAGES = Number(process.env.WSLOOP_E2E_MISSED_MESSAGES || 5);
const MISSED_CHATS = 4;

/** How the page shows an event that the backend sent (see `backendSends`). */
function shownAs([channel, content]) {
  return channel === null ? `backend: ${content}` : `#${channel} backend: ${content}`;
}

/**
 * Checks that `shown` (the message list since the return) is the channel's events and the
 * chat's events of `expected`, each stream exactly in its order, and nothing else. The page
 * asks for both streams at once; which answer comes first is up to the server.
 */
function expectEachStreamInOrder(page, shown, expected) {
  const onChannel = (line) => line.startsWith(`#${CHANNEL} `);
  expectEqual(page, `#${CHANNEL} since the return`, shown.filter(onChannel), expected.filter(onChannel));
  const chat = (line) => !onChannel(line);
  expectEqual(page, 'chats and markers since the return', shown.filter(chat), expected.filter(chat));
}

async function run() {
  const backend = process.env.WSLOOP_E2E_BACKEND;
  if (!backend) throw new Error('WSLOOP_E2E_BACKEND (node B\'s base URL) is not set');
  const api = await serverApi(backend);
  const page = await openPage('page (desktop, on node A)', DESKTOP);

  // 1. The page logs in on node A and joins the channel.
  const name = `Ann-${nonce}`;
  await logIn(page, name);
  await waitOpen(page);
  await subscribe(page, CHANNEL);
  await waitJoined(page, CHANNEL);

  // 2. A conversation across the nodes: the page chats; the backend publishes and chats through
  // node B, which reaches the page through Redis.
  const conversation = [];
  const say = `hello from Ann ${nonce}`;
  await sendChat(page, say);
  conversation.push(`${name}: ${say}`);
  await waitForMessage(page, conversation.at(-1));
  for (const event of [[CHANNEL, `before-p1 ${nonce}`], [null, `before-c1 ${nonce}`]]) {
    await backendSends(api, [event]);
    conversation.push(shownAs(event));
    await waitForMessage(page, conversation.at(-1));
  }
  expectEqual(page, 'the conversation', await messageList(page), conversation);
  log('conversation across the nodes shown');

  // 3. Node A stops; the backend goes on through node B while the page is away.
  await askDriver('STOP_SERVER', 'STOPPED');
  await waitIn(page, 'reconnecting after node A stopped', () => window.wsloop.state === 'reconnecting');
  const missed = [];
  for (let i = 1; i <= Math.max(MISSED_MESSAGES, MISSED_CHATS); i += 1) {
    if (i <= MISSED_MESSAGES) missed.push([CHANNEL, `away-p${i} ${nonce}`]);
    if (i <= MISSED_CHATS) missed.push([null, `away-c${i} ${nonce}`]);
  }
  await backendSends(api, missed);
  const state = await page.evaluate(() => window.wsloop.state);
  if (state === 'open') throw new Error(`${page.label}: open while node A was down`);
  log(`sent ${missed.length} events through node B while node A was down`);

  // 4. Node A is back on the same port: the page reconnects and shows every missed event once,
  // in order, with no gap marker.
  await askDriver('START_SERVER', 'STARTED');
  await waitOpen(page);
  await waitJoined(page, CHANNEL);
  for (const event of missed) await waitForMessage(page, shownAs(event));
  expectEachStreamInOrder(page, await sinceReturn(page), missed.map(shownAs));
  log('every missed event shown once, in order, with no gap marker');

  // 5. Live messages flow again, both ways, after what was recovered.
  const live = [];
  const again = `back on node A ${nonce}`;
  await sendChat(page, again);
  live.push(`${name}: ${again}`);
  await waitForMessage(page, live.at(-1));
  const liveEvent = [CHANNEL, `live-p1 ${nonce}`];
  await backendSends(api, [liveEvent]);
  live.push(shownAs(liveEvent));
  await waitForMessage(page, live.at(-1));

  // The whole list: the conversation, the drop and the return, the recovered events, then
  // the live ones; nothing twice and no gap.
  const all = await messageList(page);
  const back = conversation.length + 2;
  expectEqual(page, 'the list up to the return', all.slice(0, back), [
    ...conversation,
    '[lost] Connection lost',
    '[reconnected] Reconnected',
  ]);
  expectEachStreamInOrder(page, all.slice(back, -live.length), missed.map(shownAs));
  expectEqual(page, 'the live messages last', all.slice(-live.length), live);
  await checkAccessibility(page, 'with the recovered messages');
  await screenshot(page, 'redis-restart.png');
}

runE2E(run, RUN_TIMEOUT_MS);
