// The page's recovery rules (web/recovery.js) in Node, without a browser, run by tests/browser.rs:
// what the page asks for after a reconnection, each offset shown once and in order (live chats
// that arrive before the chat's `history` answer included), and the gap markers. The browser
// test shows the same on real connections; the races it cannot produce on demand are here.
//
//   node recovery.mjs        prints `RECOVERY OK` and exits 0, or throws (exit 1)

import { readFile } from 'node:fs/promises';
import assert from 'node:assert/strict';

// web/ has no package.json saying it is a module: load it as one from its text.
const source = await readFile(new URL('../../web/recovery.js', import.meta.url), 'utf8');
const { Recovery, gapText } = await import(`data:text/javascript,${encodeURIComponent(source)}`);

/** A Recovery whose page is a list of lines: `#channel offset` / `chat offset`, `gap: TEXT`. */
function page() {
  const shown = [];
  const recovery = new Recovery({
    show: (channel, msg) => shown.push(`${channel === null ? 'chat' : `#${channel}`} ${msg.offset}`),
    gap: (channel, count) => shown.push(`gap: ${gapText(channel, count)}`),
    maxHeld: 3,
  });
  return { recovery, shown };
}

const at = (offset, epoch = 'e1') => ({ offset, epoch });

// The chat: live chats that arrive before the answer wait, and what the answer also holds is
// shown once, in offset order.
{
  const { recovery, shown } = page();
  recovery.chat(at(1));
  recovery.chat(at(2));
  recovery.dropped();
  assert.deepEqual(recovery.chatAgain(), { type: 'history', since: at(2) });
  recovery.chat(at(5));
  recovery.chat(at(6));
  recovery.history({ type: 'history', messages: [at(3), at(4), at(5)], recovered: true, ...at(5) });
  recovery.chat(at(7));
  assert.deepEqual(shown, ['chat 1', 'chat 2', 'chat 3', 'chat 4', 'chat 5', 'chat 6', 'chat 7']);
}

// A channel: `since` from the last event; the first replayed event shows the gap, counted,
// before it; `subscribed` does not mark it again; an offset seen already is not shown twice.
{
  const { recovery, shown } = page();
  assert.deepEqual(recovery.subscribeAgain('news'), { type: 'subscribe', channel: 'news' });
  recovery.settle('news', { type: 'subscribed', channel: 'news', ...at(2) });
  recovery.event('news', at(3));
  recovery.dropped();
  assert.deepEqual(recovery.subscribeAgain('news'), { type: 'subscribe', channel: 'news', since: at(3) });
  recovery.event('news', at(3));
  recovery.event('news', at(7));
  recovery.event('news', at(8));
  recovery.settle('news', { type: 'subscribed', channel: 'news', recovered: false, ...at(8) });
  recovery.event('news', at(8));
  assert.deepEqual(shown, ['#news 3', 'gap: #news: 3 messages may be missing', '#news 7', '#news 8']);
}

// Nothing replayed: one missing event counted from `subscribed`; a new epoch without a
// count; then the new epoch's offsets are followed.
{
  const { recovery, shown } = page();
  recovery.settle('news', { type: 'subscribed', channel: 'news', ...at(4) });
  recovery.subscribeAgain('news');
  recovery.settle('news', { type: 'subscribed', channel: 'news', recovered: false, ...at(5) });
  recovery.subscribeAgain('news');
  recovery.settle('news', { type: 'subscribed', channel: 'news', recovered: false, ...at(0, 'e2') });
  recovery.event('news', at(1, 'e2'));
  assert.deepEqual(shown, [
    'gap: #news: 1 message may be missing',
    'gap: #news: messages may be missing',
    '#news 1',
  ]);
  assert.deepEqual(recovery.subscribeAgain('news').since, at(1, 'e2'));
}

// The chat after a restart: no history at all, so a gap of unknown size, and no position to
// ask from next time; a server without history (`history_off`) releases what was held, and
// never more than `maxHeld` is held.
{
  const { recovery, shown } = page();
  recovery.chat(at(9));
  recovery.chatAgain();
  recovery.history({ type: 'history', messages: [], recovered: false });
  assert.equal(recovery.chatAgain(), null);
  recovery.chat(at(1, 'e2'));
  recovery.chatAgain();
  for (const n of [2, 3, 4, 5]) recovery.chat(at(n, 'e2'));
  recovery.historyOff();
  assert.deepEqual(shown, ['chat 9', 'gap: messages may be missing', 'chat 1', 'chat 2', 'chat 3', 'chat 4']);
}

// Events of a server without history carry no offset: all are shown, nothing is asked for.
{
  const { recovery, shown } = page();
  recovery.chat({ content: 'a' });
  recovery.chat({ content: 'a' });
  recovery.settle('news', { type: 'subscribed', channel: 'news' });
  assert.equal(recovery.chatAgain(), null);
  assert.deepEqual(recovery.subscribeAgain('news'), { type: 'subscribe', channel: 'news' });
  assert.deepEqual(shown, ['chat undefined', 'chat undefined']);
}

console.log('RECOVERY OK');
