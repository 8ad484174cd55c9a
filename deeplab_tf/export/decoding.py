"""Image bytes -> the pixels deeplab-vis and the records hold, in the serving graph.

Every check raises InvalidArgument naming the image's place in the batch; JPEG and PNG sizes are read
from their headers so an oversized request is refused before it is decoded; an EXIF orientation (a
JPEG's APP1 block, a PNG's eXIf chunk, a WebP's EXIF chunk) is read from the bytes, as TensorFlow's
decoders ignore it.
"""

import tensorflow as tf

from deeplab_tf.data import image_io
from deeplab_tf.data.tfrecord import decode_image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FORMATS = "JPEG, PNG, GIF, BMP or WebP"  # What tf.io.decode_image reads.


def _refuse_unless(condition, message, index=None):
    """InvalidArgument with `message` unless `condition`; with an `index`, the message names that
    element of the batch ("image <index> of the batch: ..."), built in the graph."""
    if index is None:
        return tf.debugging.Assert(condition, [message])
    return tf.debugging.Assert(condition, [tf.strings.join([tf.strings.format("image {} of the batch: ", index),
                                                            message])])


def check_pixels(height, width, max_pixels, index=None):
    """InvalidArgument unless height * width <= max_pixels (int64: PNG headers allow 2^31 per side)."""
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    too_large = (f"too large: more than max_image_pixels={max_pixels} pixels (set at export); downscale it "
                 f"before sending.")
    return _refuse_unless(pixels <= max_pixels, too_large if index is not None else "Image " + too_large, index)


def _or_fallback(fn, value, fallback):
    """fn(value), or `fallback` when fn raises: a one-element tf.data pipeline drops the failed element,
    so a corrupt image can be reported with its batch index instead of the decoder's bare error."""
    return (tf.data.Dataset.from_tensors(value).map(fn).ignore_errors()
            .concatenate(tf.data.Dataset.from_tensors(fallback)).take(1).get_single_element())


def _starts_with(image_bytes, prefix, position=0):
    """Whether `prefix` is at byte `position` (a shorter string is padded with zero bytes, after cutting)."""
    end = position + len(prefix)
    head = tf.strings.join([tf.strings.substr(image_bytes, 0, end), b"\0" * end])
    return tf.equal(tf.strings.substr(head, position, len(prefix)), prefix)


def _is_png(image_bytes):
    return _starts_with(image_bytes, _PNG_SIGNATURE)


def _is_webp(image_bytes):
    return tf.logical_and(_starts_with(image_bytes, b"RIFF"), _starts_with(image_bytes, b"WEBP", 8))


def _is_image_format(image_bytes):
    """Whether the bytes start with the signature of a format `tf.io.decode_image` reads."""
    return tf.reduce_any(tf.stack([tf.io.is_jpeg(image_bytes), _is_png(image_bytes),
                                   _starts_with(image_bytes, b"GIF8"), _starts_with(image_bytes, b"BM"),
                                   _is_webp(image_bytes)]))


def _has_jpeg_scan(image_bytes):
    """Whether the bytes hold a start-of-scan marker (FF DA), which ends a JPEG's header."""
    data = tf.io.decode_raw(image_bytes, tf.uint8)
    return tf.reduce_any(tf.logical_and(tf.equal(data[:-1], 0xFF), tf.equal(data[1:], 0xDA)))


def _jpeg_shape(image_bytes):
    """[height, width, components] from a JPEG's header; zeros for other formats and unreadable headers.
    Only JPEGs whose header is whole reach libjpeg: it writes "Not a JPEG file" for other images, and
    "Improper call to JPEG library" for a file cut short before its first scan, straight to the server's
    stderr, once per call."""
    return tf.cond(tf.logical_and(tf.io.is_jpeg(image_bytes), _has_jpeg_scan(image_bytes)),
                   lambda: _or_fallback(tf.image.extract_jpeg_shape, image_bytes, tf.zeros([3], tf.int32)),
                   lambda: tf.zeros([3], tf.int32))


def _header_size(image_bytes, jpeg_shape):
    """(height, width) from a PNG header or a JPEG's `_jpeg_shape`, without decoding; (0, 0) for other
    formats and for headers that cannot be read (decoding then fails and says so)."""
    def png_size():
        # IHDR: big-endian width and height at bytes 16..23.
        return _unsigned(image_bytes, 20, 4), _unsigned(image_bytes, 16, 4)

    return tf.case([(_is_png(image_bytes), png_size),
                    (tf.io.is_jpeg(image_bytes), lambda: (tf.cast(jpeg_shape[0], tf.int64),
                                                          tf.cast(jpeg_shape[1], tf.int64)))],
                   default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))


