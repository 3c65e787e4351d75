/** A crop in source pixels, as loupeCrop(), `loupe crop --json` and `loupe batch` rows give it. */
export interface PixelRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Cloudinary's crop transformation, e.g. `c_crop,x_355,y_410,w_300,h_200`. */
export function cloudinaryCrop(crop: PixelRect): string;
/** imgix's source rectangle, e.g. `rect=355,410,300,200`. */
export function imgixRect(crop: PixelRect): string;
/** imgix's focal-point crop, e.g. `fit=crop&crop=focalpoint&fp-x=0.5&fp-y=0.4` (shares of the photo's size). */
export function imgixFocalPoint(focal: { x: number; y: number }, photo: { width: number; height: number }): string;
/** Thumbor's manual crop, e.g. `355x410:655x610` (top-left and bottom-right corners). */
export function thumborCrop(crop: PixelRect): string;
/** Thumbor's focal filter, e.g. `filters:focal(355x410:655x610)`. */
export function thumborFocal(crop: PixelRect): string;
