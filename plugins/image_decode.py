"""Fix: LLaMA-Factory 0.9.5 trains on white squares for 16-bit images, sideways photos, and bare Pillow errors.

Upstream, `mm_plugin.MMPluginMixin._regularize_images` opens every image with `Image.open` and hands it to
`_preprocess_image` (overridden by `Qwen2VLPlugin` for its minimum size and aspect ratio), which resizes it
to `image_max_pixels` / `image_min_pixels` and calls `convert("RGB")`; transformers' image processor then
rescales and normalises those 8-bit RGB pixels. Three things go wrong before the processor:

- Pillow's `convert("RGB")` clips the samples of 16-bit and 32-bit images to 0..255. A 16-bit greyscale PNG
  (how CT and X-ray slices are commonly exported; here a 0..60000 ramp) reaches the model 99.5% pure white
  (`I;16`, `I;16B`, `I;16L`), a float image (`F`, values 0..1) 99.9% pure black, a 32-bit integer one (`I`)
  as pure black and white; training exits 0.
- EXIF orientation is ignored: a phone photo taken upright (orientation 6) reaches the model on its side.
- Transparency is dropped: transparent pixels show whatever colour they store (often black), while
  qwen-vl-utils (Qwen's own inference preprocessing) composites them on white.

The patch runs our one rule (`data_converters.images.model_image`, shared with the converters) on each image
before LLaMA-Factory's own `_preprocess_image`, whose resize and conversion stay untouched: first frame,
EXIF applied, high-bit-depth greys rescaled to 8 bits by the image's own range, transparency on white. The
16-bit PNG above then reaches the model as its ramp (0.2% white; `tests/test_image_modes.py` checks every
Pillow mode).

It also decodes each image inside the loader and turns any failure to open or decode it into an `ImageError`
naming the file, what is wrong and the fix. Upstream, Pillow decodes lazily: a truncated RGB PNG or JPEG that
needs no resize is first decoded inside transformers' image processor (torchvision's `pil_to_tensor`), and
fails there as `OSError: image file is truncated`, naming no file; `plugins/dataset_errors.py` adds the record.
"""

from __future__ import annotations

import functools

from vlmrecipes.data_converters.images import ImageError, classify, model_image, source_name


def patch_image_loading(mm_plugin) -> None:
    """`MMPluginMixin._preprocess_image` sees `model_image(image)`; `_regularize_images` names failing files.

    Both are methods of the base class every plugin inherits from; `Qwen2VLPlugin._preprocess_image` calls the
    base first (`super()`), so its resizing sees the corrected image too.
    """
    mixin = mm_plugin.MMPluginMixin
    original_preprocess, original_regularize = mixin._preprocess_image, mixin._regularize_images

    @functools.wraps(original_preprocess)
    def _preprocess_image(self, image, **kwargs):
        return original_preprocess(self, model_image(image), **kwargs)

    @functools.wraps(original_regularize)
    def _regularize_images(self, images, **kwargs):
        results = []
        for image in images:  # one at a time, so that an error names its own file
            try:
                results += original_regularize(self, [image], **kwargs)["images"]
            except ImageError:
                raise
            except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, EOFError, bomb errors
                source = image.get("path") if isinstance(image, dict) and image.get("bytes") is None else image
                raise classify(exc, source_name(image), source) from exc
        return {"images": results}

    mixin._preprocess_image = _preprocess_image
    mixin._regularize_images = _regularize_images
