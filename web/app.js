// The wsloop browser client: one WebSocket to /ws speaking the JSON protocol of PROTOCOL.md.
//
// The page keeps one connection open, and when it drops it reconnects by itself with
// exponential backoff and jitter, then joins again the channels it was in (the server forgets
// subscriptions when a connection ends). After giving up it offers "Reconnect now", and it
// tries again at once, with the backoff reset, when the tab becomes visible or the network
// comes back. Before the first connection it asks the server who it is (GET /session) and,
// when the server wants a login, shows the login form (POST /login sets the session cookie the
// WebSocket upgrade carries). A connection refused before it opened is checked the same way:
// "not logged in" brings the form back instead of reconnecting for ever; a close with 4001
// (token refused or expired) stops and says why. Everything the server sends is written into the page
// with textContent, never innerHTML, so a message can never inject markup.
//
// Nothing sent while it was away is lost when the server keeps history (PROTOCOL.md,
// "Recovery"): the page remembers the offset and epoch of the last event of each channel and of
// the chat, subscribes again with `since` and asks for the chat's missed events with
// `history`, shows them in order, each offset once, and marks a gap it could not fill
// ("12 messages may be missing"); see recovery.js.

import { Recovery, gapText } from './recovery.js';

/** Reconnection policy: 1 s, 1.5 s, 2.25 s, ... up to 30 s, at most 50 tries in a row. */
const RECONNECT = {
  firstDelayMs: 1000,
  factor: 1.5,
  maxDelayMs: 30000,
  maxAttempts: 50,
  // Each delay is moved by up to ±20% so that many pages cut off by one server restart do
  // not all come back in the same millisecond.
  jitter: 0.2,
};

/** How often to measure the round-trip time with a protocol-level `ping`. */
const PING_EVERY_MS = 5000;
/** A connection whose `pong` is this late is taken as dead and replaced. */
const PONG_TIMEOUT_MS = 15000;
/** The message list keeps only the most recent entries. */
const MAX_MESSAGES = 500;
/** The error list keeps only the most recent entries. */
const MAX_ERRORS = 5;
/** What the latency shows while there is no measurement for the current connection. */
const NO_LATENCY = '\u2014';
/** Times on messages and markers: hours, minutes and seconds in the reader's locale. */
const TIME_FORMAT = { hour: '2-digit', minute: '2-digit', second: '2-digit' };

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  reconnectBtn: $('reconnect-btn'),
  me: $('me'),
  latency: $('latency'),
  messages: $('messages'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  joinForm: $('join-form'),
  channelInput: $('channel-input'),
  unsubscribeBtn: $('unsubscribe-btn'),
  channels: $('channels'),
  joinedChannels: $('joined-channels'),
  publishForm: $('publish-form'),
  publishChannel: $('publish-channel'),
  publishInput: $('publish-input'),
  publishResult: $('publish-result'),
  errors: $('errors'),
  logoutBtn: $('logout-btn'),
  login: $('login'),
  loginWhy: $('login-why'),
  loginForm: $('login-form'),
  loginName: $('login-name'),
  loginPassword: $('login-password'),
  loginPasswordLabel: $('login-password-label'),
  loginError: $('login-error'),
};

// ---------------------------------------------------------------------------------------------
// Connection state

/** 'connecting' | 'open' | 'reconnecting' | 'gave-up' | 'logged-out' | 'refused' */
let state = 'connecting';
/** The current socket; events from an older, replaced socket are ignored. */
let socket = null;
/** Reconnection attempts since the last successful open. */
let attempts = 0;
/** When the pending reconnection fires (ms since epoch), while reconnecting. */
let reconnectAt = 0;
let reconnectTimer = null;
let countdownTimer = null;
let pingTimer = null;
/** The `ts` of the ping still waiting for its pong, or null. */
let pingInFlight = null;
/** This connection's identity, from `welcome`. */
let me = null;
/** An open connection dropped and none has opened since: the next open gets a marker. */
let dropped = false;
/** How this server logs people in (GET /session): 'nickname', 'password' or 'token'. */
let loginKind = 'token';
/**
 * Channels the user asked to be in: name -> 'pending' (subscribe sent, or to be sent again
 * after a reconnection) or 'joined' (the server answered `subscribed`).
 */
