"""The engine's image inputs: checked from their header when submitted, decoded when preprocessed.

An input is a PIL image (already decoded by the caller) or encoded bytes. `pixels_of` runs on
the submitting thread and decodes nothing; `decoded` runs on the preprocessing thread and yields
the RGB image the processor gets, at most `max_decoded_pixels` (larger ones are reduced, aspect
kept). Both raise InvalidInput without an index; the engine adds the item's.
"""

from __future__ import annotations

from PIL import Image

from pagelens.codecs.images import check_image, decode_image, probe_image, reduce_image

ImageInput = Image.Image | bytes | bytearray | memoryview


def pixels_of(image: ImageInput, *, max_pixels: int) -> int:
    """width x height of `image`, from its header for bytes; InvalidInput if it is no usable image."""
    if isinstance(image, Image.Image):
        check_image(image, max_pixels=max_pixels)
        return image.width * image.height
    return probe_image(image, max_pixels=max_pixels).pixels


def decoded(image: ImageInput, *, max_pixels: int, max_decoded_pixels: int) -> Image.Image:
    """An RGB image of at most `max_decoded_pixels` (a PIL input in another mode is converted by
    the processor, as before); bytes are fully decoded here, so corrupt pixel data fails here."""
    if isinstance(image, Image.Image):
        return reduce_image(image, max_decoded_pixels)
    return decode_image(image, max_pixels=max_pixels, max_decoded_pixels=max_decoded_pixels)
