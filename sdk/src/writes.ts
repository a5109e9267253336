// One client's writes to one campaign, from the moment they are made until the server answers: a
// pure state machine, a port of the browser's EditQueue (app/src/client/edits.rs).
//
// - Every write shows at once: `overlay` lays the writes not yet in the confirmed state over it,
//   with the server's own rule (`writeEffect`).
// - A write is based on the newest version this client has fully seen: the confirmed state's
//   version, extended by the versions of its own acknowledged writes that follow it without a gap
//   (`base`). A client's own writes count as seen, so it never conflicts with itself.
// - A write that clashes with an earlier unsettled write of the same client waits until that one
//   is answered and covered by the base, then goes out based on it. Others go out at once.
// - A write whose `base_version` the caller set keeps it.
// - An acknowledged write stays laid over the confirmed state until the confirmed state reaches
//   its version; a refused one is dropped (and the shown state is the confirmed state plus the
//   writes that remain).
import type { CampaignState, Change } from './generated.js';
import { applyChange, basedOn, baseVersionOf, clashesWith, writeEffect, type Write } from './state.js';

type Stage = { kind: 'waiting' } | { kind: 'sent' } | { kind: 'accepted'; version: number };

interface Edit {
  number: number;
  write: Write;
  stage: Stage;
}

/** A write to send now, under the queue's number for it. */
export interface Outgoing {
  number: number;
  write: Write;
}

export class EditQueue {
  private next = 0;
  private edits: Edit[] = [];

  /**
   * Take a write made on what the client shows. Returns its number and what to send now (nothing
   * if it waits). Throws the `invalid`/`too_large` error the server would refuse it with.
   */
  submit(write: Write, confirmed: CampaignState): { number: number; send: Outgoing[] } {
    writeEffect(write, this.overlay(confirmed));
    const number = ++this.next;
    this.edits.push({ number, write, stage: { kind: 'waiting' } });
    return { number, send: this.release(confirmed) };
  }

  /** The server accepted write `number` at `version` (`unchanged`: it changed nothing). */
  accepted(number: number, version: number, unchanged: boolean, confirmed: CampaignState): Outgoing[] {
    if (unchanged || version <= confirmed.version) {
      this.edits = this.edits.filter((e) => e.number !== number);
    } else {
      const edit = this.edits.find((e) => e.number === number);
      if (edit) edit.stage = { kind: 'accepted', version };
    }
    return this.release(confirmed);
  }

  /** The server refused write `number`: it is dropped and returned. */
  refused(number: number, confirmed: CampaignState): { write: Write | undefined; send: Outgoing[] } {
    const at = this.edits.findIndex((e) => e.number === number);
    const write = at >= 0 ? this.edits.splice(at, 1)[0]?.write : undefined;
    return { write, send: this.release(confirmed) };
  }

  /** Drop write `number` without an answer (the connection is gone for good). */
  abandon(number: number): void {
    this.edits = this.edits.filter((e) => e.number !== number);
  }

  /** The confirmed state moved on (an event, a snapshot): writes it includes are done. */
  confirmed(confirmed: CampaignState): Outgoing[] {
    this.edits = this.edits.filter((e) => !(e.stage.kind === 'accepted' && e.stage.version <= confirmed.version));
    return this.release(confirmed);
  }

  /** The newest version this client has fully seen (see the module documentation). */
  base(confirmed: CampaignState): number {
    let base = confirmed.version;
    while (this.edits.some((e) => e.stage.kind === 'accepted' && e.stage.version === base + 1)) base++;
    return base;
  }

  /** `confirmed` with every write not yet in it laid over, in order. */
  overlay(confirmed: CampaignState): CampaignState {
    let state = confirmed;
    for (const edit of this.edits) {
      try {
        const change = writeEffect(edit.write, state);
        if (change) state = applyChange(state, change);
      } catch {
        // A write that no longer fits shows as nothing; the server will answer it.
      }
    }
    return state;
  }

  /** Writes the server has not accepted yet. */
  unsaved(): number {
    return this.edits.filter((e) => e.stage.kind !== 'accepted').length;
  }

  get size(): number {
    return this.edits.length;
  }

  /** Send every waiting write that no earlier unsettled write clashes with. */
  private release(confirmed: CampaignState): Outgoing[] {
    const base = this.base(confirmed);
    let state = confirmed;
    const unsettled: Change[] = [];
    const out: Outgoing[] = [];
    for (const edit of this.edits) {
      let change: Change | null = null;
      try {
        change = writeEffect(edit.write, state);
      } catch {
        change = null;
      }
      if (edit.stage.kind === 'waiting' && !unsettled.some((c) => clashesWith(edit.write, c))) {
        edit.stage = { kind: 'sent' };
        if (baseVersionOf(edit.write) === undefined) edit.write = basedOn(edit.write, base);
        out.push({ number: edit.number, write: edit.write });
      }
      const settled = edit.stage.kind === 'accepted' && edit.stage.version <= base;
      if (change) {
        try {
          state = applyChange(state, change);
        } catch {
          /* shown as nothing */
        }
        if (!settled) unsettled.push(change);
      }
    }
    return out;
  }
}
