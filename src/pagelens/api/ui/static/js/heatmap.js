// Similarity heatmaps: the route's per-token maps (grid [h, w]) drawn on a canvas over the page.

/** A map (nested rows or a flat list) as a Float32Array of h*w values. */
function flat(map, cells) {
  const values = new Float32Array(cells);
  const source = Array.isArray(map[0]) ? map.flat() : map;
  for (let i = 0; i < cells && i < source.length; i++) values[i] = Number(source[i]) || 0;
  return values;
}

/** The maps of a heatmap answer as Float32Arrays: per token, and combined (the route's `combined`,
 *  the mean of the token maps; computed here when it is absent). */
export function mapsOf(answer) {
  const [rows, columns] = answer.grid;
  const cells = rows * columns;
  const maps = answer.maps.map((map) => flat(map, cells));
  let combined;
  if (answer.combined) {
    combined = flat(answer.combined, cells);
  } else {
    combined = new Float32Array(cells);
    for (const map of maps) for (let i = 0; i < cells; i++) combined[i] += map[i] / maps.length;
  }
  return { rows, columns, combined, maps };
}

// a perceptual ramp from dark blue through green and yellow to red, as [stop, r, g, b]
const RAMP = [
  [0, 48, 18, 59],
  [0.25, 40, 140, 240],
  [0.5, 60, 220, 120],
  [0.75, 250, 200, 40],
  [1, 200, 30, 20],
];

function colour(value) {
  for (let i = 1; i < RAMP.length; i++) {
    if (value <= RAMP[i][0]) {
      const [s0, r0, g0, b0] = RAMP[i - 1];
      const [s1, r1, g1, b1] = RAMP[i];
      const t = (value - s0) / (s1 - s0);
      return [r0 + t * (r1 - r0), g0 + t * (g1 - g0), b0 + t * (b1 - b0)];
    }
  }
  return RAMP[RAMP.length - 1].slice(1);
}

/** Draw `values` (rows x columns) on `canvas`, scaled to 0..1; the canvas is stretched over the page by CSS. */
export function draw(canvas, values, rows, columns) {
  canvas.width = columns;
  canvas.height = rows;
  let low = Infinity;
  let high = -Infinity;
  for (const value of values) {
    low = Math.min(low, value);
    high = Math.max(high, value);
  }
  const span = high > low ? high - low : 1;
  const image = new ImageData(columns, rows);
  for (let i = 0; i < values.length; i++) {
    const scaled = (values[i] - low) / span;
    const [r, g, b] = colour(scaled);
    image.data.set([r, g, b, Math.round(60 + 195 * scaled)], i * 4);
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
}