const channels = new Map();
/** Where each channel and the chat stand, and what to show of what arrives (recovery.js). */
const recovery = new Recovery({
  show: addMessage,
  gap: (channel, count) => addMarker('gap', gapText(channel, count)),
  maxHeld: MAX_MESSAGES,
});
/**
 * The WebSocket URL: the endpoint the server wrote into <meta name="wsloop-ws-path"> (its
 * --ws-path), on the host that served this page, with the page's `token`, if any.
 */
function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(location.search).get('token');
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  const path = document.querySelector('meta[name="wsloop-ws-path"]')?.content || '/ws';
  return `${scheme}//${location.host}${path}${query}`;
}

/** The delay before reconnection attempt `attempt` (1, 2, ...), jittered and capped. */
function backoffDelay(attempt) {
  const base = RECONNECT.firstDelayMs * RECONNECT.factor ** (attempt - 1);
  const jitter = 1 + RECONNECT.jitter * (2 * Math.random() - 1);
  return Math.round(Math.min(base * jitter, RECONNECT.maxDelayMs));
}

function connect() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  setState('connecting');

  const ws = new WebSocket(socketUrl());
  socket = ws;
  // Each handler first checks that its socket is still the current one.
  ws.addEventListener('open', () => socket === ws && onOpen());
  ws.addEventListener('message', (event) => socket === ws && onMessage(event.data));
  ws.addEventListener('close', (event) => socket === ws && onClose(event));
  // An 'error' event is always followed by 'close', which does the work.
}

function onOpen() {
  attempts = 0;
  setState('open');
  // Errors belonged to the old connection; the message list says where it came back.
  ui.errors.replaceChildren();
  if (dropped) {
    dropped = false;
    addMarker('reconnected', 'Reconnected');
  }
  // The server forgot our subscriptions with the old connection: ask for them again, from
  // where each one was left; and for the chats missed meanwhile.
  for (const name of channels.keys()) {
    channels.set(name, 'pending');
    send(recovery.subscribeAgain(name));
  }
  const chatAgain = recovery.chatAgain();
  if (chatAgain) send(chatAgain);
  renderChannels();
  sendPing();
  pingTimer = setInterval(sendPing, PING_EVERY_MS);
}

/** The close code of a refused or expired credential (PROTOCOL.md). */
const AUTH_CLOSE = 4001;

function onClose(event) {
  console.info(`wsloop: connection closed (code ${event.code})`);
  const neverOpened = state !== 'open';
  dropSocket();
  if (event.code === AUTH_CLOSE) {
    refuse(`The server closed the connection: ${event.reason || 'not authenticated'}.`);
    return;
  }
  scheduleReconnect();
  // A refused upgrade (401) looks like any failed connection to a page: ask the server
  // whether the login is the reason, and if so stop and show the form instead of retrying.
  if (neverOpened) checkSession(false);
}

/** Stops reconnecting and shows why, with the login form as the way forward when there is one. */
function refuse(why) {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  setState('refused');
  showError('refused', why);
  if (loginKind !== 'token') showLogin(why);
}

/**
 * Asks the server who this page is logged in as. Logged in (or no login here): connect, when
 * `start`. Not logged in: stop reconnecting and show the form. No answer: leave things as
 * they are (the reconnection goes on).
 */
async function checkSession(start) {
  let answer;
  try {
    const response = await fetch('/session', { cache: 'no-store' });
    answer = { status: response.status, body: await response.json() };
  } catch {
    return;
  }
  loginKind = answer.body.login || 'token';
  if (answer.status === 200) {
    ui.logoutBtn.hidden = false;
    if (start) connect();
    return;
  }
  if (loginKind === 'token') {
    // The user's own backend hands out tokens; the page has none to ask for.
    if (start) connect();
    return;
  }
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  if (socket) dropSocket();
  setState('logged-out');
  showLogin(start ? '' : 'Not logged in, so the server refused the connection. Log in again.');
}