def _unsigned(image_bytes, offsets, length, little_endian=False):
    """The `length`-byte unsigned integers (int64) at byte `offsets` (a scalar or a vector) of a string; bytes
    past its end count as 0."""
    offsets = tf.clip_by_value(tf.cast(offsets, tf.int64), 0, tf.cast(tf.strings.length(image_bytes), tf.int64))
    pieces = tf.strings.substr(image_bytes, offsets, tf.fill(tf.shape(offsets), tf.cast(length, tf.int64)))
    # Padded after cutting: an image's bytes are not copied whole.
    raw = tf.io.decode_raw(tf.strings.substr(tf.strings.join([pieces, b"\0" * length]), 0, length), tf.uint8)
    shifts = 8 * tf.range(length, dtype=tf.int64)
    shifts = tf.where(little_endian, shifts, shifts[::-1])  # `little_endian` may be a tensor (an EXIF block's order)
    return tf.reduce_sum(tf.bitwise.left_shift(tf.cast(raw, tf.int64), shifts), axis=-1)


# Where a JPEG's EXIF block is looked for: it follows the start marker (and a JFIF header, if any), and an
# APP1 segment holds at most 64 KiB. Up to this many entries of its first directory are read.
_EXIF_SEARCH_BYTES = 65536
_EXIF_MAX_ENTRIES = 64
_EXIF_ORIENTATION = 0x0112


def _jpeg_exif_offset(image_bytes):
    """Where the TIFF header of a JPEG's EXIF block (APP1, "Exif" and two zero bytes) starts; -1 if none."""
    size = _EXIF_SEARCH_BYTES
    data = tf.io.decode_raw(tf.strings.join([tf.strings.substr(image_bytes, 0, size), b"\0" * size]), tf.uint8)
    data = data[:size]
    # The APP1 marker, 2 bytes of length, then "Exif\0\0" and the TIFF header.
    pattern = {0: 0xFF, 1: 0xE1, **{4 + i: byte for i, byte in enumerate(b"Exif\0\0")}}
    last = size - 10
    found = tf.reduce_all(tf.stack([tf.equal(data[k:last + k], byte) for k, byte in pattern.items()]), axis=0)
    return tf.where(tf.reduce_any(found), tf.argmax(tf.cast(found, tf.int32), output_type=tf.int64) + 10,
                    tf.constant(-1, tf.int64))


def _chunk_data_offset(image_bytes, chunk_type, *, png):
    """Where the data of the first `chunk_type` chunk of a PNG (`png`) or WebP (RIFF) file starts; -1 if none.

    PNG chunks are [length, big-endian][type][data][CRC]; RIFF chunks [type][length, little-endian][data],
    padded to an even length. Every chunk is walked (Pillow also reads an eXIf chunk after the pixels).
    """
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)

    def next_chunk(offset, found):
        type_at, length_at = (offset + 4, offset) if png else (offset, offset + 4)
        length = _unsigned(image_bytes, length_at, 4, little_endian=not png)
        is_type = tf.equal(tf.strings.substr(image_bytes, tf.minimum(type_at, size), 4), chunk_type)
        following = offset + 8 + length + (4 if png else length % 2)
        return following, tf.where(is_type, offset + 8, found)

    start = tf.constant(len(_PNG_SIGNATURE) if png else 12, tf.int64)  # RIFF: "RIFF", length, "WEBP"
    _, found = tf.while_loop(lambda offset, found: tf.logical_and(found < 0, offset + 8 <= size), next_chunk,
                             (start, tf.constant(-1, tf.int64)))
    return found


def _exif_orientation(image_bytes):
    """The EXIF orientation tag (1-8) of a JPEG, PNG or WebP: 1 (upright) when it is absent or unreadable.

    Phones store the sensor's pixels and this tag; viewers, PIL's `ImageOps.exif_transpose` (the converters,
    deeplab-vis, `segment`) and OpenCV's decoder turn the picture upright, TensorFlow's decoders do not.
    """
    tiff = tf.case([(tf.io.is_jpeg(image_bytes), lambda: _jpeg_exif_offset(image_bytes)),
                    (_is_png(image_bytes), lambda: _chunk_data_offset(image_bytes, b"eXIf", png=True)),
                    (_is_webp(image_bytes), lambda: _chunk_data_offset(image_bytes, b"EXIF", png=False))],
                   default=lambda: tf.constant(-1, tf.int64))
    cut_short = tiff > tf.cast(tf.strings.length(image_bytes), tf.int64)  # the block's name at the file's very end
    tiff = tf.where(cut_short, tf.constant(-1, tf.int64), tiff)
    # Some PNG and WebP writers keep JPEG's "Exif\0\0" before the TIFF header; Pillow reads either.
    prefixed = tf.equal(tf.strings.substr(image_bytes, tf.maximum(tiff, 0), 6), b"Exif\0\0")
    tiff = tf.where(tf.logical_and(tiff >= 0, prefixed), tiff + 6, tiff)
    block = tf.strings.substr(image_bytes, tf.maximum(tiff, 0), _EXIF_SEARCH_BYTES)
    big_endian, little_endian = (_starts_with(block, order) for order in (b"MM", b"II"))

    def unsigned(offset, length):
        return _unsigned(block, offset, length, little_endian=little_endian)

    directory = unsigned(4, 4)
    # Each 12-byte entry: tag, type, count, value; a SHORT value fills the value field's first two bytes.
    entries = directory + 2 + 12 * tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64)
    is_orientation = tf.logical_and(tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64) < unsigned(directory, 2),
                                    tf.equal(unsigned(entries, 2), _EXIF_ORIENTATION))
    orientation = unsigned(entries[tf.argmax(tf.cast(is_orientation, tf.int32))] + 8, 2)
    readable = tf.reduce_all(tf.stack([tiff >= 0, tf.logical_or(big_endian, little_endian),
                                       tf.reduce_any(is_orientation), orientation >= 1, orientation <= 8]))
    return tf.where(readable, tf.cast(orientation, tf.int32), 1)


