// The crop URL helpers (www/widget/crop-urls.js) against the formats the services document. Plain
// node, no browser: run by scripts/test-browser.sh beside the browser tests.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cloudinaryCrop, imgixFocalPoint, imgixRect, thumborCrop, thumborFocal } from "../../www/widget/crop-urls.js";

// A crop as loupeCrop(), `loupe crop --json` and `loupe batch` give it.
const crop = { x: 355, y: 410, width: 300, height: 200, score: 5.1, percentile: 62 };

test("Cloudinary: the c_crop transformation of its documentation, with the same x, y, w, h", () => {
  // https://cloudinary.com/documentation/image_crop_modes: c_crop,h_200,w_300,x_355,y_410 (any order).
  const documented = "c_crop,h_200,w_300,x_355,y_410";
  const asMap = (t) => new Map(t.split(",").map((p) => [p.slice(0, p.indexOf("_")), p.slice(p.indexOf("_") + 1)]));
  const ours = cloudinaryCrop(crop);
  assert.equal(ours, "c_crop,x_355,y_410,w_300,h_200");
  assert.deepEqual(asMap(ours), asMap(documented));
});

test("imgix: rect=x,y,w,h in pixels, and a focal point as shares of the photo", () => {
  // https://docs.imgix.com/apis/rendering/size/source-rectangle-region: rect=x,y,w,h; integers are pixels.
  const rect = new URLSearchParams(imgixRect(crop)).get("rect").split(",");
  assert.deepEqual(rect, ["355", "410", "300", "200"]);
  assert.ok(rect.every((v) => /^\d+$/.test(v)), "integers (a float would be a share of the photo)");
  // https://docs.imgix.com/apis/rendering/focal-point-crop: fit=crop&crop=focalpoint&fp-x=&fp-y=, 0.0..1.0.
  const focal = { x: crop.x + crop.width / 2, y: crop.y + crop.height / 2 };
  const params = new URLSearchParams(imgixFocalPoint(focal, { width: 1010, height: 1020 }));
  assert.equal(params.get("fit"), "crop");
  assert.equal(params.get("crop"), "focalpoint");
  assert.equal(Number(params.get("fp-x")), 0.5);
  assert.equal(Number(params.get("fp-y")), 0.5);
  const corner = new URLSearchParams(imgixFocalPoint({ x: 1010, y: 0 }, { width: 1010, height: 1020 }));
  assert.deepEqual([corner.get("fp-x"), corner.get("fp-y")], ["1", "0"]);
  assert.equal(new URLSearchParams(imgixFocalPoint({ x: 1, y: 2 }, { width: 3, height: 7 })).get("fp-x"), "0.33333");
});

test("Thumbor: the manual crop AxB:CxD (top-left and bottom-right corners) its URL parser reads", () => {
  // thumbor/url.py: (?P<crop_left>\d+)x(?P<crop_top>\d+):(?P<crop_right>\d+)x(?P<crop_bottom>\d+)
  const grammar = /^(?<left>\d+)x(?<top>\d+):(?<right>\d+)x(?<bottom>\d+)$/;
  const { left, top, right, bottom } = grammar.exec(thumborCrop(crop)).groups;
  assert.deepEqual([left, top, right, bottom].map(Number), [355, 410, 655, 610]);
  // https://thumbor.readthedocs.io/en/latest/focal.html: filters:focal(146x206:279x360)
  assert.equal(thumborFocal({ x: 146, y: 206, width: 133, height: 154 }), "filters:focal(146x206:279x360)");
});

test("a crop that is not whole non-negative pixels is refused", () => {
  for (const bad of [null, {}, { ...crop, x: -1 }, { ...crop, width: 10.5 }, { ...crop, height: 0 }, { ...crop, y: "4" }]) {
    for (const helper of [cloudinaryCrop, imgixRect, thumborCrop]) assert.throws(() => helper(bad), TypeError, JSON.stringify(bad));
  }
  assert.throws(() => imgixFocalPoint({ x: 1, y: 1 }, { width: 0, height: 5 }), TypeError);
  assert.throws(() => imgixFocalPoint({ x: NaN, y: 1 }, { width: 5, height: 5 }), TypeError);
});
