// Outpaint geometry for the preview: a port of fillframe/imaging/canvas.py (plan_outpaint and
// plan_expand), so the page shows the canvas the server will build. Keep the two in step.

export const PRESETS = [
  "Zoom out 1.5x",
  "Zoom out 2x",
  "Make square",
  "Left outpaint",
  "Right outpaint",
  "Top outpaint",
  "Bottom outpaint",
];
// The server's default FILLFRAME_MAX_OUTPUT_PIXELS; larger canvases are scaled down to fit.
export const MAX_OUTPUT_PIXELS = 4 * 1024 * 1024;

const PATCH = 16;
const ZOOM = { "Zoom out 1.5x": 1.5, "Zoom out 2x": 2.0 };
const SIDE_GROWTH = 1.5;

// Python's round(): halves go to the even neighbour.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const round16 = (v) => Math.floor(v / PATCH + 0.5) * PATCH;
const ceil16 = (n) => Math.ceil(n / PATCH) * PATCH;

function canvasSide(target, imageSide, grow) {
  let side = Math.max(round16(target), ceil16(imageSide));
  if (grow && side <= imageSide) side += PATCH;
  return side;
}

function layout(width, height, preset, scale) {
  const iw = Math.max(1, roundHalfEven(width * scale));
  const ih = Math.max(1, roundHalfEven(height * scale));
  const plan = (w, h, x, y) => ({ width: w, height: h, x, y, imageWidth: iw, imageHeight: ih, scale });
  if (preset in ZOOM) {
    const f = ZOOM[preset];
    const cw = canvasSide(f * iw, iw, true);
    const ch = canvasSide(f * ih, ih, true);
    return plan(cw, ch, Math.floor((cw - iw) / 2), Math.floor((ch - ih) / 2));
  }
  if (preset === "Make square") {
    const side = ceil16(Math.max(iw, ih));
    return plan(side, side, Math.floor((side - iw) / 2), Math.floor((side - ih) / 2));
  }
  if (preset === "Left outpaint" || preset === "Right outpaint") {
    const cw = canvasSide(SIDE_GROWTH * iw, iw, true);
    const ch = ceil16(ih);
    return plan(cw, ch, preset === "Left outpaint" ? cw - iw : 0, Math.floor((ch - ih) / 2));
  }
  const cw = ceil16(iw);
  const ch = canvasSide(SIDE_GROWTH * ih, ih, true);
  return plan(cw, ch, Math.floor((cw - iw) / 2), preset === "Top outpaint" ? ch - ih : 0);
}

// Free expansion (fluxFillParams.expand): pixels per side, 0-2048 each.
export const SIDES = ["left", "top", "right", "bottom"];
export const MAX_EXPAND = 2048;

/** Where the image starts on an axis: the rounding's slack split in proportion to the strips. */
function offset(canvasSide, imageSide, before, after) {
  const room = canvasSide - imageSide;
  if (before + after <= 0) return Math.floor(room / 2);
  const slack = canvasSide - (imageSide + before + after);
  return Math.min(room, Math.max(0, roundHalfEven(before + (slack * before) / (before + after))));
}

function expandLayout(width, height, sides, scale) {
  const iw = Math.max(1, roundHalfEven(width * scale));
  const ih = Math.max(1, roundHalfEven(height * scale));
  const [left, right, top, bottom] = [sides.left, sides.right, sides.top, sides.bottom].map((v) => scale * (v || 0));
  const growX = (sides.left || 0) + (sides.right || 0) > 0;
  const growY = (sides.top || 0) + (sides.bottom || 0) > 0;
  const cw = growX ? canvasSide(iw + left + right, iw, true) : ceil16(iw);
  const ch = growY ? canvasSide(ih + top + bottom, ih, true) : ceil16(ih);
  return { width: cw, height: ch, x: offset(cw, iw, left, right), y: offset(ch, ih, top, bottom),
           imageWidth: iw, imageHeight: ih, scale };
}

function fit(maxPixels, layoutAt) {
  let scale = 1.0;
  for (;;) {
    const p = layoutAt(scale);
    const area = p.width * p.height;
    if (area <= maxPixels) return p;
    scale *= Math.min(0.98, Math.sqrt(maxPixels / area));
  }
}

/** The canvas for outpainting a width x height image: {width, height, x, y, imageWidth, imageHeight, scale}. */
export function planOutpaint(width, height, preset, maxPixels = MAX_OUTPUT_PIXELS) {
  if (!PRESETS.includes(preset)) throw new Error(`Unknown outpaint preset ${preset}`);
  return fit(maxPixels, (scale) => layout(width, height, preset, scale));
}

/** The canvas for growing a width x height image by `sides` ({left, right, top, bottom} pixels). */
export function planExpand(width, height, sides, maxPixels = MAX_OUTPUT_PIXELS) {
  return fit(maxPixels, (scale) => expandLayout(width, height, sides, scale));
}

/** `spec` is a preset name or an expand object, as the request's outpaint or expand. */
export function planFor(width, height, spec, maxPixels = MAX_OUTPUT_PIXELS) {
  return typeof spec === "string" ? planOutpaint(width, height, spec, maxPixels) : planExpand(width, height, spec, maxPixels);
}

/**
 * Draw the planned canvas into `canvas` (sized to the plan): the new area hatched, the image in
 * place. `source` is anything drawImage takes (ImageBitmap, HTMLImageElement).
 */
export function drawPlan(canvas, source, plan, { hatch = true } = {}) {
  canvas.width = plan.width;
  canvas.height = plan.height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#e9ecf2";
  ctx.fillRect(0, 0, plan.width, plan.height);
  if (hatch) {
    const step = Math.max(12, Math.round(Math.max(plan.width, plan.height) / 40));
    ctx.strokeStyle = "#c6ccd8";
    ctx.lineWidth = Math.max(1, step / 6);
    ctx.beginPath();
    for (let d = -plan.height; d < plan.width; d += step) {
      ctx.moveTo(d, plan.height);
      ctx.lineTo(d + plan.height, 0);
    }
    ctx.stroke();
  }
  ctx.drawImage(source, plan.x, plan.y, plan.imageWidth, plan.imageHeight);
}