function showLogin(why) {
  const password = loginKind === 'password';
  ui.loginPassword.hidden = !password;
  ui.loginPassword.required = password;
  ui.loginPasswordLabel.hidden = !password;
  ui.loginName.previousElementSibling.textContent = password ? 'Name' : 'Nickname';
  ui.loginWhy.textContent = why;
  ui.login.hidden = false;
  ui.logoutBtn.hidden = true;
  ui.loginName.focus();
}

async function logIn() {
  ui.loginError.textContent = '';
  const body = { name: ui.loginName.value };
  if (loginKind === 'password') body.password = ui.loginPassword.value;
  let response;
  try {
    response = await fetch('/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    ui.loginError.textContent = 'The server cannot be reached; try again.';
    return;
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    ui.loginError.textContent = `Not logged in: ${answer.error || `HTTP ${response.status}`}.`;
    return;
  }
  ui.login.hidden = true;
  ui.loginPassword.value = '';
  ui.logoutBtn.hidden = false;
  attempts = 0;
  connect();
}

async function logOut() {
  try {
    await fetch('/logout', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  } catch {
    // The cookie stays; closing the connection is still right.
  }
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  dropSocket();
  setState('logged-out');
  showLogin('Logged out.');
}

/** Forgets the current socket (closing it if needed) and what belonged to it. */
function dropSocket() {
  if (state === 'open') {
    dropped = true;
    addMarker('lost', 'Connection lost');
  }
  if (socket) {
    const old = socket;
    socket = null; // from here on, its events are ignored
    if (old.readyState === WebSocket.CONNECTING || old.readyState === WebSocket.OPEN) {
      old.close();
    }
  }
  clearInterval(pingTimer);
  pingInFlight = null;
  ui.latency.textContent = NO_LATENCY; // an old value would look like a live measurement
  me = null;
  recovery.dropped();
  for (const name of channels.keys()) channels.set(name, 'pending');
  renderChannels();
  renderMe();
}

function scheduleReconnect() {
  if (attempts >= RECONNECT.maxAttempts) {
    setState('gave-up');
    return;
  }
  attempts += 1;
  const delay = backoffDelay(attempts);
  reconnectAt = Date.now() + delay;
  reconnectTimer = setTimeout(connect, delay);
  setState('reconnecting');
  // Keep the "reconnecting in Ns" countdown current.
  countdownTimer = setInterval(renderStatus, 250);
}

/**
 * Tries again at once, with the backoff starting over: for the "Reconnect now" button, and when
 * the tab becomes visible or the network comes back. Does nothing while connecting or open.
 */
function reconnectNow(why) {
  if (!['reconnecting', 'gave-up', 'refused'].includes(state)) return;
  console.info(`wsloop: reconnecting now (${why})`);
  attempts = 0;
  connect();
}

function setState(next) {
  state = next;
  renderStatus();
}

/** Sends one protocol message; false (and a visible error) when not connected. */
function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    showError('not_connected', 'not connected to the server; try again once it is open');
    return false;
  }
  socket.send(JSON.stringify(message));
  return true;
}

function sendPing() {
  if (pingInFlight !== null && Date.now() - pingInFlight > PONG_TIMEOUT_MS) {
    // No answer for too long: the connection is dead even if the browser has not noticed.
    console.warn('wsloop: no pong in time, reconnecting');
    dropSocket();
    scheduleReconnect();
    return;
  }
  if (pingInFlight === null) {
    pingInFlight = Date.now();
    send({ type: 'ping', ts: pingInFlight });
  }
}

// ---------------------------------------------------------------------------------------------
// Messages from the server