def _upright(image, orientation):
    """`image` turned as its EXIF `orientation` says a viewer shows it (as `ImageOps.exif_transpose`)."""
    def transpose():
        return tf.transpose(image, [1, 0, 2])

    return tf.switch_case(orientation - 1, [
        lambda: image,
        lambda: tf.reverse(image, [1]),                      # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),                   # 3: turned 180 degrees
        lambda: tf.reverse(image, [0]),                      # 4: mirrored top-bottom
        transpose,                                           # 5: mirrored along the main diagonal
        lambda: tf.reverse(transpose(), [1]),                # 6: stored turned 90 degrees left
        lambda: tf.reverse(transpose(), [0, 1]),             # 7: mirrored along the other diagonal
        lambda: tf.reverse(transpose(), [0]),                # 8: stored turned 90 degrees right
    ])


def _grey16_png(data):
    """A 16-bit greyscale PNG scaled to 8 bits as the converters scale it (TensorFlow's 8-bit decode keeps
    the high byte, one grey level off for some values)."""
    grey = image_io.scale_16_to_8_bits(tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.int32))
    return tf.tile(tf.cast(grey, tf.uint8), [1, 1, 3])


def decode_image_bytes(image_bytes, max_image_pixels, index):
    """Encoded image -> float32 [H, W, 3] RGB in 0..255, upright by its EXIF orientation.

    Raises InvalidArgument naming element `index` of the batch when the bytes are empty, not an image,
    corrupt or too large. JPEG and PNG sizes are checked from their headers, so a small file that would
    decode to gigabytes is refused without allocating them; other formats are checked after decoding.
    """
    # Each check runs after the one before, so that the message says the first thing wrong.
    with tf.control_dependencies([_refuse_unless(tf.strings.length(image_bytes) > 0, "empty (0 bytes).", index)]):
        check = _refuse_unless(_is_image_format(image_bytes), f"not a {_FORMATS} file.", index)
    with tf.control_dependencies([check]):
        jpeg_shape = _jpeg_shape(image_bytes)
        check = check_pixels(*_header_size(image_bytes, jpeg_shape), max_image_pixels, index)
    orientation = _exif_orientation(image_bytes)
    # The pixels deeplab-vis and the records hold. The converters decode with Pillow and store re-encoded as
    # PNG: JPEGs to be turned upright and CMYK JPEGs (Pillow decodes JPEGs with libjpeg's accurate IDCT),
    # 16-bit greyscale PNGs (scaled, not cut to their high byte) and WebP. Other files keep their bytes,
    # which the records decode with TensorFlow's default (faster) IDCT.
    jpeg_as_pillow = tf.logical_and(tf.io.is_jpeg(image_bytes), tf.logical_or(orientation > 1, jpeg_shape[2] == 4))
    # IHDR's bit depth and colour type (0: greyscale).
    grey16 = tf.logical_and(_is_png(image_bytes), _starts_with(image_bytes, b"\x10\x00", 24))

    # A JPEG whose header cannot be read is not decoded either: it cannot succeed, and libjpeg would log again.
    unreadable_jpeg = tf.logical_and(tf.io.is_jpeg(image_bytes), jpeg_shape[0] == 0)

    def decode(data):
        return tf.case([(unreadable_jpeg, lambda: tf.zeros([0, 0, 3], tf.uint8)),
                        (jpeg_as_pillow, lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")),
                        (grey16, lambda: _grey16_png(data)),
                        # WebP decodes only to its own channels (RGB or RGBA).
                        (_is_webp(data), lambda: tf.ensure_shape(
                            tf.io.decode_image(data, expand_animations=False)[..., :3], [None, None, 3]))],
                       default=lambda: decode_image(data))

    with tf.control_dependencies([check]):
        image = _or_fallback(decode, image_bytes, tf.zeros([0, 0, 3], tf.uint8))
    # Turned as float32: oneDNN's uint8 transpose exists only on some CPUs, and TensorFlow logs an error
    # ("oneDNN supports DT_UINT8 only on platforms with AVX-512") each time it plans the graph elsewhere.
    image = _upright(tf.cast(image, tf.float32), orientation)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    checks = [_refuse_unless(height * width > 0, "corrupt or truncated: it cannot be decoded.", index),
              check_pixels(height, width, max_image_pixels, index)]
    with tf.control_dependencies(checks):
        return tf.identity(image)
