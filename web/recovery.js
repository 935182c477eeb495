// The page's side of recovery (PROTOCOL.md, "Recovery"): where each stream (a channel, or the
// chat to everyone) stands for the page, what to ask for after a reconnection, and what to show
// of what arrives: every offset once, in order, and a marker where a gap could not be filled.
//
// Channels are recovered by subscribing again with `since`: the missed events come before
// `subscribed`. The chat needs no subscription, so its missed events are asked for with
// `history` and `since`; live chats that arrive before the answer are held back and shown after
// the answer's events, those already in it skipped.

/** Whether `msg` carries a history position (a server with history stamps every event). */
function hasPosition(msg) {
  return Number.isSafeInteger(msg.offset) && typeof msg.epoch === 'string';
}

/** The text of a gap marker: `count` events (null: an unknown number) of `channel` (null: the chat). */
export function gapText(channel, count) {
  let text = count === null ? 'messages may be missing' : `${count} messages may be missing`;
  if (count === 1) text = '1 message may be missing';
  return channel === null ? text : `#${channel}: ${text}`;
}

/** Positions and recoveries of the streams a page follows. Streams are keyed by channel name, null for the chat. */
export class Recovery {
  /**
   * `show(channel, msg)` adds an event to the page; `gap(channel, count)` marks a gap before
   * what comes next. `maxHeld` bounds the live chats held back during the chat's recovery.
   */
  constructor({ show, gap, maxHeld }) {
    this.show = show;
    this.gap = gap;
    this.maxHeld = maxHeld;
    /** stream -> { offset, epoch } of the last event shown (or of `subscribed`). */
    this.positions = new Map();
    /** stream -> the `since` it was asked from, until the replay shows whether it is whole. */
    this.recovering = new Map();
    /** While the chat's `history` answer is awaited: the live chats that arrived meanwhile. */
    this.chatHeld = null;
  }

  /** The `subscribe` request for `channel` on a new connection (with `since` when known). */
  subscribeAgain(channel) {
    const since = this.positions.get(channel);
    if (!since) return { type: 'subscribe', channel };
    this.recovering.set(channel, since);
    return { type: 'subscribe', channel, since };
  }

  /** The request for the chats missed while away, or null when there is no position to ask from. */
  chatAgain() {
    const since = this.positions.get(null);
    if (!since) return null;
    this.recovering.set(null, since);
    this.chatHeld = [];
    return { type: 'history', since };
  }

  /** The connection dropped: recovery starts again from what was shown. */
  dropped() {
    this.recovering.clear();
    this.chatHeld = null; // their offsets come back in the next answer
  }

  /** A live `chat`: shown, or held back while the chat's recovery is under way. */
  chat(msg) {
    if (this.chatHeld === null) this.event(null, msg);
    else if (this.chatHeld.length < this.maxHeld) this.chatHeld.push(msg);
  }

  /**
   * Shows a `chat` (channel null) or `message` unless its offset was shown already, marking a
   * gap before it when it is the first event replayed and does not follow on from `since`.
   */
  event(channel, msg) {
    if (hasPosition(msg)) {
      const last = this.positions.get(channel);
      if (last && last.epoch === msg.epoch && msg.offset <= last.offset) return;
      const since = this.recovering.get(channel);
      if (since) {
        this.recovering.delete(channel);
        if (since.epoch !== msg.epoch) this.gap(channel, null);
        else if (msg.offset > since.offset + 1) this.gap(channel, msg.offset - since.offset - 1);
      }
      this.positions.set(channel, { offset: msg.offset, epoch: msg.epoch });
    }
    this.show(channel, msg);
  }

  /**
   * The answer that ends a recovery (`subscribed`, or the chat's `history`): a gap not marked
   * yet when it was not whole, and where the stream stands from now on.
   */
  settle(channel, answer) {
    const since = this.recovering.get(channel);
    this.recovering.delete(channel);
    if (since && answer.recovered === false) {
      const sameEpoch = hasPosition(answer) && answer.epoch === since.epoch;
      this.gap(channel, sameEpoch && answer.offset > since.offset ? answer.offset - since.offset : null);
    }
    if (hasPosition(answer)) this.positions.set(channel, { offset: answer.offset, epoch: answer.epoch });
    else if (answer.recovered === false) this.positions.delete(channel); // that history is gone
  }

  /** A `history` answer: the chat's recovery, when one is awaited (the page asks for no other). */
  history(answer) {
    if (answer.channel !== undefined || this.chatHeld === null) return;
    const held = this.chatHeld;
    this.chatHeld = null;
    for (const msg of Array.isArray(answer.messages) ? answer.messages : []) {
      if (msg && typeof msg === 'object') this.event(null, msg);
    }
    this.settle(null, answer);
    for (const msg of held) this.event(null, msg);
  }

  /** A server without history answered the chat's recovery with `history_off`: show what was held. */
  historyOff() {
    if (this.chatHeld !== null) this.history({ messages: [] });
  }

  /** The page left `channel`. */
  forget(channel) {
    this.positions.delete(channel);
  }
}
