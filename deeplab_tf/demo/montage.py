"""The demo's picture: a few val scenes in rows of image | ground truth | prediction, with a colour key."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeplab_tf import visualization

COLUMNS = ("image", "ground truth", "prediction")
GAP = 4  # pixels between tiles and around the picture
HEADER = 18  # height of the column titles' strip
KEY = 20  # height of the colour key's strip
_INK, _PAPER = (0, 0, 0), (255, 255, 255)


def layout(image_size, num_rows):
    """(width, height) of a montage of `num_rows` scenes of `image_size` (height, width), and each tile's
    top-left corner [(x, y) per column] per row: how `write_montage` places the tiles."""
    height, width = image_size
    corners = [[(GAP + column * (width + GAP), HEADER + row * (height + GAP)) for column in range(len(COLUMNS))]
               for row in range(num_rows)]
    return (GAP + len(COLUMNS) * (width + GAP), HEADER + num_rows * (height + GAP) + KEY), corners


def write_montage(path, scenes, *, colormap, class_names, ignore_label=255, prediction_title="prediction"):
    """Writes `scenes` [(uint8 RGB image [H, W, 3], ground truth [H, W], prediction [H, W]), ...] as one PNG.

    Labels are drawn in `colormap`'s colours (the ignore label in its own); a key under the rows names the
    colour of each of `class_names` and of the ignore label.
    """
    size, corners = layout(scenes[0][0].shape[:2], len(scenes))
    picture = Image.new("RGB", size, _PAPER)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    tile_width = scenes[0][0].shape[1]
    for (x, _), title in zip(corners[0], (*COLUMNS[:-1], prediction_title)):
        draw.text((x + tile_width // 2, HEADER // 2), title, fill=_INK, font=font, anchor="mm")
    for row, (image, truth, prediction) in zip(corners, scenes):
        tiles = (image, visualization.label_to_color_image(truth, colormap),
                 visualization.label_to_color_image(prediction, colormap))
        for corner, tile in zip(row, tiles):
            picture.paste(Image.fromarray(np.asarray(tile, np.uint8)), corner)
    colours = visualization.get_colormap(colormap)
    x, y = GAP, size[1] - KEY + 4
    for index, name in [*enumerate(class_names), (ignore_label, "ignored")]:
        draw.rectangle([x, y, x + 11, y + 11], fill=tuple(int(c) for c in colours[index]), outline=_INK)
        draw.text((x + 15, y + 6), name, fill=_INK, font=font, anchor="lm")
        x += 15 + int(draw.textlength(name, font=font)) + 10
    picture.save(path, optimize=True)
    return path