function onMessage(data) {
  let msg = null;
  try {
    msg = JSON.parse(data);
  } catch {
    // reported below
  }
  if (msg === null || typeof msg !== 'object') {
    showError('bad_frame', 'the server sent something that is not a JSON object');
    return;
  }
  switch (msg.type) {
    case 'welcome':
      me = { id: msg.id, name: msg.name };
      ui.login.hidden = true;
      renderMe();
      break;
    case 'pong':
      if (typeof msg.echo !== 'number') break;
      if (msg.echo === pingInFlight) pingInFlight = null;
      ui.latency.textContent = `${Date.now() - msg.echo} ms`;
      break;
    case 'chat':
      recovery.chat(msg);
      break;
    case 'message':
      recovery.event(msg.channel, msg);
      break;
    case 'history':
      recovery.history(msg);
      break;
    case 'subscribed':
      recovery.settle(msg.channel, msg);
      channels.set(msg.channel, 'joined');
      renderChannels();
      break;
    case 'unsubscribed':
      channels.delete(msg.channel);
      recovery.forget(msg.channel);
      renderChannels();
      break;
    case 'published':
      showPublished(msg.channel, msg.receivers);
      break;
    case 'error':
      // A server without history cannot answer the chat's recovery: show what was held.
      if (msg.code === 'history_off') recovery.historyOff();
      showError(msg.code, msg.message);
      if (msg.code === 'invalid_channel' || msg.code === 'too_many_channels') {
        forgetRefusedChannels();
      }
      break;
    default:
      console.warn('wsloop: unknown message type', msg.type);
  }
}

/**
 * After a channel error, drops the channels still waiting for `subscribed`. The server answers
 * a connection's requests in order, so a subscribe sent before the failed request has already
 * been answered (its channel is 'joined'), and one sent after it is answered later and its
 * `subscribed` adds the channel back: only the refused one disappears for good.
 */
function forgetRefusedChannels() {
  for (const [name, status] of channels) {
    if (status === 'pending') channels.delete(name);
  }
  renderChannels();
}

// ---------------------------------------------------------------------------------------------
// Rendering

function renderStatus() {
  let text;
  switch (state) {
    case 'connecting':
      text = attempts > 0 ? `connecting (attempt ${attempts})` : 'connecting';
      break;
    case 'open':
      text = 'open';
      break;
    case 'reconnecting': {
      const seconds = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      text = `reconnecting in ${seconds}s (attempt ${attempts})`;
      break;
    }
    case 'gave-up':
      text = `gave up after ${attempts} attempts`;
      break;
    case 'logged-out':
      text = 'not logged in';
      break;
    case 'refused':
      text = 'refused by the server';
      break;
  }
  ui.status.textContent = text;
  ui.status.dataset.state = state;
  ui.reconnectBtn.hidden = !['reconnecting', 'gave-up', 'refused'].includes(state);
}

function renderMe() {
  if (!me) {
    ui.me.textContent = 'not connected';
  } else {
    // Without a token the server uses the id as the name: say it once.
    ui.me.textContent = me.name === me.id ? `id ${me.id}` : `${me.name} (id ${me.id})`;
  }
}

/** The channel chips (a click picks the channel for Publish) and the Publish suggestions. */
function renderChannels() {
  const items = [...channels].map(([name, status]) => {
    const li = document.createElement('li');
    li.dataset.channel = name;
    li.dataset.state = status;
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `#${name}`;
    button.title = `${status === 'joined' ? 'joined' : 'joining…'}; click to publish here`;
    li.append(button);
    return li;
  });
  ui.channels.replaceChildren(...items);
  ui.joinedChannels.replaceChildren(
    ...[...channels.keys()].map((name) => {
      const option = document.createElement('option');
      option.value = name;
      return option;
    }),
  );
}

/** A <time> element showing `ms` (since the epoch) as a clock time. */
function timeElement(ms) {
  const date = new Date(ms);
  const el = document.createElement('time');
  el.dateTime = date.toISOString();
  el.textContent = date.toLocaleTimeString([], TIME_FORMAT);
  return el;
}

/** Appends `from: content`, prefixed with `#channel` for a channel message. */
function addMessage(channel, msg) {
  const body = span('body', '');
  if (channel !== null) {
    body.append(span('channel', `#${channel}`), ' ');
  }
  body.append(span('from', String(msg.from)), ': ', span('content', String(msg.content)));
  const li = document.createElement('li');
  li.append(timeElement(typeof msg.ts === 'number' ? msg.ts : Date.now()), ' ', body);
  if (me && msg.id === me.id) li.classList.add('mine');
  appendToMessages(li);
}

/** A line in the message list where the connection dropped (`lost`) or came back. */
function addMarker(kind, text) {
  const li = document.createElement('li');
  li.className = 'marker';
  li.dataset.marker = kind;
  li.append(timeElement(Date.now()), ' ', span('body', text));
  appendToMessages(li);
}

