// ANSI SGR colours to HTML, safely: text is escaped first and styles are only our own class names.
// Streaming: the style carries over between chunks, and an escape sequence cut in two by a chunk
// boundary is held until its end arrives. Other escape sequences (cursor moves, OSC titles) are dropped.

import { esc } from './util.js';

const COLOURS = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];
// CSI ... final byte, or OSC ... BEL/ST, or ESC + one character.
const ESCAPE = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;
const INCOMPLETE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?$/;

export class AnsiRenderer {
  constructor() {
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.pending = '';
  }

  // Render a chunk of text to HTML.
  push(text) {
    text = this.pending + text;
    this.pending = '';
    const cut = text.match(INCOMPLETE);
    if (cut && cut[0].length < 64) {
      this.pending = cut[0];
      text = text.slice(0, cut.index);
    }
    let out = '';
    let last = 0;
    ESCAPE.lastIndex = 0;
    for (let m = ESCAPE.exec(text); m; m = ESCAPE.exec(text)) {
      out += this.span(text.slice(last, m.index));
      if (m[2] === 'm') this.sgr(m[1]);
      last = ESCAPE.lastIndex;
    }
    return out + this.span(text.slice(last));
  }

  span(text) {
    text = text.replace(/\r(?=\n)/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
    if (!text) return '';
    const cls = [];
    if (this.bold) cls.push('ansi-bold');
    if (this.fg) cls.push(`ansi-${this.fg}`);
    if (this.bg) cls.push(`ansi-bg-${this.bg}`);
    return cls.length ? `<span class="${cls.join(' ')}">${esc(text)}</span>` : esc(text);
  }

  sgr(params) {
    const codes = params === '' ? [0] : params.split(';').map((p) => Number(p || 0));
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) { this.fg = null; this.bg = null; this.bold = false; }
      else if (c === 1) this.bold = true;
      else if (c === 22) this.bold = false;
      else if (c >= 30 && c <= 37) this.fg = COLOURS[c - 30];
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = COLOURS[c - 40];
      else if (c === 49) this.bg = null;
      else if (c >= 90 && c <= 97) this.fg = `bright-${COLOURS[c - 90]}`;
      else if (c >= 100 && c <= 107) this.bg = `bright-${COLOURS[c - 100]}`;
      else if (c === 38 || c === 48) i += codes[i + 1] === 5 ? 2 : 4; // 256/true colour: skipped
    }
  }
}
