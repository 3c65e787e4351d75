// A Loupe crop as the URL parameters of the image services hosts already use, so the crop is made
// by their CDN from the original (Loupe only chooses it). Each takes a crop in source pixels —
// `{x, y, width, height}` as loupeCrop(), `loupe crop --json` and `loupe batch` rows give it — and
// returns the text to put in that service's URL.

function pixels(crop) {
  const { x, y, width, height } = crop ?? {};
  for (const [name, value] of Object.entries({ x, y, width, height })) {
    if (!Number.isInteger(value) || value < 0) throw new TypeError(`crop.${name} must be a whole number of pixels ≥ 0, got ${value}`);
  }
  if (width === 0 || height === 0) throw new TypeError("the crop is empty");
  return { x, y, width, height };
}

// A share of the photo's size in 0..1, with few digits: enough for a pixel on a 100-megapixel photo.
function share(value, size, name) {
  if (!(Number.isFinite(value) && Number.isFinite(size) && size > 0)) throw new TypeError(`${name}: need a finite point and the photo's size`);
  return String(Number(Math.min(1, Math.max(0, value / size)).toFixed(5)));
}

/**
 * Cloudinary's crop transformation: `c_crop,x_355,y_410,w_300,h_200` (x, y: the top-left corner when
 * no gravity is given). Put it in the URL's transformation part: `.../image/upload/<this>/photo.jpg`.
 */
export function cloudinaryCrop(crop) {
  const { x, y, width, height } = pixels(crop);
  return `c_crop,x_${x},y_${y},w_${width},h_${height}`;
}

/** imgix's source rectangle: `rect=x,y,w,h` (query parameter). */
export function imgixRect(crop) {
  const { x, y, width, height } = pixels(crop);
  return `rect=${x},${y},${width},${height}`;
}

/**
 * imgix's focal-point crop: `fit=crop&crop=focalpoint&fp-x=0.5&fp-y=0.4`, where fp-x/fp-y are shares
 * of the photo's width and height; for when imgix resizes to another frame (add your `w`/`h`).
 * @param {{x:number, y:number}} focal in source pixels (loupeCrop()'s `focal`)
 * @param {{width:number, height:number}} photo the source photo's size
 */
export function imgixFocalPoint(focal, photo) {
  const fx = share(focal?.x, photo?.width, "fp-x");
  const fy = share(focal?.y, photo?.height, "fp-y");
  return `fit=crop&crop=focalpoint&fp-x=${fx}&fp-y=${fy}`;
}

/**
 * Thumbor's manual crop: `AxB:CxD`, the top-left and the bottom-right corners, as the path segment
 * after the signature: `/unsafe/<this>/300x200/photo.jpg`.
 */
export function thumborCrop(crop) {
  const { x, y, width, height } = pixels(crop);
  return `${x}x${y}:${x + width}x${y + height}`;
}

/**
 * Thumbor's focal-point filter, `filters:focal(AxB:CxD)` (the top crop as the region to keep), for
 * when Thumbor resizes to another frame with smart cropping: `/unsafe/400x100/filters:focal(...)/photo.jpg`.
 */
export function thumborFocal(crop) {
  return `filters:focal(${thumborCrop(crop)})`;
}
