import type { PixelRect } from "./crop-urls.js";

export * from "./crop-urls.js";

/** One crop: smartcrop.js's fields in source pixels (upright), with Loupe's score and its AVA percentile. */
export interface LoupeCropRect extends PixelRect {
  /** The crop's predicted mean rating of DPChallenge voters, 1..10. */
  score: number;
  /** Share of AVA's 255,502 rated photos scored lower, in percent. */
  percentile: number;
}

/** What loupeCrop() resolves to: smartcrop.js's `topCrop`, every crop best first, and the focal point. */
export interface LoupeCropResult {
  topCrop: LoupeCropRect;
  crops: LoupeCropRect[];
  /** The top crop's centre, in source pixels. */
  focal: { x: number; y: number };
  /** How hard the top crop is to judge (the histogram model's std of the predicted ratings, and in words); absent without that model. */
  difficulty?: { std: number; label: string };
}

export interface LoupeCropOptions {
  /** The frame's proportions, as in smartcrop.js (not a size in pixels). */
  width?: number;
  height?: number;
  /** A ratio (1.5), "W:H" ("16:9"), or "WxH" ("640x480": exactly that many source pixels). Default "1:1". */
  aspect?: number | string;
  /** The smallest crop as a share of the largest that fits, in (0, 1]. Default 0.5 (smartcrop.js: 1). */
  minScale?: number;
  /** Candidate crops to score (at most 100,000). Default 64; the paper: 1000. */
  candidates?: number;
  /** Seed of the random candidates: the same seed crops the same way. Default 1. */
  seed?: number;
  /** How many crops to return. Default 5. */
  topK?: number;
  /** The folder holding manifest.json and the weight files (default: `configure()`'s, else ../weights/ beside the widget). */
  weightsUrl?: string;
  onProgress?: (done: number, total: number) => void;
}

export type LoupeImage = string | HTMLImageElement | Blob | ArrayBuffer;

/** The best crops of an image, scored by Loupe's VGG16 in the visitor's browser. */
export function loupeCrop(image: LoupeImage, options?: LoupeCropOptions): Promise<LoupeCropResult>;

/**
 * Where the weights live, for every later call and element that does not say; and how long (ms)
 * the worker may stay silent with work before a crop fails and the worker is replaced (default 300000).
 */
export function configure(options: { weightsUrl?: string; timeoutMs?: number }): void;

/** smartcrop.js's entry point: `import smartcrop from "loupe-crop"`. */
declare const smartcrop: {
  crop(image: LoupeImage, options?: LoupeCropOptions, callback?: (result: LoupeCropResult) => void): Promise<LoupeCropResult>;
};
export default smartcrop;

/** `<loupe-crop src aspect candidates weights>`: fires `loupe-crop` with a LoupeCropResult. */
export interface LoupeCropElement extends HTMLElement {}

declare global {
  interface HTMLElementTagNameMap {
    "loupe-crop": LoupeCropElement;
  }
  interface HTMLElementEventMap {
    "loupe-crop": CustomEvent<LoupeCropResult>;
  }
}