/** Appends to the message list, dropping the oldest, and follows the end if it was there. */
function appendToMessages(li) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.childElementCount > MAX_MESSAGES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function span(className, text) {
  const el = document.createElement('span');
  el.className = className;
  el.textContent = text;
  return el;
}

/** Shows an error, newest first; the same error again only counts up (`×5`) on its line. */
function showError(code, message) {
  const key = `${code}\n${message}`;
  const newest = ui.errors.firstElementChild;
  if (newest && newest.dataset.key === key) {
    const count = Number(newest.dataset.count) + 1;
    newest.dataset.count = String(count);
    newest.querySelector('.count').textContent = ` \u00d7${count}`;
    return;
  }
  const li = document.createElement('li');
  li.dataset.key = key;
  li.dataset.count = '1';
  li.append(span('code', String(code)), ': ', String(message), span('count', ''));
  ui.errors.prepend(li);
  while (ui.errors.childElementCount > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

/**
 * The answer to a publish: how many connections on this server received it, and a clear note
 * when nobody did or when this page is not in the channel (so the message is not in its list).
 */
function showPublished(channel, receivers) {
  if (typeof channel !== 'string' || typeof receivers !== 'number') return;
  const noun = receivers === 1 ? 'connection' : 'connections';
  let text =
    receivers === 0
      ? `#${channel}: nobody received it; no one on this server is subscribed.`
      : `#${channel}: received by ${receivers} ${noun}.`;
  if (channels.get(channel) !== 'joined') {
    text += ` You are not subscribed to #${channel}, so you do not see it.`;
  }
  ui.publishResult.textContent = text;
  ui.publishResult.dataset.receivers = String(receivers);
}

// ---------------------------------------------------------------------------------------------
// User input

ui.chatForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const content = ui.chatInput.value;
  if (content === '') return;
  if (send({ type: 'chat', content })) ui.chatInput.value = '';
});

function channelName() {
  const name = ui.channelInput.value.trim();
  if (name === '') showError('invalid_channel', 'type a channel name first');
  return name;
}

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = channelName();
  if (name === '' || channels.get(name) === 'joined') return;
  if (send({ type: 'subscribe', channel: name })) {
    channels.set(name, 'pending');
    renderChannels();
    // The first channel joined becomes the Publish target, in plain sight in its own field.
    if (ui.publishChannel.value.trim() === '') ui.publishChannel.value = name;
  }
});

ui.unsubscribeBtn.addEventListener('click', () => {
  const name = channelName();
  if (name !== '') send({ type: 'unsubscribe', channel: name });
});

// Publish goes to the channel in its own field (both fields are `required`, so the browser
// asks for what is missing before this runs).
ui.publishForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const channel = ui.publishChannel.value.trim();
  const content = ui.publishInput.value;
  if (channel === '' || content === '') return;
  ui.publishResult.textContent = '';
  if (send({ type: 'publish', channel, content })) ui.publishInput.value = '';
});

// A click on a channel chip makes it the Publish target and the Join/Leave box's channel.
ui.channels.addEventListener('click', (event) => {
  const li = event.target.closest('li[data-channel]');
  if (!li) return;
  ui.publishChannel.value = li.dataset.channel;
  ui.channelInput.value = li.dataset.channel;
  ui.publishInput.focus();
});

ui.reconnectBtn.addEventListener('click', () => reconnectNow('asked'));
ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  logIn();
});
ui.logoutBtn.addEventListener('click', logOut);
// A tab in the background or a laptop off the network may have used up its attempts, or wait
// for a long delay: try again at once when the user is back or the network is.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') reconnectNow('tab visible');
});
window.addEventListener('online', () => reconnectNow('network back'));

// ---------------------------------------------------------------------------------------------
// Start

/** Read-only view of the connection for tests and the console. */
window.wsloop = Object.freeze({
  get state() {
    return state;
  },
  get id() {
    return me ? me.id : null;
  },
  get attempts() {
    return attempts;
  },
});

renderMe();
checkSession(true);
