// The mask brush: a canvas at the image's own resolution laid over the image. Painted pixels are
// stored opaque in one colour (CSS opacity shows them see-through); the mask sent to the API is
// the same pixels as black (keep) and white (repaint), thresholded at half alpha.

const PAINT = [255, 45, 110];
const MAX_UNDO = 25;
// Each undo step is a full RGBA snapshot (48 MB for a 12-megapixel photo): cap the total.
const UNDO_BYTES = 400 * 1024 * 1024;

export class MaskEditor {
  /**
   * canvas: the overlay <canvas>; cursor: an element drawn as the brush outline;
   * onChange(): called after every edit (stroke, undo, redo, clear, invert).
   */
  constructor(canvas, cursor, onChange = () => {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.cursor = cursor;
    this.onChange = onChange;
    this.size = 40;
    this.eraser = false;
    this.undoStack = [];
    this.redoStack = [];
    this.last = null;
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", (e) => this.#up(e));
    canvas.addEventListener("pointerleave", () => (cursor.hidden = true));
    canvas.addEventListener("pointerenter", () => (cursor.hidden = false));
  }

  /** A new image: an empty mask of width x height pixels, history cleared. */
  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx.clearRect(0, 0, width, height);
    this.undoStack = [];
    this.redoStack = [];
    this.onChange();
  }

  setOpacity(value) {
    this.canvas.style.opacity = String(value);
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  undo() {
    if (!this.canUndo) return;
    this.redoStack.push(this.#snapshot());
    this.ctx.putImageData(this.undoStack.pop(), 0, 0);
    this.onChange();
  }

  redo() {
    if (!this.canRedo) return;
    this.undoStack.push(this.#snapshot());
    this.ctx.putImageData(this.redoStack.pop(), 0, 0);
    this.onChange();
  }

  clear() {
    if (this.isEmpty()) return;
    this.#remember();
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onChange();
  }

  invert() {
    this.#remember();
    const data = this.#snapshot();
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const on = px[i + 3] < 128;
      px[i] = PAINT[0];
      px[i + 1] = PAINT[1];
      px[i + 2] = PAINT[2];
      px[i + 3] = on ? 255 : 0;
    }
    this.ctx.putImageData(data, 0, 0);
    this.onChange();
  }

  isEmpty() {
    const px = this.#snapshot().data;
    for (let i = 3; i < px.length; i += 4) if (px[i] >= 128) return false;
    return true;
  }

  /** The mask as a PNG Blob at the image's resolution: white = repaint, black = keep. */
  toBlob() {
    const out = document.createElement("canvas");
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const data = this.#snapshot();
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      const v = px[i + 3] >= 128 ? 255 : 0;
      px[i] = v;
      px[i + 1] = v;
      px[i + 2] = v;
      px[i + 3] = 255;
    }
    out.getContext("2d").putImageData(data, 0, 0);
    return new Promise((resolve, reject) =>
      out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("Could not encode the mask."))), "image/png"),
    );
  }

  /** Show the brush outline at the pointer (display pixels follow the canvas's on-screen scale). */
  moveCursor(e) {
    const rect = this.canvas.getBoundingClientRect();
    const diameter = (this.size * rect.width) / this.canvas.width;
    const parent = this.cursor.parentElement.getBoundingClientRect();
    Object.assign(this.cursor.style, {
      width: `${diameter}px`,
      height: `${diameter}px`,
      left: `${e.clientX - parent.left - diameter / 2}px`,
      top: `${e.clientY - parent.top - diameter / 2}px`,
    });
    this.cursor.classList.toggle("eraser", this.eraser);
  }

  #snapshot() {
    return this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
  }

  #remember() {
    this.undoStack.push(this.#snapshot());
    const perStep = this.canvas.width * this.canvas.height * 4;
    const limit = Math.max(3, Math.min(MAX_UNDO, Math.floor(UNDO_BYTES / perStep)));
    while (this.undoStack.length > limit) this.undoStack.shift();
    this.redoStack = [];
  }

  #point(e) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((e.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  }

  #style() {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = this.eraser ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = `rgb(${PAINT.join(",")})`;
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  }

  #down(e) {
    if (e.button !== 0) return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.#remember();
    this.#style();
    const p = this.#point(e);
    this.ctx.beginPath();
    this.ctx.arc(p.x, p.y, this.size / 2, 0, Math.PI * 2);
    this.ctx.fill();
    this.last = p;
  }

  #move(e) {
    this.moveCursor(e);
    if (!this.last) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    this.ctx.beginPath();
    this.ctx.moveTo(this.last.x, this.last.y);
    for (const ev of events.length ? events : [e]) {
      const p = this.#point(ev);
      this.ctx.lineTo(p.x, p.y);
      this.last = p;
    }
    this.ctx.stroke();
  }

  #up(e) {
    if (!this.last) return;
    this.last = null;
    if (this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    this.ctx.globalCompositeOperation = "source-over";
    this.onChange();
  }
}
